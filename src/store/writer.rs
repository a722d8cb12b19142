//! The single writer: group commit over one redb write transaction.
//!
//! A durable redb commit costs an fsync (~2 ms). Writers that each took the write lock would
//! cap logins near 500/s; instead every job queued while one commit runs joins the next
//! transaction, and all of them learn the outcome only after that commit is durable.
//!
//! Invariant: a job that returns `Err` (or panics) may have written part of its change, so the
//! whole batch is aborted and every job in it is told `BatchAborted` (or its own error).
//! Jobs therefore report domain refusals as `Ok` values and keep `Err` for storage faults.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;

use redb::Database;

use super::{StoreError, Tx};

/// How many jobs one transaction takes at most, so one batch cannot starve a reader of news.
const MAX_BATCH: usize = 256;

type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut Tx<'_>) -> (bool, Finish) + Send>;

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    thread: Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Writer {
    pub fn start(db: Arc<Database>) -> Writer {
        let (jobs, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("samlgate-store-writer".into())
            .spawn(move || run(db, rx))
            .expect("spawning the store writer thread");
        Writer {
            jobs,
            thread: Arc::new(std::sync::Mutex::new(Some(thread))),
        }
    }

    /// Stop accepting writes and wait until the queued ones are committed and the thread,
    /// with its handle on the database, is gone. Waits for every clone to be dropped first.
    pub fn close(self) {
        let Writer { jobs, thread } = self;
        drop(jobs);
        let handle = thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn submit<T, F>(
        &self,
        f: F,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, StoreError>>, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |t| {
            let result = catch_unwind(AssertUnwindSafe(|| f(t)))
                .unwrap_or_else(|_| Err(StoreError::Db("a store job panicked".into())));
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |commit| {
                let out = match (result, commit) {
                    (Err(e), _) => Err(e),
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => Err(e),
                };
                let _ = tx.send(out);
            });
            (ok, finish)
        });
        self.jobs.send(job).map_err(|_| StoreError::NotWritten)?;
        Ok(rx)
    }

    pub async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f)?.await.map_err(|_| StoreError::NotWritten)?
    }

    /// Queue a write and do not wait for it (e.g. refreshing `last_seen`); failures are logged.
    pub fn write_detached<F>(&self, f: F)
    where
        F: FnOnce(&mut Tx<'_>) -> Result<(), StoreError> + Send + 'static,
    {
        if self.submit(f).is_err() {
            log::error!("store: a background write was dropped: the writer has stopped");
        }
    }

    pub fn write_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f)?
            .blocking_recv()
            .map_err(|_| StoreError::NotWritten)?
    }
}

fn run(db: Arc<Database>, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                // Dropping the jobs unrun drops their reply channels: callers get `NotWritten`.
                log::error!(
                    "store: cannot begin a write transaction, {} writes refused: {e}",
                    batch.len()
                );
                continue;
            }
        };
        let mut finishes = Vec::with_capacity(batch.len());
        let mut all_ok = true;
        {
            let mut tx = Tx { txn: &txn };
            for job in batch {
                let (ok, finish) = job(&mut tx);
                all_ok &= ok;
                finishes.push((ok, finish));
            }
        }
        let outcome = if all_ok {
            txn.commit().map_err(|e| StoreError::Db(e.to_string()))
        } else {
            let _ = txn.abort();
            Err(StoreError::BatchAborted)
        };
        if let Err(e) = &outcome {
            log::error!(
                "store: a write batch of {} was not committed: {e}",
                finishes.len()
            );
        }
        for (_, finish) in finishes {
            finish(match &outcome {
                Ok(()) => Ok(()),
                Err(StoreError::BatchAborted) => Err(StoreError::BatchAborted),
                Err(e) => Err(StoreError::Db(e.to_string())),
            });
        }
    }
}
