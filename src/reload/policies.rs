//! Policy reload: build the whole new policy set from the configuration as it is now, off the
//! request path, and swap it in as one `Arc`; when anything about the new set is wrong, keep
//! serving the old one.
//!
//! "The whole set" means what start-up does: read and validate the configuration, compile
//! every module with the server's engine (so the same instance pool; a module whose bytes
//! the serving set already compiled is taken from it), have each policy validate its
//! settings, apply `--dry-run`, and check the memory budget. A review takes the
//! set once, when it starts, and runs every policy it needs (the UPDATE re-evaluation of the
//! old object included) on that set, so a review in flight finishes on the set it started
//! with, and the old set is freed when the last such review ends.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::app::{PolicySource, ServeError};
use crate::config::{Config, ConfigError, builtin};
use crate::policy::PolicySet;
use crate::reload::certs::parent;
use crate::reload::fingerprint::{Fingerprint, Prints};

/// Why a new policy set was refused (the old one keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum PolicyReloadError {
    /// The configuration cannot be read, parsed or validated, or a module file cannot be read.
    #[error("new policy set refused, the old one keeps serving: {0}")]
    Config(#[source] ConfigError),
    /// A module does not compile, a policy refuses its settings, or the set does not fit the
    /// memory budget.
    #[error("new policy set refused, the old one keeps serving: {0}")]
    Build(#[source] ServeError),
    /// The server is shutting down (its permits are closed).
    #[error("the server is shutting down")]
    Closed,
    /// A blocking task that read or built the set did not finish.
    #[error("the policy reload task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// What asked for a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A file may have changed: rebuild only when the content did.
    Files,
    /// An operator asked (SIGHUP): rebuild whatever the content.
    Request,
}

/// A new set serves.
#[derive(Clone, Debug)]
pub struct Installed {
    /// The configuration it came from.
    pub origin: String,
    /// How many policies it holds.
    pub policies: usize,
    /// How long reading, compiling and validating took.
    pub took: Duration,
}

/// The configuration, what was last read from it, and the swap the server reads.
pub struct PolicyReload {
    source: PolicySource,
    live: Arc<ArcSwap<PolicySet>>,
    permits: Arc<Semaphore>,
    last: Fingerprint,
    dirs: Vec<PathBuf>,
}

impl PolicyReload {
    /// Reloads `source` into `live`; `config`, read by [`read`] with fingerprint `print`, is
    /// what the set serving now was built from.
    pub fn new(
        source: PolicySource,
        print: Fingerprint,
        config: &Config,
        live: Arc<ArcSwap<PolicySet>>,
        permits: Arc<Semaphore>,
    ) -> Self {
        let last = print;
        let dirs = dirs(&source, config);
        Self {
            source,
            live,
            permits,
            last,
            dirs,
        }
    }

    /// The directories whose changes may change the set: the configuration's and every
    /// module's. None for the built-in set, which only a request reloads.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Reads the configuration and, when it changed or when `trigger` is a request, builds the
    /// new set on a blocking thread under one of the server's permits and installs it.
    /// `Ok(None)`: nothing changed.
    pub async fn reload(&mut self, trigger: Trigger) -> Result<Option<Installed>, PolicyReloadError> {
        let started = Instant::now();
        let source = self.source.clone();
        let (print, config) = tokio::task::spawn_blocking(move || read(&source))
            .await
            .map_err(PolicyReloadError::Task)?;
        if trigger == Trigger::Files && print == self.last {
            return Ok(None);
        }
        // A refused configuration is not rebuilt until it changes again (or SIGHUP).
        self.last = print;
        let config = config.map_err(PolicyReloadError::Config)?;
        // validate_settings takes an instance from the pool the reviews share.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| PolicyReloadError::Closed)?;
        let source = self.source.clone();
        let previous = self.live.load_full();
        let (config, built) = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let built = source.build(&config, &previous);
            (config, built)
        })
        .await
        .map_err(PolicyReloadError::Task)?;
        let set = built.map_err(PolicyReloadError::Build)?;
        let installed = Installed {
            origin: config.origin.clone(),
            policies: set.len(),
            took: started.elapsed(),
        };
        self.live.store(Arc::new(set));
        self.dirs = dirs(&self.source, &config);
        Ok(Some(installed))
    }
}

/// Reads `source`'s configuration, with the fingerprint of the configuration file's bytes and
/// every module's (or of the configuration's error). The file is fingerprinted before it is
/// parsed: a write in between makes the next check differ and reload again, where the other
/// order could take the new bytes for already loaded. Blocking (file reads).
pub fn read(source: &PolicySource) -> (Fingerprint, Result<Config, ConfigError>) {
    let mut prints = Prints::new();
    if let Some(path) = &source.config {
        prints.file(path);
    }
    let config = source.read();
    match &config {
        Ok(config) => {
            for policy in &config.policies {
                prints.bytes(&policy.module.bytes);
            }
        }
        // Two different errors for the same text (a module missing, then unreadable) differ.
        Err(error) => prints.bytes(error.to_string().as_bytes()),
    }
    (prints.finish(), config)
}

fn dirs(source: &PolicySource, config: &Config) -> Vec<PathBuf> {
    let Some(path) = &source.config else {
        return Vec::new();
    };
    let mut dirs = vec![parent(path)];
    // Module origins are the paths they were read from, or name a module the binary embeds.
    for policy in &config.policies {
        if policy.module.origin.starts_with(builtin::PREFIX) {
            continue;
        }
        let dir = parent(std::path::Path::new(&policy.module.origin));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}
