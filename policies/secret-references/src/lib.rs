//! `secret-references`: wires configured Secrets into pods, so that ML engineers do not have to.
//!
//! Two chores cause most "works on my laptop, fails on the cluster" reports for model images:
//! - an image from a private registry needs that registry's `imagePullSecrets` entry, or the Pod
//!   sits in `ImagePullBackOff` (often only in the namespace that was set up last);
//! - the model server needs the team's credentials (feature store, object storage, model
//!   registry tokens) from a Secret, and a forgotten `envFrom` surfaces as a crash deep inside
//!   the framework's start-up.
//!
//! The policy adds `imagePullSecrets: [{name}]` to each pod spec with an image (in any container
//! list) from a configured registry, and `envFrom: [{secretRef: {name}}]` to every regular
//! container (including KServe model containers; not init or ephemeral ones) of a pod in a
//! configured namespace. A reference already present by name is never duplicated. Pods and Jobs
//! are mutated on CREATE only (a running Pod's spec cannot gain either field, a Job's template is
//! immutable); other templates on CREATE and UPDATE. With nothing configured the policy is a no-op. It only references Secrets; it never
//! reads or creates them.

pub mod image;
pub mod settings;

use portcullis_policy_sdk::{
    ValidationRequest, ValidationResponse, Value, containers, describe_pod_spec, export_policy, json,
    pod_spec_pointers,
};
use serde_json::Map;

pub use settings::SecretReferencesSettings;

export_policy!(SecretReferencesSettings, validate);

/// Adds the configured Secret references; never rejects.
pub fn validate(request: &ValidationRequest<SecretReferencesSettings>) -> ValidationResponse {
    let review = &request.request;
    let kind = review.kind.kind.as_str();
    if !review.pod_specs_mutable() {
        return ValidationResponse::accept();
    }
    let namespace = review.effective_namespace();
    let mut object = review.object.clone();
    let outcome = reference(&request.settings, namespace, kind, &mut object);
    ValidationResponse::mutated_if(outcome.changed, object, outcome.warnings)
}

/// What [`reference`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether any reference was added.
    pub changed: bool,
    /// Fields that were not lists and so were left alone.
    pub warnings: Vec<String>,
}

/// Adds the references `settings` call for to every pod spec of `object`, a workload in
/// `namespace`. Idempotent: a second call on its own output adds nothing.
pub fn reference(
    settings: &SecretReferencesSettings,
    namespace: Option<&str>,
    kind: &str,
    object: &mut Value,
) -> Outcome {
    let mut outcome = Outcome::default();
    let env_secrets: &[String] = namespace
        .and_then(|ns| settings.env_from_secrets.get(ns))
        .map_or(&[], Vec::as_slice);
    if settings.image_pull_secrets.is_empty() && env_secrets.is_empty() {
        return outcome;
    }
    for location in pod_spec_pointers(kind, object) {
        let who = describe_pod_spec(kind, object, &location);
        let Some(pod_spec) = object.pointer_mut(&location.pointer) else {
            continue;
        };
        let pull_secrets = pull_secrets(settings, pod_spec);
        let regular: Vec<(String, String)> = containers(pod_spec)
            .into_iter()
            .filter(|c| c.list.is_regular())
            .map(|c| {
                (
                    c.list.pointer(c.index),
                    format!("{who}, {} \"{}\"", c.list, c.name),
                )
            })
            .collect();
        if let Some(spec) = pod_spec.as_object_mut() {
            for secret in &pull_secrets {
                outcome.changed |= add_named(spec, "imagePullSecrets", secret, &who, &mut outcome.warnings);
            }
        }
        for (pointer, who) in regular {
            let Some(container) = pod_spec.pointer_mut(&pointer).and_then(Value::as_object_mut) else {
                continue;
            };
            for secret in env_secrets {
                outcome.changed |= add_env_from(container, secret, &who, &mut outcome.warnings);
            }
        }
    }
    outcome
}

