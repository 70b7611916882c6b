//! The `serve` command composed: configuration → engine → policy set → TLS → server.
//!
//! `main` and the integration tests both go through [`prepare`] and [`run`], so the tests
//! exercise exactly the start-up path a user gets.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::certs::{self, CertError};
use crate::config::{Config, ConfigError};
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::metrics::{self, Metrics};
use crate::policy::{PolicySet, PolicySetError};
use crate::reload::certs::CertReload;
use crate::reload::{self, ReloadStatus, Reloader};
use crate::server::intake::Intake;
use crate::server::limits::LimitsError;
use crate::server::load::Load;
use crate::server::memory::{self, MemoryBudget, MemoryError, MemoryPlan};
use crate::server::tls::{self, CertResolver, ClientAuth, TlsError};
use crate::server::{self, AppState, HttpLimits, Readiness, ShutdownTiming};

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
    /// The bounds of the HTTP layer.
    pub http: HttpLimits,
    /// The shutdown delay and drain bound.
    pub shutdown: ShutdownTiming,
    /// What the configuration's memory bound is checked against.
    pub memory_budget: MemoryBudget,
    /// Engine sizing.
    pub engine: EngineOptions,
    /// `--client-ca`: require client certificates from this CA (PEM).
    pub client_ca: Option<PathBuf>,
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
    /// The HTTP limits contradict each other.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// The configuration may hold more memory than the container has.
    #[error(transparent)]
    Memory(#[from] MemoryError),
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
    /// Reloads the certificate and the policies while serving; started by [`serve`].
    pub reload: Reloader,
    /// What `/metrics` serves; also in `state`.
    pub metrics: Metrics,
    shutdown: ShutdownTiming,
}

/// The sockets `serve` listens on, bound by the caller (`main`, or a test on 127.0.0.1:0).
pub struct Listeners {
    /// The webhook (HTTPS).
    pub webhook: TcpListener,
    /// The metrics (plain HTTP); `None` serves no metrics.
    pub metrics: Option<TcpListener>,
}

/// The configuration `config` names (the built-in set when `None`), with every policy in
/// monitor mode when `dry_run`.
pub fn read_config(config: Option<&Path>, dry_run: bool) -> Result<Config, ConfigError> {
    let mut config = match config {
        Some(path) => Config::from_file(path)?,
        None => Config::builtin()?,
    };
    if dry_run {
        config.force_monitor();
    }
    Ok(config)
}

/// The policy set of `config` (the built-in set when `None`), compiled by a new engine, with
/// every policy in monitor mode when `dry_run`, with the configuration's origin for messages:
/// what the commands that judge objects without serving (`check`, `audit`) run.
pub fn load_policies(
    config: Option<&Path>,
    dry_run: bool,
    engine: EngineOptions,
) -> Result<(Engine, PolicySet, String), ServeError> {
    let config = read_config(config, dry_run)?;
    let engine = Engine::new(engine)?;
    let policies = PolicySet::load(&engine, &config.origin, &config.policies)?;
    Ok((engine, policies, config.origin))
}

/// What `serve` builds its policy sets from: the first at start-up and every one a reload
/// builds, with the same engine (so the same instance pool), the same `--dry-run` and the same
/// memory check.
#[derive(Clone, Debug)]
pub struct PolicySource {
    /// The configuration file; `None` means the built-in set.
    pub config: Option<PathBuf>,
    /// `--dry-run`: every policy of every set in monitor mode.
    pub dry_run: bool,
    engine: Engine,
    http: HttpLimits,
    budget: MemoryBudget,
    metrics: Metrics,
}

impl PolicySource {
    /// Reads and validates the configuration as it is now (modules included).
    pub fn read(&self) -> Result<Config, ConfigError> {
        read_config(self.config.as_deref(), self.dry_run)
    }

    /// Compiles `config`'s policies (reusing what `previous`, a set this source built, compiled
    /// of the same bytes), has each validate its settings, and checks that the set fits the
    /// memory budget. Blocking and CPU-heavy; `validate_settings` takes instances from the
    /// engine's pool, so a caller that serves must hold one of the server's permits.
    pub fn build(&self, config: &Config, previous: &PolicySet) -> Result<PolicySet, ServeError> {
        let policies = PolicySet::load_after(
            &self.engine,
            &config.origin,
            &config.policies,
            previous,
            &self.metrics,
        )?;
        check_memory(&policies, self.evaluations(), &self.http, self.budget)?;
        Ok(policies)
    }

    /// Evaluations that may run at once: the engine's pool, and the server's permits.
    pub fn evaluations(&self) -> u64 {
        u64::from(self.engine.options().max_concurrent_instances.max(1))
    }
}

