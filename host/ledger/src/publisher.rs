//! Publishing off the append path: a thread per v2 ledger turns each confirmed batch
//! into tiles and a signed checkpoint while the next batch is written and fsynced.
//!
//! Why a thread: making a file costs about half a millisecond of kernel time on the
//! filesystems measured here, and a batch makes about ten (full tiles, partial tiles,
//! the checkpoint); in line, that doubled an append. Beside it, it fits in the time
//! the append spends waiting for its fsync.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::keys::VerifierKey;
use super::tlog::Tlog;
use super::*;

/// Confirmed batches an append may run ahead of their publication; past this it waits,
/// so a slow disk holds appends back instead of queueing without bound.
const QUEUE: usize = 2;
/// Batches published under one checkpoint at most, bounding what the thread holds.
const MAX_TOGETHER: usize = 64;

/// A confirmed batch: the lines as written, where each payload sits in them, and
/// the chain head after it.
/// What the appends send the publishing thread.
enum Message {
    /// A confirmed batch to publish.
    Batch(Job),
    /// Someone waits for the checkpoint: publish what is held now, not when due.
    Flush,
}

struct Job {
    lines: Vec<u8>,
    leaves: Vec<Range<usize>>,
    head: [u8; 32],
}

#[derive(Debug, Default)]
struct Progress {
    sent: u64,
    done: u64,
    signed: Option<u64>,
    stopped: bool,
}

type Shared = (Mutex<Progress>, Condvar);

fn lock(shared: &Shared) -> MutexGuard<'_, Progress> {
    // Progress is plain counters, consistent at every unlock; a panic elsewhere
    // while holding it leaves nothing half-done.
    shared.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The publishing thread of an open v2 ledger.
pub(crate) struct Publisher {
    jobs: Option<SyncSender<Message>>,
    // A job's buffers come back here, so appends reuse them instead of allocating.
    spares: Receiver<(Vec<u8>, Vec<Range<usize>>)>,
    thread: Option<JoinHandle<()>>,
    progress: Arc<Shared>,
    verifier: VerifierKey,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("verifier", &self.verifier)
            .field("progress", &*lock(&self.progress))
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Starts publishing for an opened log.
    pub(crate) fn start(tlog: Tlog, interval: Duration) -> io::Result<Publisher> {
        let verifier = tlog.key.verifier_key().clone();
        let progress = Arc::new((
            Mutex::new(Progress {
                signed: tlog.signed,
                ..Progress::default()
            }),
            Condvar::new(),
        ));
        let (jobs, queue) = mpsc::sync_channel(QUEUE);
        let (done, spares) = mpsc::channel();
        let shared = Arc::clone(&progress);
        let thread = std::thread::Builder::new()
            .name("trustlog-ledger-tlog".to_string())
            .spawn(move || run(tlog, interval, queue, &done, &shared))?;
        Ok(Publisher {
            jobs: Some(jobs),
            spares,
            thread: Some(thread),
            progress,
            verifier,
        })
    }

    /// The log's verifier key.
    pub(crate) fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// Queues a confirmed batch, taking its lines and leaf ranges and leaving
    /// reused buffers in their place; waits while the queue is full; says why not
    /// if the publishing thread is gone.
    pub(crate) fn send(
        &mut self,
        lines: &mut Vec<u8>,
        leaves: &mut Vec<Range<usize>>,
        head: [u8; 32],
    ) -> Result<(), String> {
        let (spare_lines, spare_leaves) = self.spares.try_recv().unwrap_or_default();
        let job = Job {
            lines: std::mem::replace(lines, spare_lines),
            leaves: std::mem::replace(leaves, spare_leaves),
            head,
        };
        let jobs = self.jobs.as_ref().expect("only dropping takes the sender");
        lock(&self.progress).sent += 1;
        jobs.send(Message::Batch(job)).map_err(|_| {
            lock(&self.progress).sent -= 1;
            "the transparency log's publishing thread has stopped".to_string()
        })
    }

    /// Waits until every queued batch is published; the size of the last checkpoint signed.
    pub(crate) fn signed(&self) -> Option<u64> {
        if let Some(jobs) = &self.jobs {
            // Refused only once the thread is gone; the wait below then ends at once.
            let _ = jobs.send(Message::Flush);
        }
        let (_, published) = &*self.progress;
        let progress = published
            .wait_while(lock(&self.progress), |p| p.done < p.sent && !p.stopped)
            .unwrap_or_else(PoisonError::into_inner);
        progress.signed
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        // Closing the queue lets the thread finish what is queued, then stop.
        self.jobs.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(
                "the transparency log's publishing thread panicked; the next open brings the log up to date"
            );
        }
    }
}

fn run(
    mut tlog: Tlog,
    interval: Duration,
    queue: Receiver<Message>,
    spares: &mpsc::Sender<(Vec<u8>, Vec<Range<usize>>)>,
    shared: &Shared,
) {
    /// Marks the thread stopped however it ends, so no one waits on it forever.
    struct Stopped<'a>(&'a Shared);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            lock(self.0).stopped = true;
            self.0.1.notify_all();
        }
    }
    let _stopped = Stopped(shared);
    let mut jobs = Vec::with_capacity(MAX_TOGETHER);
    let mut last: Option<Instant> = None;
    while let Ok(message) = queue.recv() {
        let Message::Batch(job) = message else {
            continue; // Nothing held: every batch so far is published.
        };
        // At most one publication per interval: the batches confirmed until it is due
        // go out together, under one checkpoint. They are taken off the queue while
        // waiting, so the appends never wait for this; a waiter's flush ends the wait.
        jobs.push(job);
        let due = last.map_or_else(Instant::now, |at| at + interval);
        while jobs.len() < MAX_TOGETHER {
            let now = Instant::now();
            let next = if now >= due {
                queue.try_recv().map_err(|_| RecvTimeoutError::Timeout)
            } else {
                queue.recv_timeout(due - now)
            };
            match next {
                Ok(Message::Batch(job)) => jobs.push(job),
                Ok(Message::Flush) | Err(_) => break,
            }
        }
        last = Some(Instant::now());
        let head = jobs.last().expect("one job at least").head;
        let leaves = jobs
            .iter()
            .flat_map(|job| job.leaves.iter().map(|leaf| &job.lines[leaf.clone()]));
        tlog.publish(leaves, head);
        {
            let mut progress = lock(shared);
            progress.done += jobs.len() as u64;
            progress.signed = tlog.signed;
            shared.1.notify_all();
        }
        for job in jobs.drain(..) {
            // Refused only once the ledger is gone, and then nobody needs the buffers.
            let _ = spares.send((job.lines, job.leaves));
        }
    }
}
