//! The epoch ticker, which bounds every guest's CPU: an engine's epoch advances
//! every [`EPOCH_TICK`] while one of its guests computes, and while none does the
//! ticker dozes, looking again every [`DOZE`].
//!
//! A thread woken a thousand times a second costs more than its own CPU on a busy
//! or virtual machine: with both cores loaded by `nice 19` spinners, a PostgreSQL
//! drain at batch 100 ran at 0.82–0.86 of the native engine with a ticker that never
//! rested and at 0.95–1.09 with none (BENCHMARKS.md). A guest spends most of a tick
//! waiting on its database and broker, and an idle host waits all the time, so a
//! ticker that rests with them wakes a fraction as often.

use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use wasmtime::Engine;

use crate::sandbox::limits::EPOCH_TICK;

/// How long the ticker sleeps while no guest computes. A guest that starts computing
/// then gets its first tick up to this much later than [`EPOCH_TICK`], so it is the
/// most it can compute before it can first be made to yield.
pub const DOZE: Duration = Duration::from_millis(5);

/// How many of an engine's guests are computing: inside a call into the guest and
/// not waiting in a host import. Shared by the engine's ticker and its instances.
#[derive(Debug, Clone, Default)]
pub struct Computing(Arc<AtomicIsize>);

impl Computing {
    /// Counts one more guest computing until the guard is dropped: a call into it.
    pub fn enter(&self) -> Busy {
        self.0.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Counts a computing guest as resting until the guard is dropped: a host
    /// import that waits on I/O.
    pub fn rest(&self) -> Resting {
        self.0.fetch_sub(1, Ordering::Relaxed);
        Resting(self.clone())
    }

    /// Whether any guest computes now.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// A guest counted as computing; see [`Computing::enter`].
#[must_use = "the guest counts as computing only while the guard lives"]
pub struct Busy(Computing);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A computing guest counted as resting; see [`Computing::rest`].
#[must_use = "the guest counts as resting only while the guard lives"]
pub struct Resting(Computing);

impl Drop for Resting {
    fn drop(&mut self) {
        self.0.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// One wake-up of the ticker: whether it advances the epoch, and how long it then
/// sleeps. Nothing to interrupt while every guest rests, so no tick.
fn step(busy: bool) -> (bool, Duration) {
    if busy {
        (true, EPOCH_TICK)
    } else {
        (false, DOZE)
    }
}

/// Starts `engine`'s ticker, driven by `computing`; it ends once the engine is dropped.
pub fn start_ticker(engine: &Engine, computing: Computing) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("trustlog-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                let (tick, sleep) = step(computing.any());
                if tick {
                    engine.increment_epoch();
                }
                drop(engine);
                std::thread::sleep(sleep);
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_counts_as_computing_until_it_ends_and_its_waits_as_resting() {
        let c = Computing::default();
        assert!(!c.any());
        let call = c.enter();
        assert!(c.any());
        {
            let _wait = c.rest();
            assert!(!c.any(), "waiting on an import");
        }
        assert!(c.any(), "back from the import");
        drop(call);
        assert!(!c.any());
    }

    #[test]
    fn one_guest_computing_beside_a_resting_one_keeps_the_engine_busy() {
        let c = Computing::default();
        let (a, b) = (c.enter(), c.enter());
        let b_waits = c.rest();
        assert!(c.any());
        drop(a);
        assert!(!c.any());
        drop(b_waits);
        assert!(c.any());
        drop(b);
        assert!(!c.any());
    }

    #[test]
    fn the_ticker_ticks_each_epoch_tick_while_busy_and_dozes_without_a_tick_while_not() {
        assert_eq!(step(true), (true, EPOCH_TICK));
        assert_eq!(step(false), (false, DOZE));
        assert!(DOZE > EPOCH_TICK);
    }
}
