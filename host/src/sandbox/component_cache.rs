//! Loads the guest component, compiling it once and caching the machine code.
//!
//! Cranelift takes a while on a 2-core machine; the cache makes every start
//! after the first a file read. The key covers the component bytes and the
//! engine's compatibility hash, so a new guest or a new wasmtime recompiles.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Why the component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The component bytes could not be validated or compiled to machine code.
    #[error("compiling the component failed: {0}")]
    Compile(String),
    /// The compiled component could not be serialised for the cache.
    #[error("serialising the compiled component failed: {0}")]
    Serialize(String),
}

/// Where compiled components are kept: `TRUSTLOG_CACHE_DIR`, else the user's cache dir.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRUSTLOG_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("trustlog");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("trustlog");
    }
    std::env::temp_dir().join("trustlog-cache")
}

fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut h = Sha256::new();
    h.update(wasm);
    h.update(engine_hash.finish().to_le_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The compiled component for `wasm`, from the cache in `dir` when possible.
pub fn load(engine: &Engine, wasm: &[u8], dir: &Path) -> Result<Component, CacheError> {
    let path = dir.join(format!("component-{}.cwasm", cache_key(engine, wasm)));
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of this same
        // engine configuration (the key covers it) into the user's own cache
        // directory; a corrupt file fails to load and is replaced below.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cached component unusable; recompiling")
            }
        }
    }
    let component =
        Component::new(engine, wasm).map_err(|e| CacheError::Compile(format!("{e:#}")))?;
    let bytes = component
        .serialize()
        .map_err(|e| CacheError::Serialize(format!("{e:#}")))?;
    // A cache that cannot be written only costs the next start a compile.
    if let Err(e) = write_atomically(&path, &bytes) {
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled component");
    }
    Ok(component)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Unique per process and per call: tenants and tests may compile concurrently.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("component");
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_load_reads_the_cache_instead_of_compiling() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        // The smallest valid component: compiling it is cheap, caching it is the point.
        let wasm = b"\0asm\x0d\0\x01\0";
        load(&engine, wasm, dir.path()).unwrap();
        let cached: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(cached.len(), 1, "one compiled artefact: {cached:?}");
        let written = std::fs::metadata(&cached[0]).unwrap().modified().unwrap();
        load(&engine, wasm, dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(&cached[0]).unwrap().modified().unwrap(),
            written,
            "the cache was not rewritten"
        );
    }

    #[test]
    fn a_corrupt_cache_entry_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let wasm = b"\0asm\x0d\0\x01\0";
        load(&engine, wasm, dir.path()).unwrap();
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::write(&path, b"garbage").unwrap();
        load(&engine, wasm, dir.path()).unwrap();
        assert_ne!(std::fs::read(&path).unwrap(), b"garbage");
    }
}
