//! A producer under load for the failover tests: it keeps a backlog ahead of what the workers
//! have run, and records which enqueues were acknowledged and which refused.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use queue::{Client, NewJob};

/// A running producer; [`Load::stop`] ends it.
pub struct Load {
    acked: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// Enqueues `job(seq)` in batches of 50 through `client`, keeping at most `ahead` more
    /// acknowledged jobs than `ran()` says have run.
    pub fn start(
        client: Client,
        ahead: usize,
        job: impl Fn(u64) -> NewJob + Send + 'static,
        ran: impl Fn() -> usize + Send + 'static,
    ) -> Load {
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let refused: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (acked, refused, stop) = (acked.clone(), refused.clone(), stop.clone());
            async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let backlog = acked.lock().expect("acked").len().saturating_sub(ran());
                    if backlog > ahead {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    let jobs: Vec<NewJob> = (0..50).map(|i| job(seq + i)).collect();
                    seq += 50;
                    match client.enqueue_batch(jobs).await {
                        Ok(done) => acked
                            .lock()
                            .expect("acked")
                            .extend(done.into_iter().map(|e| e.id.to_string())),
                        Err(e) => {
                            // Not acknowledged: it may or may not be there, and is not counted.
                            refused
                                .lock()
                                .expect("refused")
                                .push(format!("{:?}: {e}", e.kind()));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            }
        });
        Load {
            acked,
            refused,
            stop,
            task,
        }
    }

    /// Stops the producer (within 30 s) and returns the acknowledged job ids and the refusals.
    pub async fn stop(self) -> (Vec<String>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        super::bounded(Duration::from_secs(30), "the producer to stop", self.task)
            .await
            .expect("producer");
        let acked = self.acked.lock().expect("acked").clone();
        let refused = self.refused.lock().expect("refused").clone();
        (acked, refused)
    }
}
