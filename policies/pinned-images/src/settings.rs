//! Settings of the `pinned-images` policy.

use serde::Deserialize;

use crate::glob;
use crate::reference::{self, DOCKER_HUB};

/// How strictly images must be pinned, and where they may come from.
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// When true, a tag alone is not enough: every image needs `@sha256:<digest>`. Off by default
    /// because immutable release tags (`v2.1.0`) are common and safe enough for most teams.
    pub require_digest: bool,
    /// Registry hosts (with port if any) images may come from; empty means any. `docker.io`
    /// (or `index.docker.io`) matches Docker Hub images, including unqualified ones like `nginx`.
    pub allowed_registries: Vec<String>,
    /// Glob patterns (`*`, `?`) of images the policy ignores entirely, matched against the
    /// reference as written and against its normalised form (`docker.io/library/busybox:1.36`).
    pub exempt_images: Vec<String>,
}

impl Settings {
    /// Whether `domain` (already normalised by the parser) is an allowed registry.
    pub fn registry_allowed(&self, domain: &str) -> bool {
        self.allowed_registries.is_empty()
            || self
                .allowed_registries
                .iter()
                .any(|allowed| normalise_registry(allowed).eq_ignore_ascii_case(domain))
    }

    /// Whether `image` (as written) or its normalised form matches an exemption.
    pub fn is_exempt(&self, image: &str, normalised: Option<&str>) -> bool {
        self.exempt_images.iter().any(|pattern| {
            glob::matches(pattern, image) || normalised.is_some_and(|n| glob::matches(pattern, n))
        })
    }
}

/// The port of a grammatical `host[:port]`, if any.
fn port(registry: &str) -> Option<&str> {
    match registry.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, port)| port),
        None => registry.split_once(':').map(|(_, port)| port),
    }
}

fn normalise_registry(registry: &str) -> &str {
    if registry.eq_ignore_ascii_case("index.docker.io") {
        DOCKER_HUB
    } else {
        registry
    }
}

impl portcullis_policy_sdk::Settings for Settings {
    fn validate(&self) -> Result<(), String> {
        for registry in &self.allowed_registries {
            reference::check_domain(registry).map_err(|e| {
                format!("allowed_registries: \"{registry}\" is not a registry host[:port] ({e})")
            })?;
            // The reference grammar takes any run of digits; a setting with a port no registry
            // can listen on is a typo.
            if let Some(port) = port(registry)
                && !port.parse::<u16>().is_ok_and(|p| p > 0)
            {
                return Err(format!(
                    "allowed_registries: \"{registry}\" has port {port}, outside 1-65535"
                ));
            }
        }
        for pattern in &self.exempt_images {
            glob::check_pattern(pattern).map_err(|e| format!("exempt_images: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::Settings as _;

    #[test]
    fn registries_match_normalised_docker_hub_case_insensitively() {
        let s = Settings {
            allowed_registries: vec!["index.docker.io".into(), "GHCR.io".into()],
            ..Settings::default()
        };
        assert!(s.registry_allowed("docker.io"));
        assert!(s.registry_allowed("ghcr.io"));
        assert!(!s.registry_allowed("quay.io"));
        assert!(Settings::default().registry_allowed("anything.example"));
    }

    #[test]
    fn validation_names_the_bad_entry() {
        let bad_registry = Settings {
            allowed_registries: vec!["https://ghcr.io".into()],
            ..Settings::default()
        };
        let e = bad_registry.validate().expect_err("invalid");
        assert!(e.starts_with("allowed_registries: \"https://ghcr.io\""), "{e}");
        let bad_pattern = Settings {
            exempt_images: vec!["ghcr.io/{a,b}".into()],
            ..Settings::default()
        };
        assert!(
            bad_pattern
                .validate()
                .expect_err("invalid")
                .starts_with("exempt_images: ")
        );
        assert_eq!(Settings::default().validate(), Ok(()));
        let registries = |list: &[&str]| Settings {
            allowed_registries: list.iter().map(|r| r.to_string()).collect(),
            ..Settings::default()
        };
        assert_eq!(
            registries(&["registry.local:65535", "[::1]:5000", "[::1]", "ghcr.io"]).validate(),
            Ok(())
        );
        for (bad, port) in [("registry.local:123456", "123456"), ("[::1]:0", "0")] {
            assert_eq!(
                registries(&[bad]).validate(),
                Err(format!(
                    "allowed_registries: \"{bad}\" has port {port}, outside 1-65535"
                ))
            );
        }
    }
}
