//! What a cluster serves of what the audit needs: the workload kinds the policies understand
//! (built in, and the ML CRDs where they are installed) and the report kinds it may write.
//!
//! Found through the API server's discovery documents (`/api`, `/apis`, `/apis/<group>/<version>`)
//! for the groups named here only, so an aggregated API that is down elsewhere cannot fail the
//! audit. A kind whose group or resource is not served is "not installed", never an error.

use kube::Client;
use kube::discovery::{ApiGroup, ApiResource, Discovery, Scope};

/// The kinds whose objects carry a pod spec the policies read, by group: the same list as
/// `policies/default.yaml` and the webhook rules in `deploy/base/webhooks.yaml`.
pub const WORKLOADS: &[(&str, &[&str])] = &[
    ("", &["Pod", "PodTemplate", "ReplicationController"]),
    ("apps", &["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet"]),
    ("batch", &["Job", "CronJob"]),
    ("serving.kserve.io", &["InferenceService"]),
    ("kubeflow.org", &["PyTorchJob", "TFJob", "MPIJob", "XGBoostJob"]),
    ("ray.io", &["RayCluster", "RayJob", "RayService"]),
    ("jobset.x-k8s.io", &["JobSet"]),
];

/// A report format the audit can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// `wgpolicyk8s.io/v1alpha2` `PolicyReport`: what Kyverno and Kubewarden users read.
    WgPolicy,
    /// `openreports.io/v1alpha1` `Report`: the wg-policy format's successor.
    OpenReports,
}

impl ReportFormat {
    /// Every format, in the order they are written.
    pub const ALL: [Self; 2] = [Self::WgPolicy, Self::OpenReports];

    /// Group, version and kind of the format's objects.
    pub fn gvk(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::WgPolicy => ("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
            Self::OpenReports => ("openreports.io", "v1alpha1", "Report"),
        }
    }

    /// `<plural>.<group>/<version>`, for messages.
    pub fn describe(self) -> String {
        let (group, version, kind) = self.gvk();
        format!("{}s.{group}/{version}", kind.to_ascii_lowercase())
    }
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The API server's discovery documents could not be read.
    #[error("cannot read the API server's discovery documents")]
    Discovery(#[source] kube::Error),
}

/// What the cluster serves of what the audit needs.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// The workload kinds to list, at their preferred version.
    pub workloads: Vec<ApiResource>,
    /// Workload kinds whose group or resource the cluster does not serve, as `Kind.group`.
    pub not_installed: Vec<String>,
    /// The report formats whose CRD is installed at the version the audit writes.
    pub reports: Vec<(ReportFormat, ApiResource)>,
}

impl Served {
    /// Reads the discovery documents of the workload and report groups.
    pub async fn discover(client: &Client) -> Result<Self, DiscoveryError> {
        let groups: Vec<&str> = WORKLOADS
            .iter()
            .map(|(group, _)| *group)
            .chain(ReportFormat::ALL.iter().map(|f| f.gvk().0))
            .collect();
        let discovery = Discovery::new(client.clone())
            .filter(&groups)
            .run()
            .await
            .map_err(DiscoveryError::Discovery)?;
        Ok(Self::from_groups(|group| discovery.get(group)))
    }

    /// Picks what the audit needs out of the discovered groups.
    fn from_groups<'a>(get: impl Fn(&str) -> Option<&'a ApiGroup>) -> Self {
        let mut served = Self::default();
        for (group, kinds) in WORKLOADS {
            for kind in *kinds {
                let found = get(group).and_then(|g| namespaced_kind(g, kind));
                match found {
                    Some(resource) => served.workloads.push(resource),
                    None => served.not_installed.push(qualified(group, kind)),
                }
            }
        }
        for format in ReportFormat::ALL {
            let (group, version, kind) = format.gvk();
            let found = get(group).and_then(|g| {
                g.versioned_resources(version)
                    .into_iter()
                    .find(|(r, caps)| r.kind == kind && caps.scope == Scope::Namespaced)
            });
            if let Some((resource, _)) = found {
                served.reports.push((format, resource));
            }
        }
        served
    }
}

/// `kind` in `group` at the group's preferred version, else at its most stable one; only
/// namespaced kinds, since reports and namespaces are per namespace.
fn namespaced_kind(group: &ApiGroup, kind: &str) -> Option<ApiResource> {
    group
        .recommended_kind(kind)
        .or_else(|| {
            group
                .resources_by_stability()
                .into_iter()
                .find(|(r, _)| r.kind == kind)
        })
        .filter(|(_, caps)| caps.scope == Scope::Namespaced)
        .map(|(resource, _)| resource)
}

/// `Kind.group`, or `Kind` for the core group, as kubectl names resources.
pub fn qualified(group: &str, kind: &str) -> String {
    if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    }
}
