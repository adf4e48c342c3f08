//! The batches a guest sends (`publisher.send`), published one publish at a time and
//! in the order sent. Batches that queue up while the trust log is busy go out
//! together, in one publish: one fsync of the ledger, one round of confirmations from
//! a broker, for all of them. So the slower the trust log, the larger what it is
//! handed, and a pipeline's batches do not each wait a whole publish for their turn.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};
use trustlog_guest::model::{Envelope, PublishError};

use crate::sandbox::in_order::Pending;

/// One publish's answers, one per envelope, in order.
pub type Results = Vec<Result<(), PublishError>>;

/// How a line publishes what it took together: envelopes in, one result each out.
pub type Publish =
    Box<dyn Fn(Vec<Envelope>) -> Pin<Box<dyn Future<Output = Results> + Send>> + Send>;

/// The most batches one publish takes together: a pipeline's deepest.
const MOST_TOGETHER: usize = trustlog_guest::model::MAX_PIPELINE_DEPTH as usize;

/// A batch waiting its turn, with where its answers go.
struct Queued {
    envelopes: Vec<Envelope>,
    answer: oneshot::Sender<Results>,
}

/// The line: a task that publishes what is queued, in order.
#[derive(Debug)]
pub struct SendLine {
    queue: mpsc::UnboundedSender<Queued>,
}

impl SendLine {
    /// A line publishing through `publish`, on the current runtime; the task ends when
    /// the line is dropped and everything queued has gone out.
    pub fn start(publish: Publish) -> SendLine {
        let (queue, inbox) = mpsc::unbounded_channel();
        tokio::spawn(run(inbox, publish));
        SendLine { queue }
    }

    /// Queues `envelopes` behind everything sent before them.
    pub fn send(&self, envelopes: Vec<Envelope>) -> Pending<Results> {
        let (answer, pending) = Pending::channel();
        let n = envelopes.len();
        if let Err(refused) = self.queue.send(Queued { envelopes, answer }) {
            // The task ended (the runtime is shutting down): nothing is confirmed.
            let gone = "the publishing task has stopped".to_string();
            let _ = refused
                .0
                .answer
                .send(vec![Err(PublishError::Transient(gone)); n]);
        }
        pending
    }
}

async fn run(mut inbox: mpsc::UnboundedReceiver<Queued>, publish: Publish) {
    while let Some(first) = inbox.recv().await {
        let mut together = vec![first];
        while together.len() < MOST_TOGETHER
            && let Ok(next) = inbox.try_recv()
        {
            together.push(next);
        }
        let counts: Vec<usize> = together.iter().map(|q| q.envelopes.len()).collect();
        let (envelopes, answers): (Vec<Vec<Envelope>>, Vec<oneshot::Sender<Results>>) = together
            .into_iter()
            .map(|q| (q.envelopes, q.answer))
            .unzip();
        let mut results = publish(envelopes.into_iter().flatten().collect())
            .await
            .into_iter();
        for (n, answer) in counts.into_iter().zip(answers) {
            // A publisher that answers short has not confirmed the rest.
            let mine: Results = (0..n)
                .map(|_| {
                    results.next().unwrap_or_else(|| {
                        Err(PublishError::Transient(
                            "publisher returned no result for this envelope".into(),
                        ))
                    })
                })
                .collect();
            // A guest that dropped its handle does not want the answer.
            let _ = answer.send(mine);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn envelope(id: &str) -> Envelope {
        Envelope {
            op_id: id.into(),
            payload: b"{}".to_vec(),
            sha256: String::new(),
        }
    }

    /// A trust log that takes 30 ms a publish, remembers each publish's op_ids and
    /// refuses the op_ids starting with `x`.
    fn slow_log(calls: Arc<Mutex<Vec<Vec<String>>>>) -> Publish {
        Box::new(move |envelopes: Vec<Envelope>| {
            let calls = calls.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                calls
                    .lock()
                    .unwrap()
                    .push(envelopes.iter().map(|e| e.op_id.clone()).collect());
                envelopes
                    .iter()
                    .map(|e| match e.op_id.starts_with('x') {
                        true => Err(PublishError::Permanent("refused".into())),
                        false => Ok(()),
                    })
                    .collect()
            })
        })
    }

    #[tokio::test]
    async fn batches_queued_while_the_trust_log_is_busy_go_out_together_in_order() {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let line = SendLine::start(slow_log(calls.clone()));
        let first = line.send(vec![envelope("a1"), envelope("a2")]);
        // The first publish is under way when the next three are sent.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let second = line.send(vec![envelope("b1"), envelope("x-b2")]);
        let third = line.send(vec![envelope("c1")]);
        let fourth = line.send(Vec::new());
        assert_eq!(first.wait().await.unwrap(), vec![Ok(()), Ok(())]);
        assert_eq!(
            second.wait().await.unwrap(),
            vec![Ok(()), Err(PublishError::Permanent("refused".into()))]
        );
        assert_eq!(third.wait().await.unwrap(), vec![Ok(())]);
        assert_eq!(fourth.wait().await.unwrap(), vec![]);
        assert_eq!(
            *calls.lock().unwrap(),
            [vec!["a1", "a2"], vec!["b1", "x-b2", "c1"]],
            "the three sent meanwhile went out in one publish, in the order sent"
        );
    }

    #[tokio::test]
    async fn a_short_answer_leaves_the_rest_unconfirmed() {
        let short: Publish = Box::new(|_envelopes: Vec<Envelope>| Box::pin(async { vec![Ok(())] }));
        let line = SendLine::start(short);
        let answer = line
            .send(vec![envelope("a"), envelope("b")])
            .wait()
            .await
            .unwrap();
        assert_eq!(answer[0], Ok(()));
        assert!(matches!(answer[1], Err(PublishError::Transient(_))));
    }
}
