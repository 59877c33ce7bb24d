//! The compiled engine component is cached in the data directory (`engine-cache/`): a second
//! open deserializes it instead of compiling; a damaged file is detected before use and
//! replaced; a cache that cannot be written costs only the compilation.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use serde_json::json;
use vektagraf::model::{Batch, CollectionSpec, SearchOptions};
use vektagraf::{Database, DatabaseConfig};

fn open(dir: &Path) -> Result<Database> {
    Database::open(dir, DatabaseConfig::default()).context("open")
}

/// A collection with a few objects, so that reopening restores real shards.
fn fill(db: &Database) -> Result<()> {
    db.create_collection(CollectionSpec::new("c", 4))?;
    let mut b = Batch::new();
    for i in 0..20u32 {
        let v = vec![i as f32, 1.0, (i % 3) as f32, 0.5];
        b.upsert("c", &format!("o{i}"), json!({ "i": i }), Some(v));
    }
    db.write(b)?;
    Ok(())
}

/// The database answers: the nearest neighbour of `o7`'s vector is `o7`.
fn answers(db: &Database) -> Result<()> {
    let hits = db.search("c", &[7.0, 1.0, 1.0, 0.5], &SearchOptions::k(3))?;
    ensure!(
        hits.first().map(|h| h.id.as_str()) == Some("o7"),
        "{hits:?}"
    );
    Ok(())
}

/// The cache files in `dir/engine-cache` (names ending in `.cwasm`).
fn cache_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir.join("engine-cache"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "cwasm") {
            out.push(p);
        }
    }
    Ok(out)
}

#[test]
fn second_open_uses_the_cache_and_old_keys_are_removed() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("db");
    // What an earlier build left: another key's artifact and a temporary file of a crashed
    // write; and a file that is not ours.
    let cache = dir.join("engine-cache");
    fs::create_dir_all(&cache)?;
    let old = cache.join(format!("{}.cwasm", "0".repeat(64)));
    let tmpfile = cache.join(format!("{}.cwasm.tmp99", "1".repeat(64)));
    let other = cache.join("README");
    for p in [&old, &tmpfile, &other] {
        fs::write(p, b"x")?;
    }

    let db = open(&dir)?;
    let load = db.engine_load().clone();
    ensure!(!load.cached && load.stored, "first open compiles: {load:?}");
    ensure!(
        load.rejected.is_none() && load.unavailable.is_none(),
        "{load:?}"
    );
    ensure!(!old.exists() && !tmpfile.exists(), "old keys removed");
    ensure!(other.exists(), "files that are not ours are left alone");
    ensure!(cache_files(&dir)?.len() == 1);
    fill(&db)?;
    db.close()?;

    let db = open(&dir)?;
    let load = db.engine_load().clone();
    ensure!(
        load.cached && !load.stored,
        "second open deserializes: {load:?}"
    );
    ensure!(
        load.rejected.is_none() && load.unavailable.is_none(),
        "{load:?}"
    );
    answers(&db)?;
    db.close()?;
    ensure!(cache_files(&dir)?.len() == 1);
    Ok(())
}

#[test]
fn a_damaged_cache_file_is_detected_and_recompiled() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("db");
    let db = open(&dir)?;
    fill(&db)?;
    db.close()?;
    let [file] =
        <[PathBuf; 1]>::try_from(cache_files(&dir)?).map_err(|v| anyhow::anyhow!("{v:?}"))?;
    let good = fs::read(&file)?;

    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage, &str); 4] = [
        // A byte in the middle of the artifact: only the checksum can tell.
        (
            "flipped byte",
            |f| {
                let i = f.len() / 2;
                f[i] ^= 0x40;
            },
            "checksum",
        ),
        ("truncated", |f| f.truncate(f.len() * 2 / 3), "truncated"),
        // The stored checksum itself.
        ("flipped checksum", |f| f[8] ^= 1, "checksum"),
        ("empty", |f| f.clear(), "header"),
    ];
    for (what, damage, reason) in damages {
        let mut bad = good.clone();
        damage(&mut bad);
        fs::write(&file, &bad)?;
        let db = open(&dir).with_context(|| what.to_owned())?;
        let load = db.engine_load().clone();
        ensure!(
            !load.cached && load.stored,
            "{what}: recompiled and stored: {load:?}"
        );
        ensure!(
            load.rejected.as_deref().is_some_and(|r| r.contains(reason)),
            "{what}: rejected for the {reason}: {load:?}"
        );
        answers(&db).with_context(|| what.to_owned())?;
        db.close()?;
        ensure!(
            fs::read(&file)? == good,
            "{what}: overwritten with the same artifact"
        );
    }
    // And the rewritten file is used again.
    let db = open(&dir)?;
    ensure!(db.engine_load().cached, "{:?}", db.engine_load());
    answers(&db)?;
    db.close()?;
    Ok(())
}

#[test]
fn an_unwritable_cache_does_not_fail_the_open() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("db");
    fs::create_dir_all(&dir)?;
    // A file where the cache directory should be: it cannot be created, whoever we run as.
    fs::write(dir.join("engine-cache"), b"in the way")?;
    for _ in 0..2 {
        let db = open(&dir)?;
        let load = db.engine_load().clone();
        ensure!(!load.cached && !load.stored, "{load:?}");
        ensure!(load.rejected.is_none(), "{load:?}");
        ensure!(
            load.unavailable.is_some(),
            "the reason is reported: {load:?}"
        );
        if db.collections().is_empty() {
            fill(&db)?;
        }
        answers(&db)?;
        db.close()?;
    }
    ensure!(fs::read(dir.join("engine-cache"))? == b"in the way");
    Ok(())
}

/// A read-only cache directory (permissions; skipped as root, whom they do not stop).
#[cfg(unix)]
#[test]
fn a_read_only_cache_directory_does_not_fail_the_open() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("db");
    let cache = dir.join("engine-cache");
    fs::create_dir_all(&cache)?;
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o555))?;
    if fs::write(cache.join("probe"), b"").is_ok() {
        eprintln!("skipped: permissions do not stop this user");
        return Ok(());
    }
    let db = open(&dir)?;
    let load = db.engine_load().clone();
    ensure!(
        !load.cached && !load.stored && load.unavailable.is_some(),
        "{load:?}"
    );
    fill(&db)?;
    answers(&db)?;
    db.close()?;
    fs::set_permissions(&cache, fs::Permissions::from_mode(0o755))?;
    Ok(())
}
