//! Work the guest hands off and collects later (a batch sent to the trust log, a unit
//! of work begun in the database), run on the runtime one piece after another, in
//! the order handed over: a publisher gets batches in the order they were sent, and
//! the database commits units in the order they were begun.

use std::future::Future;

use tokio::sync::oneshot;

/// Handed-off work still running, or done with its answer kept until collected.
#[derive(Debug)]
pub struct Pending<T>(oneshot::Receiver<T>);

impl<T> Pending<T> {
    /// Where the answer goes, and the handle that waits for it.
    pub fn channel() -> (oneshot::Sender<T>, Pending<T>) {
        let (answer, pending) = oneshot::channel();
        (answer, Pending(pending))
    }

    /// Waits for the answer; the error says the work ended without one (it panicked).
    pub async fn wait(self) -> Result<T, String> {
        self.0
            .await
            .map_err(|_| "the work ended without an answer (it panicked)".to_string())
    }
}

/// A line of handed-off work: each piece starts once the one before it has ended.
#[derive(Debug, Default)]
pub struct InOrder {
    /// Fires (or is dropped) when the last piece handed over ends.
    last: Option<oneshot::Receiver<()>>,
}

impl InOrder {
    /// Runs `work` after everything handed over before it; dropping the returned
    /// handle does not stop it.
    pub fn spawn<F>(&mut self, work: F) -> Pending<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let before = self.last.take();
        let (ended, next) = oneshot::channel();
        self.last = Some(next);
        let (answer, pending) = Pending::channel();
        tokio::spawn(async move {
            if let Some(before) = before {
                // A piece that panicked drops its sender: the line goes on.
                let _ = before.await;
            }
            // A guest that dropped its handle does not want the answer.
            let _ = answer.send(work.await);
            let _ = ended.send(());
        });
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pieces_run_one_after_another_in_the_order_handed_over() {
        let mut line = InOrder::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut pending = Vec::new();
        for i in 0..20u64 {
            let seen = seen.clone();
            pending.push(line.spawn(async move {
                // The earlier pieces take longer: run freely, they would finish last.
                tokio::time::sleep(Duration::from_millis(20 - i)).await;
                seen.lock().unwrap().push(i);
                i
            }));
        }
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.wait().await.unwrap(), i as u64);
        }
        assert_eq!(*seen.lock().unwrap(), (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_piece_that_panics_reports_it_and_the_line_goes_on() {
        let mut line = InOrder::default();
        let failed = line.spawn(async { panic!("broken piece") });
        let after = line.spawn(async { 7 });
        assert!(failed.wait().await.unwrap_err().contains("panic"));
        assert_eq!(after.wait().await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_dropped_handle_does_not_stop_the_work() {
        let mut line = InOrder::default();
        let (tx, rx) = oneshot::channel();
        drop(line.spawn(async move { tx.send(()).unwrap() }));
        rx.await.unwrap();
    }
}
