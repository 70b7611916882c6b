//! `readiness-probe`: serving containers must say when they are ready.
//!
//! A model server is "running" long before it can answer: it is still downloading weights,
//! loading them onto the GPU, warming up. Without a readiness probe Kubernetes routes Service
//! traffic to it the moment the process starts, so every rollout and scale-up returns errors
//! or timeouts. This policy requires a `readinessProbe` on every regular container (and KServe
//! model container) of long-running kinds, and warns about the related crash loop: a liveness
//! probe that starts checking before the model can possibly be ready.
//!
//! Not checked: init containers and ephemeral containers (they cannot have readiness probes),
//! and sidecar init containers (`restartPolicy: Always`): a log or metrics sidecar without a
//! probe counts as ready once started, and the pod's readiness is the model container's to
//! report. Sidecars that do declare probes get the liveness-delay warning like any container.
//! Only long-running kinds are checked; batch kinds never are. A Pod owned by a batch
//! controller (a Job, an Argo Workflow, a Spark application, a Tekton TaskRun, a Ray cluster,
//! ...) is exempt: nothing routes traffic to a training run. That exemption is by owner
//! reference and for Pods only; any other object is judged by its own kind.

pub mod settings;

use portcullis_policy_sdk::{
    ContainerRef, ValidationRequest, ValidationResponse, Value, containers, describe, export_policy,
    pod_specs,
};

pub use settings::Settings;

/// Requires readiness probes on serving containers; warns on liveness delays shorter than
/// readiness delays.
pub fn validate(request: &ValidationRequest<Settings>) -> ValidationResponse {
    let settings = &request.settings;
    let gvk = &request.request.kind;
    let kind = gvk.kind.as_str();
    let object = &request.request.object;
    let pod = gvk.group.is_empty() && kind == "Pod";
    if !settings.checks(kind) || (pod && owned_by_batch(settings, object)) {
        return ValidationResponse::accept();
    }
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    for (location, spec) in pod_specs(kind, object) {
        for container in containers(spec) {
            let prefix = || describe(kind, object, &location, &container);
            if needs_readiness_probe(&container) && container.container.get("readinessProbe").is_none() {
                violations.push(format!(
                    "{}: has no readinessProbe, so Services send it traffic before the model is loaded; add one (e.g. httpGet /ready)",
                    prefix()
                ));
            }
            if let Some(warning) = liveness_before_readiness(container.container) {
                warnings.push(format!("{}: {warning}", prefix()));
            }
        }
    }
    let mut response = ValidationResponse::reject_all(&violations);
    response.warnings = warnings;
    response
}

/// Regular containers (including KServe model containers) serve traffic and need a probe;
/// init containers (sidecars included) and ephemeral containers do not.
fn needs_readiness_probe(container: &ContainerRef) -> bool {
    container.list.is_regular()
}

/// Whether a Pod belongs to a batch run: one of its owner references names an exempt owner.
/// Controllers set the reference when they create the Pod. Unlike a label it is not free to
/// invent: the garbage collector deletes a Pod whose owners do not exist (and drops a dangling
/// reference beside a real one).
pub fn owned_by_batch(settings: &Settings, pod: &Value) -> bool {
    let owners = pod.pointer("/metadata/ownerReferences").and_then(Value::as_array);
    owners.into_iter().flatten().any(|owner| {
        let field = |name: &str| owner.get(name).and_then(Value::as_str);
        match (field("apiVersion"), field("kind")) {
            (Some(api_version), Some(kind)) => settings.is_exempt_owner(api_version, kind),
            _ => false,
        }
    })
}

