//! Compiled components cached in the data directory so that an open deserializes wasmtime's
//! artifact (milliseconds) instead of compiling the component with Cranelift (seconds): the
//! engine component, and the plugin sandbox's components (`plugins::sandbox`), each in its own
//! directory.
//!
//! One file per key, `DIR/<key>.cwasm`, where the key is the SHA-256 of the component's bytes,
//! this crate's version and wasmtime's
//! [`precompile_compatibility_hash`](wasmtime::Engine::precompile_compatibility_hash) of the
//! engine (target, compiler and CPU flags, tunables, wasm features, wasmtime's own version).
//! The file is a 48-byte header — `b"VKGCWASM"`, the SHA-256 of the artifact, its length as a
//! little-endian `u64` — followed by the artifact ([`Component::serialize`]). It is written to a
//! temporary name, synced and renamed, so a crash never leaves a partial file under the final
//! name. In the engine's directory writing a file removes the files of other keys (an upgraded
//! build does not accumulate artifacts); the plugin directory holds one file per component and
//! [`retain`] removes those of components no longer used. Before a file is deserialized its
//! length and checksum are checked against the header; anything wrong (damaged, truncated,
//! refused by wasmtime) means compile and overwrite. A cache directory that cannot be created
//! or written costs the compilation and one warning, never the open.

use std::fs::{self, File};
use std::hash::Hasher;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

use crate::error::{Error, Result};

/// The cache's directory inside a data directory.
pub const CACHE_DIR: &str = "engine-cache";

const MAGIC: &[u8; 8] = b"VKGCWASM";
const HEADER: usize = 8 + 32 + 8;
const EXT: &str = ".cwasm";

/// What a cache directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holds {
    /// The engine component: one file; writing it removes the files of other keys.
    Engine,
    /// Plugin components: one file per component; [`retain`] removes unused ones.
    Plugins,
}

impl Holds {
    fn what(self) -> &'static str {
        match self {
            Holds::Engine => "engine component",
            Holds::Plugins => "plugin component",
        }
    }
}

/// How the engine component was made ready when the runtime was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineLoad {
    /// Deserialized from a cache file whose length and checksum matched: nothing compiled.
    pub cached: bool,
    /// Compiled, and the artifact written to the cache for the next open.
    pub stored: bool,
    /// A cache file for this key was there but not used, and why (checksum mismatch,
    /// truncated, refused by wasmtime); it is overwritten by the recompiled artifact.
    pub rejected: Option<String>,
    /// Why the cache could not be written (no cache directory, not writable, disk full).
    pub unavailable: Option<String>,
    /// Time to make the component ready: read + verify + deserialize, or compile (+ store).
    pub elapsed: Duration,
}

