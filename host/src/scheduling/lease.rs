//! Which of several hosts on one database delivers: each tenant's worker holds a
//! lease row (`trustlog_lease`, keyed by its cursor key) while it delivers, and the
//! other hosts stand by until it is released or runs out.
//!
//! A background task claims and renews the lease. The worker asks [`LeaseKeeper::holds`]
//! before every batch: a host whose renewals stopped succeeding stops delivering a
//! margin before the database would let another host take over, so in normal running
//! no batch is published by two hosts. Around a crash (a host killed between its
//! publish and its commit) the next holder publishes that batch again; the cursor's
//! compare-and-set keeps the database right, and the metric of re-deliveries counts it.

use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::db::{Database, Lease};

/// How long a lease lasts unless renewed, when nothing else is configured: a standby
/// takes over from a host that died within this and [`STANDBY_POLL`].
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);
/// How often a standby host tries to take the lease.
pub const STANDBY_POLL: Duration = Duration::from_secs(1);
/// The longest `state` text kept in the lease row.
const STATE_MAX_CHARS: usize = 1000;

/// This process's name in lease rows: `HOSTNAME/PID/SCOPE/NONCE`. The host name, the
/// process id and the scope (the boot and the PID namespace the id is valid in) let a
/// host of the same machine and container see that the holder has died (its process is
/// gone) and take over at once instead of waiting for the lease to run out. Two
/// containers with one host name but PID namespaces of their own differ in scope, so
/// neither takes the other's process ids for its own.
pub fn holder_id() -> String {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        ^ std::process::id().rotate_left(16);
    format!(
        "{}/{}/{}/{:08x}",
        host_name(),
        std::process::id(),
        scope(),
        nonce
    )
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty() && !s.contains('/'))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Eight hex digits naming where this process's id means something: the kernel's
/// boot and the PID namespace. Empty where neither can be read (not Linux): then no
/// holder is ever judged dead by its process id.
fn scope() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let pid_ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if boot.is_empty() || pid_ns.is_empty() {
        return "-".to_string();
    }
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let mut hash: u32 = 0x811c_9dc5;
    for byte in boot.trim().bytes().chain(pid_ns.bytes()) {
        hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

/// Whether `holder` names a process of this machine and PID namespace that no longer
/// runs.
fn died_here(holder: &str) -> bool {
    let parts: Vec<&str> = holder.split('/').collect();
    let [host, pid, scope_of, _nonce] = parts[..] else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let ours = scope();
    ours != "-"
        && scope_of == ours
        && host == host_name()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// What the keeper knows of the lease.
#[derive(Debug, Default)]
struct Seen {
    /// Until when this host may deliver, if it holds the lease.
    valid_until: Option<Instant>,
    /// The lease row as last read or written.
    lease: Option<Lease>,
    /// A host whose lease ran out and was taken over, not yet reported.
    took_over_from: Option<String>,
    /// The last error of a claim, while claims fail.
    error: Option<String>,
}

struct Shared {
    seen: StdMutex<Seen>,
    /// What this host says of its delivery, written into the row at each renewal.
    state: StdMutex<String>,
    /// Signalled when this host gains or loses the lease (to the one worker waiting).
    changed: Notify,
}

/// A tenant's claim on its lease, renewed by a background task until released.
pub struct LeaseKeeper {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    db: Database,
    key: String,
    holder: String,
}

impl LeaseKeeper {
    /// Starts claiming the lease `key` on `db` as `holder`, for `ttl` at a time.
    pub fn start(db: Database, key: &str, holder: &str, ttl: Duration) -> LeaseKeeper {
        let shared = Arc::new(Shared {
            seen: StdMutex::new(Seen::default()),
            state: StdMutex::new("running".to_string()),
            changed: Notify::new(),
        });
        let task = tokio::spawn(keep(
            db.clone(),
            key.to_string(),
            holder.to_string(),
            ttl,
            shared.clone(),
        ));
        LeaseKeeper {
            shared,
            task: Some(task),
            db,
            key: key.to_string(),
            holder: holder.to_string(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.shared.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this host holds the lease now, with its margin: it may deliver a batch.
    pub fn holds(&self) -> bool {
        self.seen().valid_until.is_some_and(|t| t > Instant::now())
    }

    /// Waits until this host gains or loses the lease (or `within` passes).
    pub async fn changed(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.shared.changed.notified()).await;
    }

    /// The host this one took the lease over from without a release, once.
    pub fn take_takeover(&self) -> Option<String> {
        self.seen().took_over_from.take()
    }

    /// The lease row as last seen: who holds it, and what it says.
    pub fn lease(&self) -> Option<Lease> {
        self.seen().lease.clone()
    }

    /// Why the last claim failed, while claims fail.
    pub fn error(&self) -> Option<String> {
        self.seen().error.clone()
    }

    /// This host's name in the lease row.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Records what this host says of its delivery, for the next renewal.
    pub fn set_state(&self, state: &str) {
        let state: String = state.chars().take(STATE_MAX_CHARS).collect();
        *self.shared.state.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// Stops renewing and hands the lease back, so a standby takes over at once.
    pub async fn release(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        if let Err(error) = self.db.release_lease(&self.key, &self.holder).await {
            tracing::warn!(lease = %self.key, %error, "could not release the lease; another host takes over once it runs out");
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Claims and renews until aborted: every third of `ttl` while held, every
/// [`STANDBY_POLL`] while another host holds it.
async fn keep(db: Database, key: String, holder: String, ttl: Duration, shared: Arc<Shared>) {
    let margin = ttl / 5;
    loop {
        let state = shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let sent = Instant::now();
        let claimed = match db.claim_lease(&key, &holder, ttl, &state).await {
            // A holder that died on this machine need not run out first.
            Ok(c) if !c.held && died_here(&c.lease.holder) => {
                db.claim_lease_from(&key, &holder, ttl, &state, &c.lease.holder)
                    .await
            }
            other => other,
        };
        let held = {
            let mut seen = shared.seen.lock().unwrap_or_else(|p| p.into_inner());
            let was = seen.valid_until.is_some_and(|t| t > Instant::now());
            match claimed {
                Ok(claim) => {
                    if seen.error.take().is_some() {
                        tracing::info!(lease = %key, "lease claims succeed again");
                    }
                    if claim.held {
                        seen.valid_until = Some(sent + ttl.saturating_sub(margin));
                        if let Some(from) = claim.took_over_from {
                            seen.took_over_from = Some(from);
                        }
                    } else {
                        seen.valid_until = None;
                    }
                    seen.lease = Some(claim.lease);
                }
                Err(error) => {
                    // The lease lapses by itself once `valid_until` passes.
                    let error = error.to_string();
                    if seen.error.as_deref() != Some(error.as_str()) {
                        tracing::warn!(lease = %key, %error, "could not claim or renew the lease");
                    }
                    seen.error = Some(error);
                }
            }
            let now = seen.valid_until.is_some_and(|t| t > Instant::now());
            if was != now {
                // One waiter, the worker; a permit keeps a change it was not yet
                // waiting for.
                shared.changed.notify_one();
            }
            now
        };
        let pause = if held {
            ttl / 3
        } else {
            STANDBY_POLL.min(ttl / 3)
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_ids_name_this_host_process_and_scope() {
        let id = holder_id();
        let parts: Vec<&str> = id.split('/').collect();
        assert_eq!(parts.len(), 4, "{id}");
        assert_eq!(parts[0], host_name());
        assert_eq!(parts[1], std::process::id().to_string());
        assert_eq!(parts[2], scope());
        assert_ne!(scope(), "-", "Linux has a boot id and a PID namespace");
        assert!(!died_here(&id), "this process runs");
    }

    #[test]
    fn a_holder_is_dead_here_only_when_of_this_host_and_scope_and_its_process_is_gone() {
        let (host, scope) = (host_name(), scope());
        // PIDs are below 2^22 on Linux.
        assert!(died_here(&format!("{host}/4999999/{scope}/00000000")));
        assert!(!died_here(&format!(
            "{host}-elsewhere/4999999/{scope}/00000000"
        )));
        assert!(
            !died_here(&format!("{host}/4999999/0badc0de/00000000")),
            "another container's process ids are not ours to judge"
        );
        assert!(
            !died_here(&format!("{host}/1/{scope}/00000000")),
            "init runs"
        );
        assert!(
            !died_here(&format!("{host}/4999999/00000000")),
            "an older form"
        );
        assert!(!died_here("not a holder id"));
        assert!(!died_here(""));
    }
}
