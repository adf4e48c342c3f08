//! What one tenant's sandbox may use, and the limiter that enforces it.
//!
//! Memory and table growth go through [`TenantLimiter`], which refuses a grow past
//! the cap with an error (so the guest traps at once rather than limping on) and
//! remembers which limit was hit. CPU is bounded by fuel: every call into the guest
//! starts with [`Limits::fuel_per_call`] units and traps when they run out.

use wasmtime::ResourceLimiter;

/// The per-tenant caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory, in bytes.
    pub memory_bytes: usize,
    /// Fuel (roughly wasm instructions) one call into the guest may burn.
    pub fuel_per_call: u64,
    /// Largest table, in elements.
    pub table_elements: usize,
    /// Guest log lines let through per second; the rest are counted and dropped.
    pub log_lines_per_sec: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // A batch of 1,000 operations needs a few MiB; 64 leaves room for bigger batches.
            memory_bytes: 64 << 20,
            // A 1,000-row tick burns about 10^8 here; ten times that is still under a
            // second of CPU for a guest that loops.
            fuel_per_call: 1_000_000_000,
            table_elements: 10_000,
            log_lines_per_sec: 100,
        }
    }
}

/// Which limit a guest ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Memory,
    Table,
    Fuel,
}

impl LimitKind {
    /// The name used in metrics labels and status reports.
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::Memory => "memory",
            LimitKind::Table => "table",
            LimitKind::Fuel => "fuel",
        }
    }
}

/// A grow the limiter refused; the guest traps with it.
#[derive(Debug, thiserror::Error)]
#[error("{kind} limit of {limit} exceeded: the guest asked for {desired}", kind = .kind.name())]
pub struct LimitExceeded {
    pub kind: LimitKind,
    pub limit: usize,
    pub desired: usize,
}

/// Enforces [`Limits`] on one store and remembers the first limit hit.
#[derive(Debug)]
pub struct TenantLimiter {
    limits: Limits,
    hit: Option<LimitKind>,
}

impl TenantLimiter {
    /// A limiter for `limits`.
    pub fn new(limits: Limits) -> TenantLimiter {
        TenantLimiter { limits, hit: None }
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
