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
//! Batch kinds, and Pods owned by them, are exempt: nothing routes traffic to a training run.

pub mod settings;

use portcullis_policy_sdk::{
    ContainerRef, ValidationRequest, ValidationResponse, Value, containers, describe, export_policy,
    pod_specs,
};

pub use settings::Settings;

/// Labels the Job controller puts on the Pods it creates (current and legacy).
const JOB_NAME_LABELS: &[&str] = &["batch.kubernetes.io/job-name", "job-name"];

/// Requires readiness probes on serving containers; warns on liveness delays shorter than
/// readiness delays.
pub fn validate(request: &ValidationRequest<Settings>) -> ValidationResponse {
    let settings = &request.settings;
    let kind = request.request.kind.kind.as_str();
    let object = &request.request.object;
    if !settings.checks(kind) || owned_by_batch(settings, object) {
        return ValidationResponse::accept();
    }
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    for (location, spec) in pod_specs(kind, object) {
        for container in containers(spec) {
            let prefix = || describe(kind, object, &location, &container);
            if needs_readiness_probe(&container) && container.container.get("readinessProbe").is_none() {
                violations.push(format!(
                    "{}: has no readinessProbe; without one, Services send requests to the pod as soon as the process starts, before the model is loaded, so every rollout and scale-up serves errors. Add a readinessProbe that succeeds only once the model is ready (e.g. httpGet on the server's /ready or /v2/health/ready endpoint)",
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

/// Whether a Pod-like object belongs to a batch run: an owner of an exempt kind, or a Job-name
/// label.
pub fn owned_by_batch(settings: &Settings, object: &Value) -> bool {
    let owners = object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array);
    let owned = owners.into_iter().flatten().any(|owner| {
        owner
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|kind| settings.is_exempt(kind))
    });
    let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
    let labelled = labels.is_some_and(|labels| JOB_NAME_LABELS.iter().any(|l| labels.contains_key(*l)));
    owned || labelled
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
            "livenessProbe initialDelaySeconds ({live}) is shorter than readinessProbe initialDelaySeconds ({ready}): if loading the model takes longer than the liveness delay plus failureThreshold × periodSeconds, the kubelet kills the container before it ever becomes ready and it crash-loops. Add a startupProbe that covers model loading, or raise the liveness initialDelaySeconds"
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
        assert!(
            w.contains("(10)") && w.contains("(60)") && w.contains("startupProbe"),
            "{w}"
        );
        assert_eq!(liveness_before_readiness(&both(probe(60), probe(60))), None);
        assert_eq!(liveness_before_readiness(&both(probe(90), probe(30))), None);
        let missing_delay = both(json!({"tcpSocket": {"port": 8080}}), probe(5));
        assert!(
            liveness_before_readiness(&missing_delay)
                .expect("0 < 5")
                .contains("(0)")
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
    fn batch_ownership() {
        let s = Settings::default();
        let owned = |kind: &str| json!({"metadata": {"ownerReferences": [{"kind": kind, "name": "x", "controller": true}]}});
        assert!(owned_by_batch(&s, &owned("Job")));
        assert!(owned_by_batch(&s, &owned("PyTorchJob")));
        assert!(!owned_by_batch(&s, &owned("ReplicaSet")));
        assert!(owned_by_batch(
            &s,
            &json!({"metadata": {"labels": {"job-name": "train"}}})
        ));
        assert!(owned_by_batch(
            &s,
            &json!({"metadata": {"labels": {"batch.kubernetes.io/job-name": "t"}}})
        ));
        assert!(!owned_by_batch(
            &s,
            &json!({"metadata": {"labels": {"app": "fraud"}}})
        ));
    }

    #[test]
    fn fixtures() {
        portcullis_policy_sdk::testing::check_fixtures(env!("CARGO_MANIFEST_DIR"), validate);
    }
}
