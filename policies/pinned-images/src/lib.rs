//! `pinned-images`: every container image must be pinned to an immutable version.
//!
//! An image with no tag or with `:latest` changes under a running model: a node that pulls
//! later gets different weights or a different CUDA runtime than its siblings, and a rollback
//! does not roll anything back. This policy denies such references unless they carry a digest
//! (`@sha256:...`, which pins even when a tag is present), optionally requires digests outright,
//! restricts registries, and rejects references that are not valid at all, naming the reason.

pub mod glob;
pub mod reference;
pub mod settings;

use portcullis_policy_sdk::{
    ValidationRequest, ValidationResponse, Value, containers, describe, export_policy, pod_specs,
};

pub use settings::Settings;

/// Checks every image of every container (regular, init, ephemeral, KServe model) in the object.
pub fn validate(request: &ValidationRequest<Settings>) -> ValidationResponse {
    let kind = request.request.kind.kind.as_str();
    let object = &request.request.object;
    let mut violations = Vec::new();
    let mut warnings = Vec::new();
    for (location, spec) in pod_specs(kind, object) {
        for container in containers(spec) {
            let found = check_container(&request.settings, container.container);
            let who = || describe(kind, object, &location, &container);
            match found {
                Some(Finding::Violation(problem)) => violations.push(format!("{}: {problem}", who())),
                Some(Finding::Warning(warning)) => warnings.push(format!("{}: {warning}", who())),
                None => {}
            }
        }
    }
    let mut response = ValidationResponse::reject_all(&violations);
    response.warnings = warnings;
    response
}

/// What checking one image found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The image is not pinned, not allowed or not a reference: the object is denied.
    Violation(String),
    /// The image passes, but probably not as its author meant.
    Warning(String),
}

/// What is wrong with a container's `image`, if anything. An image that is missing, empty or
/// only whitespace is not a reference and is not checked: KServe model containers legitimately
/// omit it (the serving runtime supplies one); the API server refuses an empty image in Pods
/// and templates, and whitespace in Pods, before validating webhooks run; and in a template
/// (Deployment, ...) it accepts `" "`, a placeholder some controllers fill in later (an UPDATE
/// this policy then checks). Non-blank images with surrounding whitespace are checked and
/// denied: the Pods the template creates would be refused.
pub fn check_container(settings: &Settings, container: &Value) -> Option<Finding> {
    match container.get("image") {
        None | Some(Value::Null) => None,
        Some(Value::String(image)) if image.trim().is_empty() => None,
        Some(Value::String(image)) => check_image(settings, image),
        Some(other) => Some(Finding::Violation(format!("image {other} is not a string"))),
    }
}

/// What is wrong with one image reference, if anything.
pub fn check_image(settings: &Settings, image: &str) -> Option<Finding> {
    problem(settings, image).map(Finding::Violation).or_else(|| {
        let reference = reference::parse(image).ok()?;
        reference.registry_is_bare_upper_case_word().then(|| {
            Finding::Warning(format!(
                "image \"{image}\" is pulled from registry host \"{}\" (an upper-case first \
                 component is a host), not from Docker Hub",
                reference.domain
            ))
        })
    })
}

/// Why one image reference is denied, if it is.
fn problem(settings: &Settings, image: &str) -> Option<String> {
    let parsed = reference::parse(image);
    let normalised = parsed.as_ref().ok().map(ToString::to_string);
    if settings.is_exempt(image, normalised.as_deref()) {
        return None;
    }
    let reference = match parsed {
        Ok(reference) => reference,
        Err(reason) => {
            return Some(format!(
                "image {} is not a valid reference: {reason}",
                quoted(image)
            ));
        }
    };
    let image_quoted = quoted(image);
    if !settings.registry_allowed(&reference.domain) {
        return Some(format!(
            "image {image_quoted} comes from registry \"{}\", which is not in allowed_registries",
            reference.domain
        ));
    }
    if reference.digest.is_some() {
        return None;
    }
    match reference.tag.as_deref() {
        // The normalised form shows what an untagged name resolves to (docker.io/library/...).
        None if reference.to_string() != image => Some(format!(
            "image {image_quoted} ({reference}) has no tag, so it means the mutable :latest; pin a release tag or a digest"
        )),
        None => Some(format!(
            "image {image_quoted} has no tag, so it means the mutable :latest; pin a release tag or a digest"
        )),
        Some("latest") => Some(format!(
            "image {image_quoted} uses the mutable tag :latest; pin a release tag or a digest"
        )),
        Some(_) if settings.require_digest => Some(format!(
            "image {image_quoted} needs a digest (require_digest): use {}@sha256:<digest>",
            reference.repository()
        )),
        Some(_) => None,
    }
}

/// The image in quotes for a message, cut short past [`QUOTED_MAX`] characters so that one
/// absurd reference cannot swamp the denial (the API server truncates long messages).
fn quoted(image: &str) -> String {
    if image.chars().count() <= QUOTED_MAX {
        format!("\"{image}\"")
    } else {
        let start: String = image.chars().take(QUOTED_MAX / 2).collect();
        format!("\"{start}...\" ({} characters)", image.chars().count())
    }
}

/// Longest image quoted whole in a message.
const QUOTED_MAX: usize = 96;

