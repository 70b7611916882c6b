//! `portcullis audit`: the policies' verdict on what already runs in a cluster.
//!
//! The kube client lists every workload kind the cluster serves ([`kinds`]), page by page
//! ([`list`]); each page is judged while the next is fetched, every object as if it were
//! submitted today ([`judge`]), on as many threads as there are cores. The result is shown as a
//! table or JSON ([`render`]) and, on request, written back as one PolicyReport per object
//! ([`reports`]). Only reading the cluster and writing reports touch the network; the policies
//! run exactly as `serve` and `check` run them.

pub mod judge;
pub mod kinds;
pub mod list;
pub mod progress;
pub mod render;
pub mod reports;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::policy::PolicySet;
use judge::{Audited, Judged, Status, Unjudged};
use kinds::{DiscoveryError, Served};
use list::{ChunkSize, Forbidden, ListError, Listed, Scope};
use progress::Progress;
use reports::{ReportError, Written};

/// Which namespaces to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// Every namespace (`--all-namespaces`).
    All,
    /// These (`--namespace`, repeatable).
    Given(Vec<String>),
    /// The kubeconfig context's namespace, as kubectl defaults to.
    ContextDefault,
}

/// How to reach the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// A kubeconfig file; default `$KUBECONFIG`, `~/.kube/config`, then the in-cluster
    /// service account.
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context; default the current one.
    pub context: Option<String>,
    /// Which namespaces.
    pub namespaces: Namespaces,
}

/// Why the audit could not run.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The kubeconfig file could not be read or does not name a usable context.
    #[error("cannot load the kubeconfig")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    /// Neither a kubeconfig nor an in-cluster service account was found.
    #[error("cannot find a kubeconfig or an in-cluster service account")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration (TLS material, proxy).
    #[error("cannot create the Kubernetes client")]
    Client(#[source] kube::Error),
    /// Discovery failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// Listing failed other than by a 403.
    #[error(transparent)]
    List(#[from] ListError),
    /// Reports were asked for but no report CRD is served.
    #[error(
        "--write-reports: the cluster serves neither {} nor {}; install one of the CRDs",
        kinds::ReportFormat::WgPolicy.describe(),
        kinds::ReportFormat::OpenReports.describe()
    )]
    NoReportKind,
    /// The judging thread panicked.
    #[error("the judging of listed objects failed")]
    Judging(#[source] tokio::task::JoinError),
}

/// The whole audit.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Audit {
    /// Every object listed and judged, in listing order.
    pub objects: Vec<Audited>,
    /// Objects that could not be judged.
    pub unjudged: Vec<Unjudged>,
    /// Listings the API server refused.
    pub forbidden: Vec<Forbidden>,
    /// Workload kinds the cluster does not serve, as `Kind.group`.
    pub not_installed: Vec<String>,
}

impl Audit {
    /// Objects with at least one finding of `status` (as their worst).
    pub fn count(&self, status: Status) -> usize {
        self.objects.iter().filter(|o| o.result == status).count()
    }

    /// Whether the audit found a violation or a policy error, or could not see everything.
    pub fn failed(&self) -> bool {
        self.count(Status::Fail) > 0
            || self.count(Status::Error) > 0
            || !self.unjudged.is_empty()
            || !self.forbidden.is_empty()
    }
}

/// A connected cluster and what it serves.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    served: Served,
    scope: Scope,
}

/// Builds the client `connection` describes and reads the cluster's discovery documents.
pub async fn connect(connection: &Connection) -> Result<Cluster, AuditError> {
    let options = KubeConfigOptions {
        context: connection.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&connection.kubeconfig, &connection.context) {
        (Some(path), _) => {
            let file = Kubeconfig::read_from(path).map_err(AuditError::Kubeconfig)?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(AuditError::Kubeconfig)?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(AuditError::Kubeconfig)?,
        (None, None) => Config::infer().await.map_err(AuditError::Infer)?,
    };
    let scope = match &connection.namespaces {
        Namespaces::All => Scope::AllNamespaces,
        Namespaces::Given(namespaces) => Scope::Namespaces(namespaces.clone()),
        Namespaces::ContextDefault => Scope::Namespaces(vec![config.default_namespace.clone()]),
    };
    let client = Client::try_from(config).map_err(AuditError::Client)?;
    let served = Served::discover(&client).await?;
    tracing::info!(
        kinds = served.workloads.len(),
        not_installed = served.not_installed.len(),
        report_kinds = served.reports.len(),
        "discovered"
    );
    Ok(Cluster {
        client,
        served,
        scope,
    })
}

impl Cluster {
    /// What the cluster serves.
    pub fn served(&self) -> &Served {
        &self.served
    }

    /// Fails unless a report kind is served: checked before listing, so that a periodic audit
    /// that cannot write is noticed at once.
    pub fn require_reports(&self) -> Result<(), AuditError> {
        if self.served.reports.is_empty() {
            return Err(AuditError::NoReportKind);
        }
        Ok(())
    }

    /// Lists and judges every workload in scope against `set`, on `workers` threads.
    pub async fn audit(
        &self,
        set: Arc<PolicySet>,
        chunk: ChunkSize,
        workers: NonZeroUsize,
        progress: Progress,
    ) -> Result<Audit, AuditError> {
        let (pages, mut received) = mpsc::channel::<Listed>(2);
        let not_installed = self.served.not_installed.clone();
        let judging = tokio::task::spawn_blocking(move || {
            let mut audit = Audit {
                not_installed,
                ..Audit::default()
            };
            while let Some(listed) = received.blocking_recv() {
                match listed {
                    Listed::Forbidden(forbidden) => audit.forbidden.push(forbidden),
                    Listed::Page(page) => {
                        let what = kinds::qualified(&page.resource.group, &page.resource.kind);
                        progress.listed(&what, page.objects.len(), page.remaining);
                        for outcome in judge_page(&set, &page.objects, workers, &progress) {
                            match outcome {
                                Judged::Audited(audited) => audit.objects.push(audited),
                                Judged::Unjudged(unjudged) => audit.unjudged.push(unjudged),
                            }
                        }
                    }
                }
            }
            progress.finish();
            audit
        });
        let listed = list::list_all(&self.client, &self.served.workloads, &self.scope, chunk, &pages).await;
        drop(pages);
        let audit = judging.await.map_err(AuditError::Judging)?;
        listed?;
        tracing::info!(
            objects = audit.objects.len(),
            failing = audit.count(Status::Fail),
            errors = audit.count(Status::Error),
            forbidden = audit.forbidden.len(),
            "audited"
        );
        Ok(audit)
    }

    /// Writes `audit` as reports, in every report format the cluster serves.
    pub async fn write_reports(
        &self,
        audit: &Audit,
        chunk: ChunkSize,
    ) -> Result<Vec<(kinds::ReportFormat, Written)>, ReportError> {
        reports::write(
            &self.client,
            &self.served.reports,
            &self.scope,
            chunk,
            &audit.objects,
        )
        .await
    }
}

/// Judges a page on up to `workers` threads, keeping its order.
fn judge_page(set: &PolicySet, objects: &[Value], workers: NonZeroUsize, progress: &Progress) -> Vec<Judged> {
    let per_thread = objects.len().div_ceil(workers.get()).max(1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = objects
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|object| {
                            let outcome = judge::judge(set, object);
                            progress.judged(1);
                            outcome
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}
