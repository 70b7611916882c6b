//! Hot reload while serving: the serving certificate when its files change, the policy set on
//! SIGHUP or when the configuration or a module changes; each reload either installs a whole
//! new certificate or set, or keeps the old one and says why.
//!
//! [`Reloader`] is built by `app::prepare` next to what it swaps and started by `app::run`;
//! [`ReloadHandle`] asks for a policy reload (what SIGHUP does, see [`hangup`]) and watches
//! [`ReloadStatus`]: generations, failure counts and the last failure of each kind, for logs,
//! metrics and tests.

pub mod certs;
pub mod fingerprint;
pub mod hangup;
pub mod policies;
pub mod watch;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustls::pki_types::CertificateDer;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::app::PolicySource;
use crate::config::Config;
use crate::policy::PolicySet;
use certs::{CertCheck, CertReload, CertReloadError};
use fingerprint::Fingerprint;
use policies::{Installed, PolicyReload, PolicyReloadError, Trigger};
use watch::Watch;

/// How many certificates or policy sets have been installed, the one loaded at start-up
/// included: it counts from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation(pub u64);

impl Generation {
    fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

/// Where policy reloads stand.
#[derive(Clone, Debug)]
pub struct PolicyStatus {
    /// The set serving now.
    pub generation: Generation,
    /// Reloads refused since start-up.
    pub failures: u64,
    /// The last set installed by a reload.
    pub last_installed: Option<Installed>,
    /// Why the last refused reload was refused.
    pub last_failure: Option<Arc<PolicyReloadError>>,
}

/// Where certificate reloads stand.
#[derive(Clone, Debug)]
pub struct CertStatus {
    /// The pair serving now.
    pub generation: Generation,
    /// New pairs refused since start-up.
    pub failures: u64,
    /// The chain serving now, leaf first (its expiry is the leaf's `notAfter`).
    pub chain: Arc<[CertificateDer<'static>]>,
    /// Why the last refused pair was refused.
    pub last_failure: Option<Arc<CertReloadError>>,
}

/// Both, as one value that changes whenever either does.
#[derive(Clone, Debug)]
pub struct ReloadStatus {
    /// The policy set.
    pub policies: PolicyStatus,
    /// The serving certificate.
    pub certificate: CertStatus,
}

/// Asks for policy reloads and watches how reloads go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReloadHandle {
    status: tokio::sync::watch::Receiver<ReloadStatus>,
    requests: Arc<Notify>,
}

impl ReloadHandle {
    /// Rebuilds the policy set from the configuration as it is now, changed or not (SIGHUP).
    /// Requests made while one is being handled fold into one more.
    pub fn reload_policies(&self) {
        self.requests.notify_one();
    }

    /// The status now, and every change from here on (`changed`, `wait_for`).
    pub fn status(&self) -> tokio::sync::watch::Receiver<ReloadStatus> {
        self.status.clone()
    }
}

/// The reloads of one server, not yet running.
pub struct Reloader {
    policies: PolicyReload,
    certs: CertReload,
    status: tokio::sync::watch::Sender<ReloadStatus>,
    requests: Arc<Notify>,
}

impl Reloader {
    /// Reloads `source` into `live` (the set serving now was built from `config`, read with
    /// fingerprint `print` by [`policies::read`]) and the
    /// certificate through `certs` (serving `chain` now). Builds no thread and no watch yet.
    pub fn new(
        source: PolicySource,
        print: Fingerprint,
        config: &Config,
        live: Arc<ArcSwap<PolicySet>>,
        permits: Arc<Semaphore>,
        certs: CertReload,
        chain: Vec<CertificateDer<'static>>,
    ) -> Self {
        let status = ReloadStatus {
            policies: PolicyStatus {
                generation: Generation(1),
                failures: 0,
                last_installed: None,
                last_failure: None,
            },
            certificate: CertStatus {
                generation: Generation(1),
                failures: 0,
                chain: chain.into(),
                last_failure: None,
            },
        };
        Self {
            policies: PolicyReload::new(source, print, config, live, permits),
            certs,
            status: tokio::sync::watch::Sender::new(status),
            requests: Arc::new(Notify::new()),
        }
    }