/// Loads everything `serve` needs, failing with a specific error before any socket is bound.
pub fn prepare(options: &ServeOptions) -> Result<Prepared, ServeError> {
    options.http.check()?;
    let load = Arc::new(Load::default());
    let metrics = Metrics::new(Arc::clone(&load));
    let engine = Engine::new(options.engine.clone())?;
    let source = PolicySource {
        config: options.config.clone(),
        dry_run: options.dry_run,
        engine: engine.clone(),
        http: options.http,
        budget: options.memory_budget,
        metrics: metrics.clone(),
    };
    let (print, config) = reload::policies::read(&source);
    let config = config?;
    let policies = source.build(&config, &PolicySet::empty())?;
    metrics.policy_set_installed();
    match engine.cache_stats() {
        Some(cache) => tracing::info!(
            config = %config.origin,
            policies = policies.len(),
            dry_run = options.dry_run,
            cache_hits = cache.hits,
            cache_misses = cache.misses,
            "policies loaded"
        ),
        None => {
            tracing::info!(config = %config.origin, policies = policies.len(), dry_run = options.dry_run, "policies loaded")
        }
    }
    let evaluations = source.evaluations();
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
    let cert_print = reload::certs::fingerprint(&cert, &key);
    let served = tls::load_certified_key(&cert, &key)?;
    record_expiry(&metrics, &served);
    let chain = served.cert.clone();
    let resolver = Arc::new(CertResolver::new(served));
    let client_auth = match &options.client_ca {
        Some(path) => {
            let auth = tls::load_client_ca(path)?;
            tracing::info!(client_ca = %path.display(), "client certificates required");
            auth
        }
        None => ClientAuth::None,
    };
    let tls = tls::server_config(Arc::clone(&resolver), client_auth)?;
    let policies = Arc::new(ArcSwap::from_pointee(policies));
    let permits = Arc::new(Semaphore::new(evaluations as usize));
    let reload = Reloader::new(
        source,
        print,
        &config,
        Arc::clone(&policies),
        Arc::clone(&permits),
        CertReload::new(cert, key, Arc::clone(&resolver), cert_print),
        chain,
    );
    let state = AppState {
        policies,
        permits,
        readiness: Readiness::default(),
        limits: options.http,
        intake: Arc::new(Intake::new(&options.http, Arc::clone(&load))),
        load,
        metrics: metrics.clone(),
    };
    Ok(Prepared {
        state,
        tls,
        resolver,
        engine,
        reload,
        metrics,
        shutdown: options.shutdown,
    })
}

/// Sets the expiry gauge from the serving certificate; a certificate rustls serves but whose
/// dates cannot be read costs the gauge, not the start.
pub fn record_expiry(metrics: &Metrics, certified: &rustls::sign::CertifiedKey) {
    if let Err(error) = metrics.certificate_installed(&certified.cert) {
        tracing::warn!(%error, "serving certificate expiry unknown");
    }
}

/// Checks that `evaluations` at once of the largest policy in `policies`, the body budget and
/// the connections' buffers fit `budget`, on top of what the process holds now.
fn check_memory(
    policies: &PolicySet,
    evaluations: u64,
    http: &HttpLimits,
    budget: MemoryBudget,
) -> Result<(), MemoryError> {
    // The first of the largest, in configuration order.
    let largest_policy = policies
        .iter()
        .min_by_key(|p| std::cmp::Reverse(p.spec.memory))
        .map(|p| (p.spec.name.to_string(), p.spec.memory.bytes()));
    let plan = MemoryPlan {
        baseline: memory::resident_bytes(),
        evaluations,
        largest_policy,
        body_budget: http.body_budget.0 as u64,
        connections: http.max_connections.get() as u64,
        connection_bytes: http.connection_bytes(),
    };
    match memory::check(&plan, budget)? {
        Some(limit) => tracing::info!(
            bound_mib = plan.total() >> 20,
            budget_mib = limit >> 20,
            "memory bound fits the budget"
        ),
        None => tracing::info!(
            bound_mib = plan.total() >> 20,
            "no memory budget to check against"
        ),
    }
    Ok(())
}

/// Serves the webhook on `listener`, without metrics, until `shutdown` completes, the
/// shutdown delay has passed and in-flight reviews have drained. `/readyz` reports ready from
/// the first accepted connection on.
pub async fn run(prepared: Prepared, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let listeners = Listeners {
        webhook: listener,
        metrics: None,
    };
    serve(prepared, listeners, shutdown, std::future::pending()).await;
}

/// Serves the webhook and, when it has a listener, `/metrics`, until `shutdown` completes, the
/// shutdown delay has passed (cut short when `hurry` completes: a second signal) and in-flight
/// reviews have drained. The metrics listener answers throughout and stops last.
pub async fn serve(
    prepared: Prepared,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    hurry: impl Future<Output = ()>,
) {
    if let Ok(addr) = listeners.webhook.local_addr() {
        tracing::info!(%addr, "listening");
    }
    // Reloading stops with serving: the tasks are aborted when this guard drops. The metrics
    // follow every reload from the status the server started with.
    let counting = tokio::spawn(count_reloads(
        prepared.metrics.clone(),
        prepared.reload.handle().status(),
    ));
    let _reloading = prepared.reload.start();
    let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_task = listeners.metrics.map(|listener| {
        tokio::spawn(metrics::endpoint::serve(
            listener,
            prepared.metrics.clone(),
            async {
                let _ = metrics_stopped.await;
            },
        ))
    });
    prepared.state.readiness.set(true);
    let timing = prepared.shutdown;
    server::serve(
        listeners.webhook,
        prepared.state,
        prepared.tls,
        shutdown,
        hurry,
        timing,
    )
    .await;
    let _ = stop_metrics.send(());
    if let Some(task) = metrics_task
        && let Err(error) = task.await
    {
        tracing::error!(%error, "the metrics listener failed");
    }
    counting.abort();
}

/// Keeps the reload metrics in step with the reloader's `status`, whose first value is the
/// start-up's (already counted by [`prepare`]).
async fn count_reloads(metrics: Metrics, mut status: tokio::sync::watch::Receiver<ReloadStatus>) {
    let mut seen = status.borrow_and_update().clone();
    while status.changed().await.is_ok() {
        let now = status.borrow_and_update().clone();
        for _ in seen.policies.generation.0..now.policies.generation.0 {
            metrics.policy_set_installed();
        }
        for _ in seen.policies.failures..now.policies.failures {
            metrics.policy_reload_failed();
        }
        for _ in seen.certificate.failures..now.certificate.failures {
            metrics.certificate_reload_failed();
        }
        if now.certificate.generation != seen.certificate.generation
            && let Err(error) = metrics.certificate_installed(&now.certificate.chain)
        {
            tracing::warn!(%error, "serving certificate expiry unknown");
        }
        seen = now;
    }
}
