//! The `serve` command composed: configuration → engine → policy set → TLS → server.
//!
//! `main` and the integration tests both go through [`prepare`] and [`run`], so the tests
//! exercise exactly the start-up path a user gets.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::certs::{self, CertError};
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::policy::{PolicySet, PolicySetError};
use crate::server::tls::{self, CertResolver, TlsError};
use crate::server::{self, AppState, BodyLimit, Readiness};

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// Explicit PEM files.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// `tls.crt` and `tls.key` in this directory, generated when absent.
    Dir(PathBuf),
}

/// Everything `serve` needs, already typed.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The policy configuration file; `None` means the built-in default set.
    pub config: Option<PathBuf>,
    /// Serving certificate.
    pub tls: TlsSource,
    /// Force every policy into monitor mode.
    pub dry_run: bool,
    /// Request body bound.
    pub body_limit: BodyLimit,
    /// How long shutdown waits for in-flight reviews.
    pub drain: Duration,
    /// Engine sizing.
    pub engine: EngineOptions,
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A policy could not be loaded.
    #[error(transparent)]
    Policies(#[from] PolicySetError),
    /// Certificates could not be generated.
    #[error(transparent)]
    Certs(#[from] CertError),
    /// TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A server ready to accept: policies compiled, settings accepted, TLS loaded.
pub struct Prepared {
    /// Shared handler state.
    pub state: AppState,
    /// The TLS configuration.
    pub tls: Arc<rustls::ServerConfig>,
    /// Swaps the serving certificate (the hot-reload seam).
    pub resolver: Arc<CertResolver>,
    /// The engine, kept to build future policy sets.
    pub engine: Engine,
    drain: Duration,
}

/// The policy set of `config` (the built-in set when `None`), compiled by a new engine, with
/// every policy in monitor mode when `dry_run`: what `serve` runs, for the commands that judge
/// objects without serving (`check`).
pub fn load_policies(
    config: Option<&std::path::Path>,
    dry_run: bool,
    engine: EngineOptions,
) -> Result<(Engine, PolicySet), ServeError> {
    let mut config = match config {
        Some(path) => Config::from_file(path)?,
        None => Config::builtin()?,
    };
    if dry_run {
        config.force_monitor();
    }
    let engine = Engine::new(engine)?;
    let policies = PolicySet::load(&engine, &config.origin, &config.policies)?;
    Ok((engine, policies))
}

/// Loads everything `serve` needs, failing with a specific error before any socket is bound.
pub fn prepare(options: &ServeOptions) -> Result<Prepared, ServeError> {
    let mut config = match &options.config {
        Some(path) => Config::from_file(path)?,
        None => Config::builtin()?,
    };
    if options.dry_run {
        config.force_monitor();
    }
    let engine = Engine::new(options.engine)?;
    let policies = PolicySet::load(&engine, &config.origin, &config.policies)?;
    tracing::info!(config = %config.origin, policies = policies.len(), dry_run = options.dry_run, "policies loaded");
    let (cert, key) = match &options.tls {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::Dir(dir) => {
            let (paths, created) = certs::ensure(dir)?;
            if created {
                tracing::info!(dir = %dir.display(), hosts = ?certs::default_hosts(), "generated a CA and serving certificate");
            }
            (paths.cert, paths.key)
        }
    };
    let resolver = Arc::new(CertResolver::new(tls::load_certified_key(&cert, &key)?));
    let tls = tls::server_config(Arc::clone(&resolver))?;
    let state = AppState {
        policies: Arc::new(ArcSwap::from_pointee(policies)),
        permits: Arc::new(Semaphore::new(
            engine.options().max_concurrent_instances.max(1) as usize
        )),
        readiness: Readiness::default(),
        body_limit: options.body_limit,
    };
    Ok(Prepared {
        state,
        tls,
        resolver,
        engine,
        drain: options.drain,
    })
}

/// Serves on `listener` until `shutdown` completes and in-flight reviews have drained.
/// `/readyz` reports ready from the first accepted connection on.
pub async fn run(prepared: Prepared, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    prepared.state.readiness.set(true);
    server::serve(listener, prepared.state, prepared.tls, shutdown, prepared.drain).await;
}