/// Compiles `wasm`, or deserializes it from a verified file in `dir` (`None`: no cache). The
/// only error is a component that does not compile.
pub(crate) fn component(
    engine: &Engine,
    wasm: &[u8],
    dir: Option<&Path>,
    holds: Holds,
) -> Result<(Component, EngineLoad)> {
    let start = Instant::now();
    let mut load = EngineLoad::default();
    let what = holds.what();
    let Some(dir) = dir else {
        let component = compile(engine, wasm, what)?;
        load.elapsed = start.elapsed();
        return Ok((component, load));
    };
    let key = key(engine, &Sha256::digest(wasm).into());
    let path = dir.join(format!("{key}{EXT}"));
    match read_verified(&path) {
        Ok(None) => {}
        Ok(Some(file)) => {
            // The workspace denies `unsafe`: allowed for this one call.
            #[allow(unsafe_code)]
            // SAFETY: `Component::deserialize` trusts its bytes to be an artifact that this
            // wasmtime produced for a compatible engine: it maps their code executable without
            // validating it. That holds for these bytes: (1) they were written by `store` below,
            // from `Component::serialize` of this wasmtime, into a file named after a key that
            // covers the component's bytes and `precompile_compatibility_hash` (compiler, CPU
            // flags, tunables, features, wasmtime's version) — and wasmtime itself checks its
            // engine metadata in the artifact against this engine again while deserializing;
            // (2) the file was written under our own data directory, atomically (temp + fsync +
            // rename), so a crash leaves either no file or a whole one; (3) `read_verified` read
            // the file once into memory and checked its length and SHA-256 against the header,
            // and these very bytes — not the file again — are what is deserialized, so damage
            // on disk (a flipped byte, a truncation) and a change after the check are both
            // excluded. The remaining assumption is that nobody who can write the data
            // directory is malicious: the checksum detects accidents, not forgery (anyone able
            // to write it can write a matching header), and such a party could also replace the
            // database itself. The data directory is thereby as trusted as the binary.
            let deserialized = unsafe { Component::deserialize(engine, &file[HEADER..]) };
            match deserialized {
                Ok(component) => {
                    load.cached = true;
                    if holds == Holds::Engine {
                        remove_other_keys(dir, &[key.as_str()]);
                    }
                    load.elapsed = start.elapsed();
                    tracing::info!(path = %path.display(), ms = load.elapsed.as_millis() as u64, "{what} loaded from the cache");
                    return Ok((component, load));
                }
                Err(e) => load.rejected = Some(format!("wasmtime refused it: {e:#}")),
            }
        }
        Err(reason) => load.rejected = Some(reason),
    }
    let component = compile(engine, wasm, what)?;
    if let Err(e) = component
        .serialize()
        .map_err(|e| format!("serializing the compiled component: {e:#}"))
        .and_then(|artifact| {
            store(dir, &key, &artifact, holds)
                .map_err(|e| format!("writing {}: {e}", dir.display()))
        })
    {
        load.unavailable = Some(e);
    } else {
        load.stored = true;
    }
    load.elapsed = start.elapsed();
    // One warning per open, whatever went wrong.
    match (&load.rejected, &load.unavailable) {
        (None, None) => tracing::info!(
            path = %path.display(),
            ms = load.elapsed.as_millis() as u64,
            "{what} compiled and cached"
        ),
        (rejected, unavailable) => tracing::warn!(
            path = %path.display(),
            rejected = rejected.as_deref().unwrap_or("-"),
            unavailable = unavailable.as_deref().unwrap_or("-"),
            "cache not used: the {what} was compiled (slower open); a rejected file is overwritten, an unwritable cache only costs time"
        ),
    }
    Ok((component, load))
}

fn compile(engine: &Engine, wasm: &[u8], what: &str) -> Result<Component> {
    Component::new(engine, wasm).map_err(|e| Error::Engine(format!("compiling the {what}: {e}")))
}

/// Removes the files of `dir` (a [`Holds::Plugins`] directory) that are not those of the
/// components whose SHA-256 is in `live`; returns how many it removed. Failures are ignored.
pub(crate) fn retain(engine: &Engine, dir: &Path, live: &[[u8; 32]]) -> usize {
    let keys: Vec<String> = live.iter().map(|h| key(engine, h)).collect();
    let keep: Vec<&str> = keys.iter().map(String::as_str).collect();
    remove_other_keys(dir, &keep)
}

/// Feeds a [`std::hash::Hash`] into SHA-256 (`finish` is not used).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

/// The cache key: hex SHA-256 of everything an artifact depends on (`wasm`: the SHA-256 of the
/// component's bytes).
fn key(engine: &Engine, wasm: &[u8; 32]) -> String {
    use std::hash::Hash;
    let mut h = Sha256Hasher(Sha256::new());
    h.write(b"vektagraf engine cache 1\0");
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    h.write(&[0]);
    h.write(wasm);
    engine.precompile_compatibility_hash().hash(&mut h);
    hex(&h.0.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file's bytes if it exists and its header matches its content; `Err` says why not.
fn read_verified(path: &Path) -> std::result::Result<Option<Vec<u8>>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        // No file, or no cache directory (a file in its place): nothing to reject.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(format!("reading it: {e}")),
    };
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(format!("no cache header ({} bytes)", bytes.len()));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[40..HEADER]);
    let len = u64::from_le_bytes(len);
    let artifact = &bytes[HEADER..];
    if artifact.len() as u64 != len {
        return Err(format!(
            "truncated or extended: {} artifact bytes, the header says {len}",
            artifact.len()
        ));
    }
    if Sha256::digest(artifact).as_slice() != &bytes[8..40] {
        return Err("checksum mismatch".into());
    }
    if Engine::detect_precompiled(artifact) != Some(Precompiled::Component) {
        return Err("not a wasmtime component artifact".into());
    }
    Ok(Some(bytes))
}

