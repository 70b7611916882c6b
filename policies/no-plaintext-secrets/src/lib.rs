//! `no-plaintext-secrets`: credentials must not be written into manifests.
//!
//! `env: [{name: OPENAI_API_KEY, value: sk-...}]` puts the key in the Deployment itself: in
//! Git, in every `kubectl get -o yaml`, in the API server's audit log and in anyone's hands
//! who can read workloads in the namespace. This policy denies an env var whose name looks like
//! a credential (see [`name`]) and that carries a literal, non-empty `value`, in every container
//! of every pod spec. Messages name the variable and the container but never echo the value.
//!
//! A value made only of `$(VAR)` references is not a literal: Kubernetes expands it from other
//! variables (which may themselves come from a Secret), so it is not flagged.

pub mod name;
pub mod settings;

use portcullis_policy_sdk::{
    ValidationRequest, ValidationResponse, Value, containers, describe, export_policy, pod_specs,
};

pub use settings::Settings;

/// Denies credential-looking env vars with literal values.
pub fn validate(request: &ValidationRequest<Settings>) -> ValidationResponse {
    let kind = request.request.kind.kind.as_str();
    let object = &request.request.object;
    let mut violations = Vec::new();
    for (location, spec) in pod_specs(kind, object) {
        for container in containers(spec) {
            for (variable, pattern) in plaintext_credentials(&request.settings, container.container) {
                violations.push(format!(
                    "{}: env var \"{variable}\" (matches \"{pattern}\") has a literal value; move it to a Secret (valueFrom.secretKeyRef)",
                    describe(kind, object, &location, &container)
                ));
            }
        }
    }
    ValidationResponse::reject_all(&violations)
}

/// The (name, matching pattern) of every credential-looking env var with a literal value.
pub fn plaintext_credentials<'a>(settings: &'a Settings, container: &'a Value) -> Vec<(&'a str, &'a str)> {
    let env = container.get("env").and_then(Value::as_array);
    env.into_iter()
        .flatten()
        .filter_map(|var| {
            let name = var.get("name").and_then(Value::as_str)?;
            let value = var.get("value").and_then(Value::as_str)?;
            if value.is_empty() || only_references(value) {
                return None;
            }
            settings.credential_pattern(name).map(|pattern| (name, pattern))
        })
        .collect()
}

/// True when `value` consists solely of `$(NAME)` dependent-variable references.
fn only_references(value: &str) -> bool {
    let mut rest = value;
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix("$(") else {
            return false;
        };
        let Some(end) = inner.find(')') else {
            return false;
        };
        if end == 0 {
            return false;
        }
        rest = &inner[end + 1..];
    }
    true
}

export_policy!(Settings, validate);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::json;

    #[test]
    fn literal_values_only() {
        let s = Settings::default();
        let container = json!({"env": [
            {"name": "OPENAI_API_KEY", "value": "sk-live-123"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
            {"name": "DB_PASSWORD", "value": ""},
            {"name": "WANDB_API_KEY", "value": "$(WANDB_KEY_FROM_SECRET)"},
            {"name": "REDIS_PASSWORD", "value": "$(A)x"},
            {"name": "MONKEY_COUNT", "value": "12"},
            {"name": "TOKENIZERS_PARALLELISM", "value": "false"},
            {"value": "orphan"},
            {"name": "AWS_SECRET_ACCESS_KEY", "value": 42}
        ]});
        assert_eq!(
            plaintext_credentials(&s, &container),
            vec![("OPENAI_API_KEY", "KEY"), ("REDIS_PASSWORD", "PASSWORD")]
        );
    }

    #[test]
    fn references() {
        assert!(only_references("$(A)"));
        assert!(only_references("$(A)$(B_C)"));
        assert!(!only_references("$()"));
        assert!(!only_references("$(A"));
        assert!(!only_references("x$(A)"));
    }

    #[test]
    fn messages_never_echo_the_value() {
        let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "env": [{"name": "HF_TOKEN", "value": "hf_SeCrEt"}]}]}});
        let request = json!({"request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "object": object}});
        let request: ValidationRequest<Settings> = serde_json::from_value(request).expect("valid");
        let message = validate(&request).message.expect("rejected");
        assert!(
            message.contains("\"HF_TOKEN\"") && !message.contains("hf_SeCrEt"),
            "{message}"
        );
    }

    #[test]
    fn fixtures() {
        portcullis_policy_sdk::testing::check_fixtures(env!("CARGO_MANIFEST_DIR"), validate);
    }
}