    /// A handle for SIGHUP, metrics and tests.
    pub fn handle(&self) -> ReloadHandle {
        ReloadHandle {
            status: self.status.subscribe(),
            requests: Arc::clone(&self.requests),
        }
    }

    /// Starts watching and reloading; everything stops when the returned value is dropped.
    /// Must be called on a Tokio runtime.
    pub fn start(self) -> Reloading {
        let status = self.status;
        let certs = tokio::spawn(certificates(self.certs, status.clone()));
        let policies = tokio::spawn(policy_sets(self.policies, self.requests, status));
        Reloading {
            tasks: [certs, policies],
        }
    }
}

/// Reloads running; dropping it stops them.
pub struct Reloading {
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Reloading {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn certificates(certs: CertReload, status: tokio::sync::watch::Sender<ReloadStatus>) {
    let mut watch = Watch::new(certs.dirs());
    let certs = Arc::new(Mutex::new(certs));
    loop {
        let notice = watch.next().await;
        let certs = Arc::clone(&certs);
        let checked =
            tokio::task::spawn_blocking(move || certs.lock().unwrap_or_else(PoisonError::into_inner).check())
                .await
                .map_err(CertReloadError::Task)
                .and_then(|checked| checked);
        match checked {
            Ok(CertCheck::Unchanged) => {}
            Ok(CertCheck::Serving(chain)) => {
                status.send_modify(|s| {
                    s.certificate.generation = s.certificate.generation.next();
                    s.certificate.chain = chain.into();
                });
                let generation = status.borrow().certificate.generation.0;
                tracing::info!(generation, ?notice, "certificate reloaded; new handshakes use it");
            }
            Err(error) => {
                tracing::error!(error = %Chain(&error), ?notice, "certificate reload failed");
                let error = Arc::new(error);
                status.send_modify(|s| {
                    s.certificate.failures += 1;
                    s.certificate.last_failure = Some(error);
                });
            }
        }
    }
}

async fn policy_sets(
    mut policies: PolicyReload,
    requests: Arc<Notify>,
    status: tokio::sync::watch::Sender<ReloadStatus>,
) {
    // The built-in set has no files: only a request reloads it.
    let mut watch = (!policies.dirs().is_empty()).then(|| Watch::new(policies.dirs().to_vec()));
    loop {
        let trigger = tokio::select! {
            _ = async {
                match &mut watch {
                    Some(watch) => watch.next().await,
                    None => std::future::pending().await,
                }
            } => Trigger::Files,
            () = requests.notified() => Trigger::Request,
        };
        let span = tracing::info_span!("policy_reload", ?trigger);
        match policies.reload(trigger).instrument(span.clone()).await {
            Ok(None) => {}
            Ok(Some(installed)) => {
                if let Some(watch) = &mut watch {
                    watch.set_dirs(policies.dirs().to_vec());
                }
                let _entered = span.enter();
                tracing::info!(
                    config = %installed.origin,
                    policies = installed.policies,
                    took_ms = installed.took.as_millis() as u64,
                    generation = status.borrow().policies.generation.next().0,
                    ?trigger,
                    "policy set reloaded"
                );
                status.send_modify(|s| {
                    s.policies.generation = s.policies.generation.next();
                    s.policies.last_installed = Some(installed);
                });
            }
            Err(error) => {
                let _entered = span.enter();
                tracing::error!(error = %Chain(&error), ?trigger, "policy reload failed");
                let error = Arc::new(error);
                status.send_modify(|s| {
                    s.policies.failures += 1;
                    s.policies.last_failure = Some(error);
                });
            }
        }
    }
}

/// An error and its causes on one line, each cause only when the text so far does not
/// already say it (many errors here include their source's text).
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = self.0.to_string();
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let more = c.to_string();
            if !text.contains(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            cause = c.source();
        }
        f.write_str(&text)
    }
}