/// Writes `artifact` as `dir/<key>.cwasm` atomically; in the engine's directory it removes
/// other keys' files.
fn store(dir: &Path, key: &str, artifact: &[u8], holds: Holds) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let path = dir.join(format!("{key}{EXT}"));
    let tmp = dir.join(format!("{key}{EXT}.tmp{}", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&Sha256::digest(artifact))?;
        f.write_all(&(artifact.len() as u64).to_le_bytes())?;
        f.write_all(artifact)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename's directory entry; a crash before this only loses the cache file.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    if holds == Holds::Engine {
        remove_other_keys(dir, &[key]);
    }
    Ok(())
}

/// Removes cache files (and leftover temporary files) of keys other than `keep`; returns how
/// many it removed. Failures are ignored.
fn remove_other_keys(dir: &Path, keep: &[&str]) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let kept = name.strip_suffix(EXT).is_some_and(|k| keep.contains(&k));
        if !kept && is_cache_file(name) {
            let path: PathBuf = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {
                    removed += 1;
                    tracing::debug!(path = %path.display(), "old cache file removed")
                }
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "old cache file not removed")
                }
            }
        }
    }
    removed
}

/// `<64 hex>.cwasm` or `<64 hex>.cwasm.tmp<pid>`: the only names this module writes.
fn is_cache_file(name: &str) -> bool {
    let (Some(hex), Some(rest)) = (name.get(..64), name.get(64..)) else {
        return false;
    };
    hex.bytes().all(|b| b.is_ascii_hexdigit())
        && (rest == EXT || rest.starts_with(&format!("{EXT}.tmp")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest component: the preamble (magic, version 0x0d, layer 1). Compiles at once.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    fn digest(wasm: &[u8]) -> [u8; 32] {
        Sha256::digest(wasm).into()
    }

    fn engine(epochs: bool) -> anyhow::Result<Engine> {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(epochs);
        Engine::new(&config).map_err(|e| anyhow::anyhow!("{e:#}"))
    }

    /// Why `read_verified` refuses the file ("" if it does not).
    fn refusal(p: &Path) -> String {
        read_verified(p).err().unwrap_or_default()
    }

    #[test]
    fn stored_then_loaded() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let e = engine(true)?;
        let (_, load) = component(&e, EMPTY, Some(dir.path()), Holds::Engine)?;
        assert!(!load.cached && load.stored, "{load:?}");
        // Another engine with the same configuration has the same key.
        let (_, load) = component(&engine(true)?, EMPTY, Some(dir.path()), Holds::Engine)?;
        assert!(
            load.cached && !load.stored && load.rejected.is_none(),
            "{load:?}"
        );
        let (_, load) = component(&e, EMPTY, None, Holds::Engine)?;
        assert_eq!((load.cached, load.stored), (false, false));
        Ok(())
    }

    #[test]
    fn the_key_covers_component_and_configuration() -> anyhow::Result<()> {
        let a = key(&engine(true)?, &digest(EMPTY));
        assert_eq!(a.len(), 64);
        assert_eq!(a, key(&engine(true)?, &digest(EMPTY)));
        assert_ne!(a, key(&engine(false)?, &digest(EMPTY)));
        assert_ne!(a, key(&engine(true)?, &digest(b"\0asm\x0d\0\x01\0\0")));
        Ok(())
    }

    /// A file whose header and checksum are right but whose artifact another configuration
    /// compiled: wasmtime's own check refuses it, and it is replaced.
    #[test]
    fn an_artifact_wasmtime_refuses_is_replaced() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let e = engine(true)?;
        let foreign = engine(false)?
            .precompile_component(EMPTY)
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        let path = dir.path().join(format!("{}{EXT}", key(&e, &digest(EMPTY))));
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&Sha256::digest(&foreign));
        f.extend_from_slice(&(foreign.len() as u64).to_le_bytes());
        f.extend_from_slice(&foreign);
        fs::write(&path, &f)?;
        assert_eq!(refusal(&path), "", "the file itself is sound");
        let (_, load) = component(&e, EMPTY, Some(dir.path()), Holds::Engine)?;
        assert!(!load.cached && load.stored, "{load:?}");
        let rejected = load.rejected.clone().unwrap_or_default();
        assert!(rejected.contains("wasmtime refused"), "{load:?}");
        assert_ne!(fs::read(&path)?, f, "overwritten");
        let (_, load) = component(&e, EMPTY, Some(dir.path()), Holds::Engine)?;
        assert!(load.cached, "{load:?}");
        Ok(())
    }

    /// A new key's file replaces the others' (a node upgraded to a new build).
    #[test]
    fn a_new_key_removes_the_old_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        component(&engine(true)?, EMPTY, Some(dir.path()), Holds::Engine)?;
        component(&engine(false)?, EMPTY, Some(dir.path()), Holds::Engine)?;
        let mut names = Vec::new();
        for e in fs::read_dir(dir.path())? {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        assert_eq!(
            names,
            vec![format!("{}{EXT}", key(&engine(false)?, &digest(EMPTY)))]
        );
        Ok(())
    }

    /// A plugin directory keeps every component's file until `retain` is told which are used.
    #[test]
    fn plugin_files_stay_until_retain() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let e = engine(true)?;
        let other: &[u8] = b"\0asm\x0d\0\x01\0\0\0\0";
        let (_, a) = component(&e, EMPTY, Some(dir.path()), Holds::Plugins)?;
        assert!(a.stored, "{a:?}");
        // Not a component: it fails to compile and nothing is cached.
        assert!(component(&e, other, Some(dir.path()), Holds::Plugins).is_err());
        let (_, b) = component(&engine(false)?, EMPTY, Some(dir.path()), Holds::Plugins)?;
        assert!(b.stored, "{b:?}");
        let (_, again) = component(&e, EMPTY, Some(dir.path()), Holds::Plugins)?;
        assert!(again.cached, "{again:?}");
        assert_eq!(fs::read_dir(dir.path())?.count(), 2);
        assert_eq!(retain(&e, dir.path(), &[digest(EMPTY)]), 1);
        assert_eq!(retain(&e, dir.path(), &[digest(EMPTY)]), 0);
        assert_eq!(retain(&e, dir.path(), &[]), 1);
        assert_eq!(fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }

    #[test]
    fn cache_file_names() {
        let k = "a".repeat(64);
        assert!(is_cache_file(&format!("{k}.cwasm")));
        assert!(is_cache_file(&format!("{k}.cwasm.tmp42")));
        assert!(!is_cache_file(&format!("{k}.cwasmx")));
        assert!(!is_cache_file("notes.txt"));
        assert!(!is_cache_file(&format!("{}.cwasm", "g".repeat(64))));
        assert!(!is_cache_file(".cwasm"));
        assert!(!is_cache_file(&format!("{}é.cwasm", "a".repeat(63))));
    }

    #[test]
    fn header_checks() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("x.cwasm");
        assert_eq!(read_verified(&p), Ok(None));
        fs::write(&p, b"short")?;
        assert!(refusal(&p).contains("no cache header"));
        // A well-formed header over bytes that are not a wasmtime artifact.
        let body = b"not an artifact";
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&Sha256::digest(body));
        f.extend_from_slice(&(body.len() as u64).to_le_bytes());
        f.extend_from_slice(body);
        fs::write(&p, &f)?;
        assert!(refusal(&p).contains("not a wasmtime"));
        fs::write(&p, &f[..f.len() - 1])?;
        assert!(refusal(&p).contains("truncated"));
        let mut g = f.clone();
        let last = g.len() - 1;
        g[last] ^= 1;
        fs::write(&p, &g)?;
        assert_eq!(refusal(&p), "checksum mismatch");
        Ok(())
    }
}