/// The pull secrets a pod spec's images need, each once, in the order their images appear.
fn pull_secrets(settings: &SecretReferencesSettings, pod_spec: &Value) -> Vec<String> {
    let mut secrets: Vec<String> = Vec::new();
    for c in containers(pod_spec) {
        let host = c
            .container
            .get("image")
            .and_then(Value::as_str)
            .and_then(image::registry_host);
        if let Some(secret) = host.and_then(|h| settings.pull_secret_for(&h))
            && !secrets.iter().any(|s| s == secret)
        {
            secrets.push(secret.to_string());
        }
    }
    secrets
}

/// The list at `field` of `map`, created when absent or null; `None` (with a warning) when it is
/// something else.
fn list_mut<'a>(
    map: &'a mut Map<String, Value>,
    field: &str,
    who: &str,
    warnings: &mut Vec<String>,
) -> Option<&'a mut Vec<Value>> {
    let list = map.entry(field).or_insert_with(|| Value::Array(Vec::new()));
    if list.is_null() {
        *list = Value::Array(Vec::new());
    }
    if !list.is_array() {
        let warning = format!("{who}: {field} is not a list, so no Secret reference was added");
        if !warnings.contains(&warning) {
            warnings.push(warning);
        }
    }
    list.as_array_mut()
}

/// Appends `{name: secret}` to the `field` list unless an entry already has that name.
fn add_named(
    spec: &mut Map<String, Value>,
    field: &str,
    secret: &str,
    who: &str,
    warnings: &mut Vec<String>,
) -> bool {
    let Some(list) = list_mut(spec, field, who, warnings) else {
        return false;
    };
    if list
        .iter()
        .any(|entry| entry.get("name").and_then(Value::as_str) == Some(secret))
    {
        return false;
    }
    list.push(json!({"name": secret}));
    true
}

