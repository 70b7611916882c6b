//! Settings of the `readiness-probe` policy: which kinds are long-running, and which owners make
//! a Pod batch work.

use serde::Deserialize;

/// Kinds whose containers must have a readiness probe, and owners whose Pods never need one.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Kinds that serve traffic until deleted, so Services route to them: their regular
    /// containers need a readiness probe. Any other kind is not checked.
    pub long_running_kinds: Vec<String>,
    /// Owners whose Pods run to completion and receive no Service traffic. Applies to Pods only:
    /// a Pod with an owner reference to one of them is not checked.
    pub exempt_pod_owners: Vec<PodOwner>,
}

/// A kind of object that owns batch Pods: an API group and a kind, matched against each entry
/// of a Pod's `metadata.ownerReferences` (the group taken from its `apiVersion`, any version).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PodOwner {
    /// API group, `""` (the default) for the core group (`apiVersion: v1`).
    #[serde(default)]
    pub group: String,
    /// Kind, e.g. `Job`.
    pub kind: String,
}

impl PodOwner {
    fn new(group: &str, kind: &str) -> Self {
        PodOwner {
            group: group.to_string(),
            kind: kind.to_string(),
        }
    }

    /// Whether an owner reference with `api_version` (`batch/v1`, `v1`) and `kind` is this
    /// owner.
    pub fn matches(&self, api_version: &str, kind: &str) -> bool {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        self.kind == kind && self.group == group
    }
}

impl Default for Settings {
    fn default() -> Self {
        let strings = |kinds: &[&str]| kinds.iter().map(|k| k.to_string()).collect();
        Self {
            long_running_kinds: strings(&[
                "Pod",
                "Deployment",
                "ReplicaSet",
                "StatefulSet",
                "DaemonSet",
                "ReplicationController",
                "InferenceService",
                "RayService",
                "PodTemplate",
            ]),
            exempt_pod_owners: default_pod_owners(),
        }
    }
}

/// The owners that batch controllers write into the Pods they create (each checked against the
/// controller's source):
/// - `batch/Job`: the Job controller (kubernetes/kubernetes pkg/controller/job/job_controller.go,
///   `NewControllerRef(job, ...)`); CronJobs, JobSets, KubeRay's RayJob submitter and MPIJob v2
///   launchers all run their Pods through Jobs;
/// - `argoproj.io/Workflow`: Argo Workflows' step Pods (workflow/controller/workflowpod.go);
/// - `sparkoperator.k8s.io/SparkApplication`: the Spark operator's driver Pod, and core `Pod`:
///   Spark executors, whose owner is their driver Pod (with or without the operator);
/// - `tekton.dev/TaskRun`: Tekton's step Pods (pkg/pod/pod.go); a PipelineRun owns TaskRuns,
///   never Pods;
/// - `ray.io/RayCluster`: KubeRay's head and worker Pods (raycluster_controller.go); a RayJob
///   owns a RayCluster and a Job, never Pods. A RayService's clusters are RayClusters too: their
///   template is checked on the RayService itself;
/// - `kubeflow.org` PyTorchJob, TFJob, MPIJob, XGBoostJob: the training operators' replicas;
/// - `batch.volcano.sh/Job`: Volcano's Pods.
pub fn default_pod_owners() -> Vec<PodOwner> {
    [
        ("batch", "Job"),
        ("argoproj.io", "Workflow"),
        ("sparkoperator.k8s.io", "SparkApplication"),
        ("", "Pod"),
        ("tekton.dev", "TaskRun"),
        ("ray.io", "RayCluster"),
        ("kubeflow.org", "PyTorchJob"),
        ("kubeflow.org", "TFJob"),
        ("kubeflow.org", "MPIJob"),
        ("kubeflow.org", "XGBoostJob"),
        ("batch.volcano.sh", "Job"),
    ]
    .into_iter()
    .map(|(group, kind)| PodOwner::new(group, kind))
    .collect()
}

impl Settings {
    /// Whether objects of `kind` are checked at all.
    pub fn checks(&self, kind: &str) -> bool {
        self.long_running_kinds.iter().any(|k| k == kind)
    }

    /// Whether an owner reference with `api_version` and `kind` makes a Pod batch work.
    pub fn is_exempt_owner(&self, api_version: &str, kind: &str) -> bool {
        self.exempt_pod_owners
            .iter()
            .any(|o| o.matches(api_version, kind))
    }
}

