//! Index snapshots leave the committer as soon as the engine has streamed them into a file:
//! syncing the file, renaming it and committing the row that names it (`Store::
//! publish_snapshot`) happen on this thread, so writes wait only for the engine's own pass
//! over its memory, never for the disk.

use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::store::{SnapshotWriter, Store, VersionVector};

enum Job {
    Publish {
        collection: String,
        shard: u32,
        covered: VersionVector,
        file: SnapshotWriter,
    },
    /// Answered once every job sent before it is done.
    Flush(Sender<()>),
}

pub(super) struct Publisher {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    pub fn start(store: Arc<Store>) -> std::io::Result<Self> {
        let (tx, rx) = channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("vektagraf-snapshots".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Publish {
                            collection,
                            shard,
                            covered,
                            file,
                        } => publish(&store, &collection, shard, covered, file),
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(Self {
            jobs: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands a written snapshot file over; it becomes the shard's snapshot once durable.
    pub fn publish(
        &self,
        collection: &str,
        shard: u32,
        covered: VersionVector,
        file: SnapshotWriter,
    ) {
        let job = Job::Publish {
            collection: collection.to_owned(),
            shard,
            covered,
            file,
        };
        let Some(jobs) = &self.jobs else { return };
        if let Err(e) = jobs.send(job) {
            // Only if the thread died: the snapshot is lost, the log still covers it.
            if let Job::Publish { file, .. } = e.0 {
                file.discard();
            }
        }
    }

    /// Waits until every snapshot handed over so far is published (or has failed).
    pub fn flush(&self) {
        self.flushed().wait();
    }

    /// What says when every snapshot handed over so far is published (or has failed).
    pub fn flushed(&self) -> Flushed {
        let (tx, rx) = channel();
        match &self.jobs {
            Some(j) if j.send(Job::Flush(tx)).is_ok() => Flushed(Some(rx)),
            _ => Flushed(None),
        }
    }
}

/// Waits for the snapshot thread to reach a point (see [`Publisher::flushed`]).
pub(crate) struct Flushed(Option<std::sync::mpsc::Receiver<()>>);

impl Flushed {
    pub fn wait(self) {
        if let Some(rx) = self.0 {
            // An error means the thread is gone, and with it anything left to wait for.
            let _ = rx.recv();
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn publish(
    store: &Store,
    collection: &str,
    shard: u32,
    covered: VersionVector,
    file: SnapshotWriter,
) {
    let bytes = file.bytes();
    let started = std::time::Instant::now();
    let result = file
        .finish()
        .and_then(|f| store.publish_snapshot(collection, shard, covered, f));
    match result {
        Ok(true) => tracing::debug!(
            collection,
            shard,
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "index snapshot published"
        ),
        Ok(false) => tracing::debug!(collection, shard, "collection dropped; snapshot discarded"),
        Err(e) => tracing::warn!(collection, shard, error = %e, "writing an index snapshot failed"),
    }
}