export_policy!(Settings, validate);

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:9f2b1c0e3a4d5b6c7d8e9f00112233445566778899aabbccddeeff0011223344";

    /// The violation for `image`, if any; a warning fails the test.
    fn check(settings: &Settings, image: &str) -> Option<String> {
        match check_image(settings, image) {
            Some(Finding::Violation(v)) => Some(v),
            Some(Finding::Warning(w)) => panic!("{image}: unexpected warning {w}"),
            None => None,
        }
    }

    #[test]
    fn default_settings() {
        let s = Settings::default();
        assert_eq!(check(&s, "ghcr.io/acme/churn-service:0.3.1"), None);
        assert_eq!(check(&s, "registry.local:5000/model:v1"), None);
        assert_eq!(check(&s, &format!("nginx@{DIGEST}")), None);
        assert_eq!(check(&s, &format!("nginx:latest@{DIGEST}")), None);
        let e = check(&s, "nginx").expect("unpinned");
        assert!(
            e.contains("\"nginx\" (docker.io/library/nginx) has no tag"),
            "{e}"
        );
        let e = check(&s, "registry.local:5000/model").expect("port is not a tag");
        assert!(e.contains("has no tag"), "{e}");
        assert_eq!(
            check(&s, "pytorch/pytorch:latest").as_deref(),
            Some(
                "image \"pytorch/pytorch:latest\" uses the mutable tag :latest; pin a release tag or \
                 a digest"
            )
        );
        let e = check(&s, "Acme/Model:v1").expect("invalid");
        assert!(
            e.contains("not a valid reference") && e.contains("lower-case"),
            "{e}"
        );
    }

    #[test]
    fn require_digest_and_registries() {
        let s = Settings {
            require_digest: true,
            allowed_registries: vec!["ghcr.io".into(), "docker.io".into()],
            ..Settings::default()
        };
        let e = check(&s, "ghcr.io/acme/churn:0.3.1").expect("tag only");
        assert!(e.contains("use ghcr.io/acme/churn@sha256:<digest>"), "{e}");
        assert_eq!(check(&s, &format!("ghcr.io/acme/churn@{DIGEST}")), None);
        assert_eq!(check(&s, &format!("busybox@{DIGEST}")), None);
        let e = check(&s, &format!("quay.io/acme/x@{DIGEST}")).expect("registry");
        assert!(
            e.ends_with("comes from registry \"quay.io\", which is not in allowed_registries"),
            "{e}"
        );
    }

    #[test]
    fn long_images_are_cut_short_in_messages() {
        let image = format!("{}:1", "b".repeat(248));
        assert_eq!(
            check(&Settings::default(), &image),
            Some(format!(
                "image \"{}...\" (250 characters) is not a valid reference: the repository path has \
                 256 characters, more than 255",
                "b".repeat(48)
            ))
        );
        assert_eq!(quoted(&"c".repeat(96)), format!("\"{}\"", "c".repeat(96)));
    }

    #[test]
    fn exemptions_match_written_or_normalised() {
        let s = Settings {
            exempt_images: vec!["docker.io/library/busybox:*".into(), "debug/*".into()],
            ..Settings::default()
        };
        assert_eq!(check(&s, "busybox:latest"), None);
        assert_eq!(check(&s, "debug/Anything Goes"), None);
        assert!(check(&s, "alpine").is_some());
    }

    /// Blank images are not references: absent (KServe), `""` (refused by the API server's
    /// `validateContainerCommon` before validating webhooks), `" "` (a template placeholder:
    /// only Pods are refused surrounding whitespace, `validateContainersOnlyForPod` in
    /// kubernetes/kubernetes pkg/apis/core/validation/validation.go).
    #[test]
    fn non_string_and_blank_images() {
        let s = Settings::default();
        let container = |image: Value| check_container(&s, &serde_json::json!({"image": image}));
        assert_eq!(check_container(&s, &serde_json::json!({"name": "kserve"})), None);
        assert_eq!(container(Value::Null), None);
        assert_eq!(container(Value::from("")), None);
        assert_eq!(container(Value::from(" ")), None);
        assert_eq!(
            container(Value::from(7)),
            Some(Finding::Violation("image 7 is not a string".into()))
        );
        assert_eq!(
            container(Value::from(" nginx:1.25")),
            Some(Finding::Violation(
                "image \" nginx:1.25\" is not a valid reference: the reference contains whitespace".into()
            ))
        );
    }

    /// `Docker/docker:20.10` is valid: an upper-case first component is a registry host
    /// (distribution/reference normalize.go `splitDockerDomain`). It is pinned, so it passes,
    /// with a warning, because such a host is almost always a mistyped Docker Hub namespace.
    #[test]
    fn an_upper_case_registry_host_passes_with_a_warning() {
        let s = Settings::default();
        assert_eq!(
            check_image(&s, "Docker/docker:20.10"),
            Some(Finding::Warning(
                "image \"Docker/docker:20.10\" is pulled from registry host \"Docker\" (an \
                 upper-case first component is a host), not from Docker Hub"
                    .into()
            ))
        );
        // Unpinned or not allowed: the violation wins.
        let e = check(&s, "Docker/docker").expect("no tag");
        assert!(e.contains("\"Docker/docker\" has no tag"), "{e}");
        let hub_only = Settings {
            allowed_registries: vec!["docker.io".into()],
            ..Settings::default()
        };
        let e = check(&hub_only, "Docker/docker:20.10").expect("not Docker Hub");
        assert!(e.contains("comes from registry \"Docker\""), "{e}");
        // Hosts with a dot, a port or localhost are ordinary registries.
        assert_eq!(check(&s, "Registry.Example.com/model:v1"), None);
        assert_eq!(check(&s, "[::1]:5000/model:v1"), None);
    }

    #[test]
    fn fixtures() {
        portcullis_policy_sdk::testing::check_fixtures(env!("CARGO_MANIFEST_DIR"), validate);
    }
}
