//! The registry host of a container image reference.
//!
//! Pull secrets are per registry, so the policy only needs the reference's first part. It follows
//! the Docker reference rule that kubelet and containerd apply: the part before the first `/` is a
//! registry host only if it contains `.` or `:` or is `localhost`; otherwise (`python:3.11`,
//! `pytorch/pytorch:2.3.0`) the image comes from Docker Hub. Written by hand because each
//! evaluation starts a fresh instance, where a regex would be compiled on every request.

/// The host Docker Hub images are pulled from, as settings name it.
pub const DOCKER_HUB: &str = "docker.io";

/// The registry host (with port, lower-cased) an image is pulled from; `None` for an empty
/// reference.
pub fn registry_host(image: &str) -> Option<String> {
    let image = image.trim();
    if image.is_empty() {
        return None;
    }
    let host = match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => DOCKER_HUB,
    };
    Some(normalize_host(host))
}

/// A registry host as compared: lower-cased (host names are case-insensitive), with Docker Hub's
/// legacy name `index.docker.io` folded into `docker.io`.
pub fn normalize_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host == "index.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Properties over random reference-like strings: never panics, and a host is lower-case,
    /// free of `/`, and either Docker Hub or the reference's first component.
    #[test]
    fn registry_host_is_total() {
        let mut rng = portcullis_policy_sdk::testing::Rng::new(0x1A6E5);
        for _ in 0..20_000 {
            let image = rng.string("aZ0./:@-_ lhostc", 20);
            if let Some(host) = registry_host(&image) {
                assert!(
                    !host.contains('/') && host == host.to_ascii_lowercase(),
                    "{image:?}"
                );
                let first = image.trim().split('/').next().unwrap_or("").to_ascii_lowercase();
                assert!(host == DOCKER_HUB || host == first, "{image:?} -> {host:?}");
            } else {
                assert!(image.trim().is_empty(), "{image:?}");
            }
        }
    }

    #[test]
    fn registry_hosts() {
        let cases = [
            (
                "registry.company.com/fraud-model:v2.1.0",
                Some("registry.company.com"),
            ),
            ("ghcr.io/acme-ml/churn-service:0.3.1", Some("ghcr.io")),
            (
                "registry.acme.io:5000/llm/vllm@sha256:0123abcd",
                Some("registry.acme.io:5000"),
            ),
            ("localhost/trainer:dev", Some("localhost")),
            ("localhost:5000/trainer:dev", Some("localhost:5000")),
            ("Registry.ACME.io/x", Some("registry.acme.io")),
            ("index.docker.io/library/python:3.11", Some("docker.io")),
            ("docker.io/pytorch/pytorch:2.3.0", Some("docker.io")),
            ("pytorch/pytorch:2.3.0-cuda12.1", Some("docker.io")),
            ("python:3.11-slim", Some("docker.io")),
            ("busybox", Some("docker.io")),
            ("busybox@sha256:0123abcd", Some("docker.io")),
            ("myregistry/model-server:v2.1.0", Some("docker.io")),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/scorer:7",
                Some("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
            ),
            ("", None),
            ("  ", None),
        ];
        for (image, host) in cases {
            assert_eq!(registry_host(image).as_deref(), host, "{image:?}");
        }
    }
}
