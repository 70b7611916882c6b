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