/// The crash-loop warning: liveness starts checking before readiness can pass. A startupProbe
/// holds liveness back until it succeeds, so it defuses the problem.
pub fn liveness_before_readiness(container: &Value) -> Option<String> {
    let liveness = container.get("livenessProbe")?;
    if container.get("startupProbe").is_some() {
        return None;
    }
    let delay = |probe: Option<&Value>| {
        probe
            .and_then(|p| p.get("initialDelaySeconds"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let live = delay(Some(liveness));
    let ready = delay(container.get("readinessProbe"));
    (live < ready).then(|| {
        format!(
            "livenessProbe starts at {live}s, before readinessProbe at {ready}s: a slow model load crash-loops; add a startupProbe covering the load"
        )
    })
}

export_policy!(Settings, validate);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::json;

    #[test]
    fn liveness_delay_warning() {
        let probe =
            |delay: i64| json!({"httpGet": {"path": "/health", "port": 8080}, "initialDelaySeconds": delay});
        let both = |live: Value, ready: Value| json!({"livenessProbe": live, "readinessProbe": ready});
        let w = liveness_before_readiness(&both(probe(10), probe(60))).expect("warns");
        assert_eq!(
            w,
            "livenessProbe starts at 10s, before readinessProbe at 60s: a slow model load \
             crash-loops; add a startupProbe covering the load"
        );
        assert_eq!(liveness_before_readiness(&both(probe(60), probe(60))), None);
        assert_eq!(liveness_before_readiness(&both(probe(90), probe(30))), None);
        let missing_delay = both(json!({"tcpSocket": {"port": 8080}}), probe(5));
        assert!(
            liveness_before_readiness(&missing_delay)
                .expect("0 < 5")
                .contains("at 0s")
        );
        let mut with_startup = both(probe(10), probe(60));
        with_startup["startupProbe"] = probe(0);
        assert_eq!(liveness_before_readiness(&with_startup), None);
        assert_eq!(
            liveness_before_readiness(&json!({"readinessProbe": probe(30)})),
            None
        );
    }

    #[test]
    fn batch_ownership_is_by_owner_reference() {
        let s = Settings::default();
        let owned = |api_version: &str, kind: &str| {
            json!({"metadata": {"ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "u0"},
                {"apiVersion": api_version, "kind": kind, "name": "x", "uid": "u1", "controller": true}]}})
        };
        assert!(owned_by_batch(&s, &owned("batch/v1", "Job")));
        assert!(owned_by_batch(&s, &owned("kubeflow.org/v1", "PyTorchJob")));
        assert!(owned_by_batch(&s, &owned("argoproj.io/v1alpha1", "Workflow")));
        assert!(!owned_by_batch(&s, &owned("apps/v1", "ReplicaSet")));
        assert!(!owned_by_batch(&s, &owned("example.com/v1", "Job")));
        // Labels are not ownership: anyone can write them.
        assert!(!owned_by_batch(
            &s,
            &json!({"metadata": {"labels": {"batch.kubernetes.io/job-name": "t", "job-name": "t"}}})
        ));
        assert!(!owned_by_batch(
            &s,
            &json!({"metadata": {"ownerReferences": [{"kind": "Job"}, "Job", null]}})
        ));
    }

    fn review(kind: Value, object: Value) -> ValidationResponse {
        let request = json!({"request": {"uid": "u", "kind": kind, "operation": "CREATE",
                                         "object": object}});
        validate(&serde_json::from_value(request).expect("request"))
    }

    /// The owner exemption is for Pods: a Deployment that a batch controller happens to own
    /// (an Argo resource step, a Job-owned helper) still serves traffic and is checked.
    #[test]
    fn owner_exemption_applies_to_pods_only() {
        let owners = json!([{"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                             "name": "wf", "uid": "u1", "controller": true}]);
        let container = json!([{"name": "model", "image": "m:1"}]);
        let pod = json!({"metadata": {"name": "wf-step", "ownerReferences": owners},
                         "spec": {"containers": container}});
        assert!(review(json!({"version": "v1", "kind": "Pod"}), pod.clone()).accepted);
        let deployment = json!({"metadata": {"name": "wf-server", "ownerReferences": owners},
                                "spec": {"template": {"spec": {"containers": container}}}});
        let response = review(
            json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
            deployment,
        );
        assert!(!response.accepted);
        assert_eq!(
            response.message.as_deref(),
            Some(
                "Deployment wf-server, container \"model\": has no readinessProbe, so Services send it \
                 traffic before the model is loaded; add one (e.g. httpGet /ready)"
            )
        );
        // A kind named Pod in another group is not a Pod.
        let custom = review(
            json!({"group": "example.com", "version": "v1", "kind": "Pod"}),
            pod,
        );
        assert!(!custom.accepted);
    }

    #[test]
    fn fixtures() {
        portcullis_policy_sdk::testing::check_fixtures(env!("CARGO_MANIFEST_DIR"), validate);
    }
}
