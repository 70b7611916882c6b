//! Settings of `secret-references`: which pull secret each private registry needs, and which
//! secrets every workload of a namespace loads into its environment.
//!
//! Both default to empty, and empty means the policy changes nothing: it only ever adds
//! references an operator listed.

use std::collections::BTreeMap;

use portcullis_policy_sdk::Settings;
use serde::Deserialize;

use crate::image::normalize_host;

/// The policy's settings.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecretReferencesSettings {
    /// Registry host (with port if the images name one; `docker.io` for Docker Hub) → name of
    /// the `kubernetes.io/dockerconfigjson` Secret to add to `imagePullSecrets`.
    pub image_pull_secrets: BTreeMap<String, String>,
    /// Namespace → Secrets every regular container gets as `envFrom: [{secretRef: ...}]`.
    pub env_from_secrets: BTreeMap<String, Vec<String>>,
}

impl SecretReferencesSettings {
    /// The pull secret configured for `host` (already normalized by
    /// [`crate::image::registry_host`]).
    pub fn pull_secret_for(&self, host: &str) -> Option<&str> {
        self.image_pull_secrets
            .iter()
            .find(|(registry, _)| normalize_host(registry) == host)
            .map(|(_, secret)| secret.as_str())
    }
}

impl Settings for SecretReferencesSettings {
    /// Registries must be bare hosts (`registry.acme.io:5000`, not a URL or a path) and secret
    /// names valid Kubernetes object names, so that a typo fails the policy load instead of every
    /// Pod at pull time.
    fn validate(&self) -> Result<(), String> {
        for (registry, secret) in &self.image_pull_secrets {
            if registry.is_empty() || registry.contains(['/', ' ']) {
                return Err(format!(
                    "image_pull_secrets: {registry:?} is not a registry host such as \
                     \"registry.acme.io\" or \"registry.acme.io:5000\""
                ));
            }
            check_secret_name(secret).map_err(|e| format!("image_pull_secrets.{registry}: {e}"))?;
        }
        for (namespace, secrets) in &self.env_from_secrets {
            if namespace.is_empty() {
                return Err("env_from_secrets: a namespace must not be empty".to_string());
            }
            for secret in secrets {
                check_secret_name(secret).map_err(|e| format!("env_from_secrets.{namespace}: {e}"))?;
            }
        }
        Ok(())
    }
}

/// A Secret name is a DNS subdomain: at most 253 lower-case alphanumerics, `-` and `.`, starting
/// and ending with an alphanumeric.
fn check_secret_name(name: &str) -> Result<(), String> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = name.len() <= 253
        && alnum(name.chars().next())
        && alnum(name.chars().last())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid Secret name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(value: serde_json::Value) -> SecretReferencesSettings {
        serde_json::from_value(value).expect("settings")
    }

    #[test]
    fn empty_by_default() {
        let s = SecretReferencesSettings::default();
        assert!(s.image_pull_secrets.is_empty() && s.env_from_secrets.is_empty());
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn registries_match_case_insensitively_and_docker_hub_by_either_name() {
        let s = settings(json!({"image_pull_secrets": {
            "Registry.Acme.io": "acme-pull", "index.docker.io": "hub-pull"}}));
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.pull_secret_for("registry.acme.io"), Some("acme-pull"));
        assert_eq!(s.pull_secret_for("docker.io"), Some("hub-pull"));
        assert_eq!(s.pull_secret_for("ghcr.io"), None);
    }

    #[test]
    fn invalid_settings_name_the_entry() {
        let cases = [
            (
                json!({"image_pull_secrets": {"https://registry.acme.io/": "x"}}),
                "not a registry host",
            ),
            (json!({"image_pull_secrets": {"": "x"}}), "not a registry host"),
            (
                json!({"image_pull_secrets": {"ghcr.io": "Pull_Secret"}}),
                "image_pull_secrets.ghcr.io: \"Pull_Secret\"",
            ),
            (
                json!({"env_from_secrets": {"ml-prod": ["ok", "-bad"]}}),
                "env_from_secrets.ml-prod: \"-bad\"",
            ),
            (
                json!({"env_from_secrets": {"": []}}),
                "namespace must not be empty",
            ),
        ];
        for (value, message) in cases {
            let e = settings(value.clone()).validate().expect_err("invalid");
            assert!(e.contains(message), "{value}: {e}");
        }
        assert!(
            serde_json::from_value::<SecretReferencesSettings>(json!({"image_pull_secret": {}})).is_err()
        );
    }
}