/// Appends `{secretRef: {name: secret}}` to `envFrom` unless an entry already references that
/// Secret (with whatever prefix or optional flag the user chose).
fn add_env_from(
    container: &mut Map<String, Value>,
    secret: &str,
    who: &str,
    warnings: &mut Vec<String>,
) -> bool {
    let Some(list) = list_mut(container, "envFrom", who, warnings) else {
        return false;
    };
    let present = list
        .iter()
        .any(|entry| entry.pointer("/secretRef/name").and_then(Value::as_str) == Some(secret));
    if present {
        return false;
    }
    list.push(json!({"secretRef": {"name": secret}}));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(value: Value) -> SecretReferencesSettings {
        serde_json::from_value(value).expect("settings")
    }

    fn configured() -> SecretReferencesSettings {
        settings(json!({
            "image_pull_secrets": {"registry.acme.io": "acme-pull", "ghcr.io": "ghcr-pull"},
            "env_from_secrets": {"ml-prod": ["model-registry-token", "feature-store-creds"]}
        }))
    }

    /// Applies twice, asserting the second pass changes nothing, and returns the first result.
    fn referenced(
        s: &SecretReferencesSettings,
        ns: Option<&str>,
        kind: &str,
        object: &Value,
    ) -> (Value, Outcome) {
        let mut once = object.clone();
        let outcome = reference(s, ns, kind, &mut once);
        let mut twice = once.clone();
        assert!(
            !reference(s, ns, kind, &mut twice).changed,
            "second pass changed {once}"
        );
        assert_eq!(once, twice);
        (once, outcome)
    }

    fn deployment(spec: Value) -> Value {
        json!({"kind": "Deployment", "metadata": {"name": "llm-inference"},
               "spec": {"replicas": 2, "template": {"spec": spec}}})
    }

    #[test]
    fn nothing_configured_changes_nothing() {
        let d = deployment(json!({"containers": [{"name": "m", "image": "registry.acme.io/m:1"}]}));
        let (out, outcome) = referenced(
            &SecretReferencesSettings::default(),
            Some("ml-prod"),
            "Deployment",
            &d,
        );
        assert_eq!(outcome, Outcome::default());
        assert_eq!(out, d);
    }

    #[test]
    fn pull_secrets_once_per_registry_and_env_from_per_regular_container() {
        let d = deployment(json!({
            "initContainers": [{"name": "fetch", "image": "ghcr.io/acme/fetch:1"}],
            "containers": [
                {"name": "vllm", "image": "registry.acme.io/llm/vllm:1.4"},
                {"name": "router", "image": "registry.acme.io/llm/router:1.4",
                 "envFrom": [{"prefix": "MR_", "secretRef": {"name": "model-registry-token"}}]},
                {"name": "log-shipper", "image": "fluent/fluent-bit:3.0"}]}));
        let (out, outcome) = referenced(&configured(), Some("ml-prod"), "Deployment", &d);
        assert!(outcome.changed);
        let spec = &out["spec"]["template"]["spec"];
        assert_eq!(
            spec["imagePullSecrets"],
            json!([{"name": "acme-pull"}, {"name": "ghcr-pull"}])
        );
        let both = json!([{"secretRef": {"name": "model-registry-token"}},
                          {"secretRef": {"name": "feature-store-creds"}}]);
        assert_eq!(spec["containers"][0]["envFrom"], both);
        assert_eq!(
            spec["containers"][1]["envFrom"],
            json!([{"prefix": "MR_", "secretRef": {"name": "model-registry-token"}},
                   {"secretRef": {"name": "feature-store-creds"}}])
        );
        assert_eq!(spec["containers"][2]["envFrom"], both);
        assert!(spec["initContainers"][0].get("envFrom").is_none());
    }

    #[test]
    fn other_namespaces_and_public_images_are_untouched() {
        let d = deployment(json!({"containers": [{"name": "m", "image": "pytorch/pytorch:2.3.0"}]}));
        let (out, outcome) = referenced(&configured(), Some("ml-research"), "Deployment", &d);
        assert!(!outcome.changed);
        assert_eq!(out, d);
        let (_, outcome) = referenced(&configured(), None, "Deployment", &d);
        assert!(!outcome.changed);
    }

    #[test]
    fn existing_references_are_kept_and_not_duplicated() {
        let d = deployment(json!({
            "imagePullSecrets": [{"name": "acme-pull"}, {"name": "legacy"}],
            "containers": [{"name": "m", "image": "registry.acme.io/m:1"}]}));
        let (out, outcome) = referenced(&configured(), Some("ml-research"), "Deployment", &d);
        assert!(!outcome.changed);
        assert_eq!(out, d);
    }

    #[test]
    fn non_list_fields_are_left_alone_with_one_warning() {
        let d = deployment(json!({"imagePullSecrets": "acme-pull",
            "containers": [{"name": "m", "image": "registry.acme.io/m:1", "envFrom": {}}]}));
        let (out, outcome) = referenced(&configured(), Some("ml-prod"), "Deployment", &d);
        assert_eq!(out, d);
        assert_eq!(
            outcome.warnings,
            [
                "Deployment llm-inference: imagePullSecrets is not a list, so no Secret reference was added",
                "Deployment llm-inference, container \"m\": envFrom is not a list, so no Secret reference was added"
            ]
        );
    }

    #[test]
    fn pod_updates_are_not_mutated() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml-prod"},
            "spec": {"containers": [{"name": "c", "image": "registry.acme.io/m:1"}]}});
        let s = json!({"image_pull_secrets": {"registry.acme.io": "acme-pull"}});
        for (operation, mutated) in [("CREATE", true), ("UPDATE", false), ("DELETE", false)] {
            let request: ValidationRequest<SecretReferencesSettings> =
                serde_json::from_value(json!({"request": {
                    "uid": "u", "kind": {"version": "v1", "kind": "Pod"},
                    "operation": operation, "object": pod}, "settings": s}))
                .expect("valid request");
            let response = validate(&request);
            assert!(response.accepted);
            assert_eq!(response.mutated_object.is_some(), mutated, "{operation}");
        }
    }

    #[test]
    fn fixtures() {
        portcullis_policy_sdk::testing::check_fixtures(env!("CARGO_MANIFEST_DIR"), validate);
    }
}