impl portcullis_policy_sdk::Settings for Settings {
    fn validate(&self) -> Result<(), String> {
        if let Some(bad) = self.long_running_kinds.iter().find(|k| !is_kind_name(k)) {
            return Err(format!(
                "long_running_kinds: \"{bad}\" is not a Kubernetes kind (an upper-case letter followed by letters and digits)"
            ));
        }
        for owner in &self.exempt_pod_owners {
            if !is_kind_name(&owner.kind) {
                return Err(format!(
                    "exempt_pod_owners: kind \"{}\" is not a Kubernetes kind",
                    owner.kind
                ));
            }
            if !is_group_name(&owner.group) {
                return Err(format!(
                    "exempt_pod_owners: group \"{}\" of {} is not an API group (\"\" for core, \
                     else a lower-case DNS name such as batch or ray.io; no version)",
                    owner.group, owner.kind
                ));
            }
        }
        Ok(())
    }
}

fn is_kind_name(kind: &str) -> bool {
    let mut chars = kind.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// `""`, or dot-separated labels of lower-case letters, digits and inner `-`.
fn is_group_name(group: &str) -> bool {
    group.is_empty()
        || group.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::Settings as _;

    #[test]
    fn defaults_are_valid_and_name_the_batch_owners() {
        let s = Settings::default();
        assert_eq!(s.validate(), Ok(()));
        assert!(s.checks("Deployment") && s.checks("InferenceService") && s.checks("Pod"));
        assert!(!s.checks("Job") && !s.checks("PyTorchJob") && !s.checks("RayCluster"));
        for (api_version, kind) in [
            ("batch/v1", "Job"),
            ("argoproj.io/v1alpha1", "Workflow"),
            ("sparkoperator.k8s.io/v1beta2", "SparkApplication"),
            ("v1", "Pod"),
            ("tekton.dev/v1", "TaskRun"),
            ("tekton.dev/v1beta1", "TaskRun"),
            ("ray.io/v1", "RayCluster"),
            ("kubeflow.org/v1", "PyTorchJob"),
            ("batch.volcano.sh/v1alpha1", "Job"),
        ] {
            assert!(s.is_exempt_owner(api_version, kind), "{api_version} {kind}");
        }
        for (api_version, kind) in [
            ("apps/v1", "ReplicaSet"),
            ("apps/v1", "StatefulSet"),
            // A kind matches only in its group.
            ("example.com/v1", "Job"),
            ("v1", "Job"),
            ("serving.example.io/v1", "Workflow"),
            // Never the owner of a Pod, so not listed.
            ("tekton.dev/v1", "PipelineRun"),
            ("ray.io/v1", "RayJob"),
        ] {
            assert!(!s.is_exempt_owner(api_version, kind), "{api_version} {kind}");
        }
    }

    #[test]
    fn malformed_kinds_and_groups_are_rejected() {
        let cases = [
            (
                json_settings(r#"{"long_running_kinds": ["deployment"]}"#),
                "long_running_kinds: \"deployment\"",
            ),
            (
                json_settings(r#"{"exempt_pod_owners": [{"group": "batch", "kind": "job"}]}"#),
                "exempt_pod_owners: kind \"job\"",
            ),
            (
                json_settings(r#"{"exempt_pod_owners": [{"group": "batch/v1", "kind": "Job"}]}"#),
                "exempt_pod_owners: group \"batch/v1\" of Job",
            ),
            (
                json_settings(r#"{"exempt_pod_owners": [{"group": "Ray.io", "kind": "RayCluster"}]}"#),
                "group \"Ray.io\"",
            ),
        ];
        for (settings, message) in cases {
            let e = settings.validate().expect_err("invalid");
            assert!(e.contains(message), "{e}");
        }
        assert!(serde_json::from_str::<Settings>(r#"{"exempt_kinds": ["Job"]}"#).is_err());
        assert!(
            serde_json::from_str::<Settings>(r#"{"exempt_pod_owners": [{"kind": "Job", "version": "v1"}]}"#)
                .is_err()
        );
    }

    #[test]
    fn partial_settings_keep_the_other_default() {
        let s = json_settings(r#"{"long_running_kinds": ["RayCluster"]}"#);
        assert!(s.checks("RayCluster") && !s.checks("Deployment"));
        assert!(s.is_exempt_owner("batch/v1", "Job"));
        let s = json_settings(r#"{"exempt_pod_owners": [{"kind": "Pod"}]}"#);
        assert!(s.checks("Deployment"));
        assert!(s.is_exempt_owner("v1", "Pod") && !s.is_exempt_owner("batch/v1", "Job"));
    }

    fn json_settings(text: &str) -> Settings {
        serde_json::from_str(text).expect("settings deserialise")
    }
}
