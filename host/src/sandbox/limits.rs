//! What one tenant's sandbox may use, and the limiter that enforces it.
//!
//! Memory and table growth go through [`TenantLimiter`], which refuses a grow past
//! the cap with an error (so the guest traps at once rather than limping on) and
//! remembers which limit was hit. CPU is bounded by epoch interruption: the engine's
//! epoch advances every [`EPOCH_TICK`] while one of its guests computes (see
//! [`crate::sandbox::epoch`]), and each tick a call spends computing is charged to it
//! ([`TenantLimiter::cpu_tick`]); past [`Limits::cpu_per_call`] it traps. A tick is
//! charged only when the guest reaches an epoch check after the tick, so time spent
//! waiting in host imports or descheduled counts at most one tick per wait (none
//! when no other guest computed meanwhile).

use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;

use crate::surfaces::http::request_limits::RequestLimits;

/// How often the engine's epoch advances while a guest computes: the grain of CPU
/// accounting, and how long a guest computes before it yields the thread to other
/// tenants.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// The per-tenant caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// CPU time one call into the guest may spend computing, in [`EPOCH_TICK`]s.
    pub cpu_per_call: Duration,
    /// Largest table, in elements.
    pub table_elements: usize,
    /// Guest log lines let through per second; the rest are counted and dropped.
    pub log_lines_per_sec: u32,
    /// What one HTTP request to the tenant may carry.
    pub requests: RequestLimits,
    /// How long a tenant stopped by a limit waits before it starts again (doubling
    /// with each stop that follows soon after, up to [`MAX_RESTART_PAUSE`]); `None`: it
    /// stays stopped until the operator acts.
    pub restart_after: Option<Duration>,
}

/// The longest wait before a tenant stopped by its limits starts again.
pub const MAX_RESTART_PAUSE: Duration = Duration::from_secs(300);

/// A run this long without a limit hit sets the restart pause back to its first value.
pub const RESTART_COUNT_RESET: Duration = Duration::from_secs(60);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A batch of 1,000 operations needs a few MiB; 64 leaves room for bigger batches.
            memory_bytes: 64 << 20,
            // A 1,000-row tick computes for a few milliseconds; a guest that loops is
            // stopped within a second.
            cpu_per_call: Duration::from_secs(1),
            table_elements: 10_000,
            log_lines_per_sec: 100,
            requests: RequestLimits::default(),
            // A limit hit by one odd batch should not need the operator; a guest that
            // hits one at once every time backs off to MAX_RESTART_PAUSE.
            restart_after: Some(Duration::from_secs(1)),
        }
    }
}

/// Which limit a guest ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Linear memory would grow past [`Limits::memory_bytes`].
    Memory,
    /// A table would grow past [`Limits::table_elements`].
    Table,
    /// A call computed past [`Limits::cpu_per_call`].
    Cpu,
}

impl LimitKind {
    /// The name used in metrics labels and status reports.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::Table => "table",
            LimitKind::Cpu => "cpu",
        }
    }
}

/// A grow the limiter refused; the guest traps with it.
#[derive(Debug, thiserror::Error)]
#[error("{kind} limit of {limit} exceeded: the guest asked for {desired}", kind = .kind.name())]
pub struct LimitExceeded {
    /// Whether memory or a table was to grow.
    pub kind: LimitKind,
    /// The cap: bytes of memory or elements of a table.
    pub limit: usize,
    /// The size the guest asked to grow to, in the same unit.
    pub desired: usize,
}

/// A call that computed past its CPU budget; the guest traps with it.
#[derive(Debug, thiserror::Error)]
#[error("cpu limit of {limit:?} per call exceeded")]
pub struct CpuExceeded {
    /// The CPU time one call may spend computing ([`Limits::cpu_per_call`]).
    pub limit: Duration,
}

/// Enforces [`Limits`] on one store and remembers the first limit hit.
#[derive(Debug)]
pub struct TenantLimiter {
    limits: Limits,
    hit: Option<LimitKind>,
    /// Epoch ticks the current call may still be charged.
    ticks_left: u64,
    /// When the guest last gave up its thread: the call's start or its last yield.
    rested_at: Instant,
}

impl TenantLimiter {
    /// A limiter for `limits`.
    pub fn new(limits: Limits) -> TenantLimiter {
        let mut limiter = TenantLimiter {
            limits,
            hit: None,
            ticks_left: 0,
            rested_at: Instant::now(),
        };
        limiter.start_call();
        limiter
    }

    /// Gives the next call its whole CPU budget.
    pub fn start_call(&mut self) {
        let ticks = self.limits.cpu_per_call.as_nanos() / EPOCH_TICK.as_nanos();
        self.ticks_left = u64::try_from(ticks).unwrap_or(u64::MAX).max(1);
        self.rested_at = Instant::now();
    }

