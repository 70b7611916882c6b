//! The compiled-artifact cache on disk, so that a restart with unchanged policies skips
//! compilation (a Python component takes seconds to compile, its cached code a fraction).
//!
//! This is wasmtime's own cache (`Config::cache`): an entry is keyed by a SHA-256 of the Wasm
//! bytes and the engine's compilation settings, under a directory named for the wasmtime
//! version, and covers core modules and components alike. Loading an entry needs no `unsafe`
//! here. An entry that cannot be read, decompressed or loaded (corrupt, truncated, from another
//! build) is a miss: the module is compiled again and the entry rewritten, so a bad cache never
//! stops a start. A cache directory that cannot be created only costs the cache, with a warning.
//!
//! Entries are zstd-compressed and written atomically; wasmtime's background worker keeps the
//! directory under [`MAX_CACHE_BYTES`] by deleting the least recently used entries.
//!
//! Whoever can write the directory can make the webhook run native code of their choosing:
//! it must be private to the webhook (an `emptyDir` in a Pod, the user's own cache directory
//! on a workstation).

use std::path::{Path, PathBuf};

/// Soft bound of the directory's total size; the worker deletes older entries beyond it.
pub const MAX_CACHE_BYTES: u64 = 1 << 30;

/// Where compiled artifacts are kept, if anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ArtifactCache {
    /// Compile every module at every start.
    #[default]
    Off,
    /// Keep compiled artifacts in this directory.
    Dir(PathBuf),
}

impl ArtifactCache {
    /// `$XDG_CACHE_HOME/portcullis`, else `$HOME/.cache/portcullis`, else off.
    pub fn user_default() -> Self {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|d| !d.is_empty())
                    .map(|home| PathBuf::from(home).join(".cache"))
            });
        base.map_or(Self::Off, |dir| Self::Dir(dir.join("portcullis")))
    }
}

/// Why the cache could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The directory has no absolute form (the working directory is gone).
    #[error("cannot resolve the cache directory {}", .0.display())]
    Resolve(PathBuf, #[source] std::io::Error),
    /// wasmtime refused the cache (the directory cannot be created, ...).
    #[error("cannot use the cache directory {}: {}", .0.display(), .1)]
    Open(PathBuf, String),
}

/// wasmtime's cache in `dir`, with its worker started.
pub(crate) fn open(dir: &Path) -> Result<wasmtime::Cache, CacheError> {
    let dir = std::path::absolute(dir).map_err(|e| CacheError::Resolve(dir.to_owned(), e))?;
    let mut config = wasmtime::CacheConfig::new();
    config
        .with_directory(&dir)
        .with_files_total_size_soft_limit(MAX_CACHE_BYTES);
    wasmtime::Cache::new(config).map_err(|e| CacheError::Open(dir, format!("{e:#}")))
}

/// How often the engine's cache answered, since the engine started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Modules loaded from the cache.
    pub hits: usize,
    /// Modules compiled and written to the cache.
    pub misses: usize,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::engine::limits::Limits;
    use crate::engine::{Engine, EngineOptions, Export};

    const ACCEPT: &str = r#"(module
        (memory (export "memory") 1)
        (data (i32.const 16) "{\"accepted\":true}")
        (func (export "allocate") (param i32) (result i32) (i32.const 1024))
        (func (export "validate") (param i32 i32) (result i64)
          (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 17))))"#;

    /// A fresh engine on `dir` compiles `wasm`, answers, and reports its cache counters.
    fn load(dir: &Path, wasm: &[u8]) -> CacheStats {
        let engine = Engine::new(EngineOptions {
            max_concurrent_instances: 1,
            cache: ArtifactCache::Dir(dir.to_owned()),
        })
        .expect("engine");
        let module = engine.compile(wasm).expect("compiles");
        let limits = Limits {
            timeout: Duration::from_secs(5),
            memory_bytes: 1 << 20,
        };
        let out = module.call(Export::Validate, b"{}", limits).expect("answers");
        assert_eq!(out.bytes, br#"{"accepted":true}"#);
        engine.cache_stats().expect("a cache")
    }

    fn entries(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut todo = vec![dir.to_owned()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    todo.push(path);
                } else if path.extension().is_none() {
                    found.push(path);
                }
            }
        }
        found
    }

    #[test]
    fn a_second_load_hits_the_cache_and_a_corrupt_entry_is_compiled_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wasm = wat::parse_str(ACCEPT).expect("valid WAT");
        assert_eq!(load(dir.path(), &wasm), CacheStats { hits: 0, misses: 1 });
        assert_eq!(load(dir.path(), &wasm), CacheStats { hits: 1, misses: 0 });
        let written = entries(dir.path());
        assert_eq!(written.len(), 1, "{written:?}");
        // Garbage, then a valid zstd frame of garbage: neither may stop the load.
        for corrupt in [b"not a cache entry".to_vec(), zstd_of(b"\x7fELF but not code")] {
            std::fs::write(&written[0], corrupt).expect("corrupt the entry");
            assert_eq!(load(dir.path(), &wasm), CacheStats { hits: 0, misses: 1 });
        }
        assert_eq!(load(dir.path(), &wasm), CacheStats { hits: 1, misses: 0 });
    }

    #[test]
    fn a_directory_that_cannot_be_created_costs_only_the_cache() {
        let file = tempfile::NamedTempFile::new().expect("tempfile");
        let engine = Engine::new(EngineOptions {
            max_concurrent_instances: 1,
            cache: ArtifactCache::Dir(file.path().join("cache")),
        })
        .expect("engine without a cache");
        assert_eq!(engine.cache_stats(), None);
        engine
            .compile(&wat::parse_str(ACCEPT).expect("valid WAT"))
            .expect("compiles");
    }

    /// A zstd frame of `bytes`, stored uncompressed (a raw block), written by hand.
    fn zstd_of(bytes: &[u8]) -> Vec<u8> {
        let len = u32::try_from(bytes.len()).expect("small");
        // Magic; frame header: single segment, 1-byte content size; block header: last, raw.
        let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0x20, u8::try_from(len).expect("small")];
        let block = (len << 3) | 1;
        frame.extend_from_slice(&block.to_le_bytes()[..3]);
        frame.extend_from_slice(bytes);
        frame
    }
}
