//! Index snapshots as files beside the database (`DATA/snapshots/`), described by a row of
//! `index_snapshot_meta`.
//!
//! A snapshot is streamed out of the engine straight into a temporary file (the host never
//! holds a whole shard's bytes), then published: the file is synced and renamed to its final
//! name, and one small transaction points the shard's row at it. The file it replaces is
//! deleted after that commit, so a rewrite gives its space back at once (a redb table keeps
//! the pages of large values it freed). Files no row names — a crash between rename and
//! commit, a dropped collection — are swept at open and after every publish.
//!
//! Earlier builds kept snapshots as 1 MiB chunks in `index_snapshot_chunks`; those are still
//! read, and removed when the shard's next snapshot is published.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Where a shard's snapshot bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `n` chunks in `index_snapshot_chunks` (earlier builds).
    Chunks(u32),
    /// A file in the snapshot directory.
    File(String),
}

const SUFFIX: &str = ".snap";
const TMP_SUFFIX: &str = ".snap.tmp";
/// Bytes handed to the engine per read.
const READ_CHUNK: usize = 1 << 20;

/// The snapshot directory of one database.
pub struct SnapshotDir {
    dir: PathBuf,
    /// Makes file names unique within this process (with the time, across processes).
    counter: AtomicU64,
}

impl SnapshotDir {
    /// Opens (or creates) `dir` and deletes temporary files left by a crash.
    pub fn open(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let this = Self {
            dir,
            counter: AtomicU64::new(0),
        };
        for name in this.names()? {
            if name.ends_with(TMP_SUFFIX) {
                this.remove(&name);
            }
        }
        Ok(this)
    }

    fn names(&self) -> Result<Vec<String>> {
        let read = |e| Error::io(format!("listing {}", self.dir.display()), e);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(read)? {
            if let Some(name) = entry.map_err(read)?.file_name().to_str() {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    /// A new file for a snapshot of `shard` of the collection `label` names.
    pub fn create(&self, label: &str, shard: u32) -> Result<SnapshotWriter> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Collection names are free text: the file name carries a safe form of it, for people.
        let safe: String = label
            .chars()
            .take(40)
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let name = format!("{safe}-{shard}-{stamp:x}-{n}{SUFFIX}");
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file =
            File::create(&tmp).map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        Ok(SnapshotWriter {
            out: BufWriter::with_capacity(READ_CHUNK, file),
            tmp,
            name,
            bytes: 0,
            failed: None,
        })
    }

    /// Makes a finished file durable under its final name (a crash before this leaves a
    /// temporary file, swept at the next open).
    pub fn seal(&self, file: &Finished) -> Result<()> {
        let to = self.dir.join(&file.name);
        std::fs::rename(&file.tmp, &to)
            .map_err(|e| Error::io(format!("renaming {}", file.tmp.display()), e))?;
        // The rename itself must survive a crash before the row that names the file commits.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("syncing {}", self.dir.display()), e))
    }

    /// Reads a snapshot file a chunk at a time; `size` is what its row says it holds.
    pub fn reader(&self, name: &str, size: u64) -> Result<FileChunks> {
        let path = self.dir.join(name);
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
            .len();
        if len != size {
            return Err(Error::Storage(format!(
                "index snapshot {} holds {len} bytes, its record says {size}",
                path.display()
            )));
        }
        Ok(FileChunks {
            file,
            path,
            left: size,
        })
    }

    /// Deletes a file; a file that is already gone is fine, other failures are logged (the
    /// next sweep tries again).
    pub fn remove(&self, name: &str) {
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "removing an old index snapshot failed")
            }
        }
    }

    /// Deletes every snapshot file not in `keep` (temporary files are left: one may be being
    /// written). Returns how many went.
    pub fn sweep(&self, keep: &HashSet<String>) -> Result<usize> {
        let mut removed = 0;
        for name in self.names()? {
            if name.ends_with(SUFFIX) && !keep.contains(&name) {
                self.remove(&name);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// A snapshot being written. Write errors are remembered (the engine's stream cannot fail)
/// and reported by [`SnapshotWriter::finish`].
pub struct SnapshotWriter {
    out: BufWriter<File>,
    tmp: PathBuf,
    name: String,
    bytes: u64,
    failed: Option<std::io::Error>,
}

impl SnapshotWriter {
    pub fn write(&mut self, bytes: &[u8]) {
        self.bytes += bytes.len() as u64;
        if self.failed.is_none() {
            if let Err(e) = self.out.write_all(bytes) {
                self.failed = Some(e);
            }
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and syncs the file's contents; the file is not yet under its final name.
    pub fn finish(self) -> Result<Finished> {
        let io = |e| Error::io(format!("writing {}", self.tmp.display()), e);
        if let Some(e) = self.failed {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(io(e));
        }
        let file = match self.out.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&self.tmp);
                return Err(io(e.into_error()));
            }
        };
        if let Err(e) = file.sync_all() {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(io(e));
        }
        Ok(Finished {
            tmp: self.tmp,
            name: self.name,
            size: self.bytes,
        })
    }

    /// Gives up on the file.
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A snapshot file fully written and synced, waiting to be published.
pub struct Finished {
    tmp: PathBuf,
    pub name: String,
    pub size: u64,
}

impl Finished {
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A snapshot file's bytes, a chunk at a time.
pub struct FileChunks {
    file: File,
    path: PathBuf,
    left: u64,
}

impl Iterator for FileChunks {
    type Item = Result<Vec<u8>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let n = self.left.min(READ_CHUNK as u64) as usize;
        let mut buf = vec![0; n];
        Some(match self.file.read_exact(&mut buf) {
            Ok(()) => {
                self.left -= n as u64;
                Ok(buf)
            }
            Err(e) => {
                self.left = 0;
                Err(Error::io(format!("reading {}", self.path.display()), e))
            }
        })
    }
}