    /// Whether the guest, at a tick at `now`, has computed a whole tick since it last
    /// gave up its thread: at its last yield, or in a host import that waited until
    /// `waited_until`. If so it should yield now, and this counts as that yield. A guest
    /// back from a wait on its database or broker has just rested; yielding again
    /// would only cost the drain a trip through the scheduler.
    pub fn should_yield(&mut self, waited_until: Option<Instant>, now: Instant) -> bool {
        let rested = waited_until.map_or(self.rested_at, |w| w.max(self.rested_at));
        if now.saturating_duration_since(rested) < EPOCH_TICK {
            return false;
        }
        self.rested_at = now;
        true
    }

    /// Charges the current call one epoch tick, or refuses once its budget is spent.
    pub fn cpu_tick(&mut self) -> Result<(), CpuExceeded> {
        if self.ticks_left == 0 {
            self.hit = Some(LimitKind::Cpu);
            return Err(CpuExceeded {
                limit: self.limits.cpu_per_call,
            });
        }
        self.ticks_left -= 1;
        Ok(())
    }

    /// The limits enforced.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The limit the guest ran into since the last call, if any (and forgets it).
    pub fn take_hit(&mut self) -> Option<LimitKind> {
        self.hit.take()
    }
}

impl ResourceLimiter for TenantLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.memory_bytes {
            self.hit = Some(LimitKind::Memory);
            return Err(LimitExceeded {
                kind: LimitKind::Memory,
                limit: self.limits.memory_bytes,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            self.hit = Some(LimitKind::Table);
            return Err(LimitExceeded {
                kind: LimitKind::Table,
                limit: self.limits.table_elements,
                desired,
            }
            .into());
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_charged_its_budget_in_ticks_then_refused_and_the_next_call_starts_afresh() {
        let mut limiter = TenantLimiter::new(Limits {
            cpu_per_call: EPOCH_TICK * 3,
            ..Limits::default()
        });
        for _ in 0..3 {
            limiter.cpu_tick().unwrap();
        }
        let e = limiter.cpu_tick().unwrap_err();
        assert!(e.to_string().contains("cpu limit of 3ms"), "{e}");
        assert_eq!(limiter.take_hit(), Some(LimitKind::Cpu));
        limiter.start_call();
        limiter.cpu_tick().unwrap();
        assert_eq!(limiter.take_hit(), None);
    }

    #[test]
    fn a_guest_yields_after_a_whole_tick_of_computing_and_not_sooner() {
        let mut limiter = TenantLimiter::new(Limits::default());
        let start = Instant::now();
        limiter.rested_at = start;
        assert!(!limiter.should_yield(None, start + EPOCH_TICK / 2));
        assert!(limiter.should_yield(None, start + EPOCH_TICK));
        // That yield was a rest: the next tick has to be computed in full again.
        assert!(!limiter.should_yield(None, start + EPOCH_TICK + EPOCH_TICK / 2));
        assert!(limiter.should_yield(None, start + EPOCH_TICK * 2));
    }

    #[test]
    fn a_guest_back_from_a_long_wait_in_an_import_does_not_yield_at_once() {
        let mut limiter = TenantLimiter::new(Limits::default());
        let start = Instant::now();
        limiter.rested_at = start;
        let back = start + EPOCH_TICK * 5;
        assert!(!limiter.should_yield(Some(back), back + EPOCH_TICK / 10));
        assert!(limiter.should_yield(Some(back), back + EPOCH_TICK));
        // A wait that ended before the last yield does not postpone the next one.
        assert!(limiter.should_yield(Some(back), back + EPOCH_TICK * 2));
    }

    #[test]
    fn a_new_call_starts_rested() {
        let mut limiter = TenantLimiter::new(Limits::default());
        limiter.rested_at = Instant::now() - EPOCH_TICK * 10;
        limiter.start_call();
        assert!(!limiter.should_yield(None, Instant::now()));
    }

    #[test]
    fn a_budget_shorter_than_a_tick_still_allows_one() {
        let mut limiter = TenantLimiter::new(Limits {
            cpu_per_call: Duration::from_micros(10),
            ..Limits::default()
        });
        limiter.cpu_tick().unwrap();
        assert!(limiter.cpu_tick().is_err());
    }

    #[test]
    fn a_grow_within_the_cap_is_allowed_and_one_past_it_is_refused_and_remembered() {
        let mut limiter = TenantLimiter::new(Limits {
            memory_bytes: 1 << 20,
            table_elements: 10,
            ..Limits::default()
        });
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(limiter.take_hit(), None);
        let e = limiter.memory_growing(1 << 20, (1 << 20) + 65536, None);
        assert!(e.unwrap_err().to_string().contains("memory limit"));
        assert_eq!(limiter.take_hit(), Some(LimitKind::Memory));
        assert_eq!(limiter.take_hit(), None, "forgotten once taken");
        assert!(limiter.table_growing(0, 10, None).unwrap());
        assert!(limiter.table_growing(10, 11, None).is_err());
        assert_eq!(limiter.take_hit(), Some(LimitKind::Table));
    }
}
