//! Container image references, parsed by hand after the distribution reference grammar, as the
//! kubelet parses them (`ParseNormalizedNamed` of distribution/reference, `normalize.go` and
//! `regexp.go`).
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component { "/" path-component }
//! domain     := host [ ":" port ]        host: DNS labels (either case) joined by ".",
//!                                        or "[" hex digits and ":" "]" (IPv6); port: [0-9]+
//! path-comp  := [a-z0-9]+ { ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ }
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex        (sha256: 64, sha384: 96, sha512: 128 lower-case hex)
//! ```
//!
//! The first path component is a registry host only if it is `localhost`, contains `.` or `:`,
//! or contains an upper-case letter (repository paths are lower-case, so `Docker/docker:20.10`
//! names the host `Docker`), which is why `registry.local:5000/model` has no tag while
//! `model:5000` is the tag `5000`. References are normalised the way the container runtime will
//! resolve them: no domain means `docker.io`, `index.docker.io` is `docker.io`, and single-name
//! Docker Hub images live under `library/`. The normalised path may hold at most 255 characters
//! (the domain does not count, distribution/reference#9), and a bare 64-hex string is an image
//! ID, not a name. No regex crate: the grammar is small, and a module that compiles regexes on
//! every (fresh-instance) evaluation would pay for it on every request.

use std::fmt;

/// Docker Hub's canonical domain.
pub const DOCKER_HUB: &str = "docker.io";

/// Longest repository path (after normalisation, without the domain) the grammar allows.
const PATH_MAX: usize = 255;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, possibly with a port; `docker.io` when the reference named none.
    pub domain: String,
    /// Repository path within the registry, e.g. `library/nginx`.
    pub path: String,
    /// Tag, if any.
    pub tag: Option<String>,
    /// Digest (`algorithm:hex`), if any.
    pub digest: Option<String>,
}

impl ImageRef {
    /// `domain/path`, the repository without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Whether the registry host is only a host because it has an upper-case letter: no `.`, no
    /// `:`, not `localhost` (`Docker/docker:20.10`). Almost always a mistyped Docker Hub
    /// namespace, since such a host rarely resolves.
    pub fn registry_is_bare_upper_case_word(&self) -> bool {
        !self.domain.contains(['.', ':']) && self.domain != "localhost"
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Parses and normalises a reference; the error says what is wrong with it.
pub fn parse(reference: &str) -> Result<ImageRef, String> {
    if reference.is_empty() {
        return Err("the reference is empty".into());
    }
    if reference.trim() != reference || reference.contains(char::is_whitespace) {
        return Err("the reference contains whitespace".into());
    }
    if reference.len() == 64 && reference.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("a 64-character hex string is an image ID, not a repository name".into());
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(parse_digest(digest)?)),
        None => (reference, None),
    };
    // A ':' after the last '/' separates the tag; one before it belongs to a registry port.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&name_tag[..at], Some(parse_tag(&name_tag[at + 1..])?))
        }
        None => (name_tag, None),
    };
    if name.is_empty() {
        return Err("the repository name is empty".into());
    }
    let (domain, path) = split_domain(name);
    if let Some(domain) = domain {
        check_domain(domain)?;
    }
    check_path(path)?;
    let domain = match domain {
        None | Some("index.docker.io") => DOCKER_HUB,
        Some(domain) => domain,
    };
    let path = if domain == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_string()
    };
    if path.len() > PATH_MAX {
        return Err(format!(
            "the repository path has {} characters, more than {PATH_MAX}",
            path.len()
        ));
    }
    Ok(ImageRef {
        domain: domain.to_string(),
        path,
        tag,
        digest,
    })
}

/// Splits off the registry host: the first component, if it is `localhost`, contains `.` or
/// `:`, or has an upper-case letter (`splitDockerDomain` in distribution/reference normalize.go).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// Checks `host[:port]` against the grammar (also used to validate registry settings). An
/// IPv6 host is hex digits and `:` in brackets: zone identifiers and IPv4-mapped forms are
/// excluded on purpose upstream. A port is any run of digits.
pub fn check_domain(domain: &str) -> Result<(), String> {
    let port = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("registry host \"{domain}\" has an unclosed '['"))?;
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!(
                "registry host \"{domain}\" is not an IPv6 address in brackets (hex digits and ':')"
            ));
        }
        match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(format!("registry host \"{domain}\" has junk after ']'")),
            },
        }
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (domain, None),
        };
        check_host(host, domain)?;
        port
    };
    let port_ok = |port: &str| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    match port {
        Some(port) if !port_ok(port) => Err(format!("registry \"{domain}\" has an invalid port \"{port}\"")),
        _ => Ok(()),
    }
}

/// DNS labels: alphanumerics with inner hyphens, joined by dots.
fn check_host(host: &str, domain: &str) -> Result<(), String> {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("registry host \"{domain}\" is not a valid host name"))
    }
}

/// Path components: lower-case alphanumerics joined by `.`, `_`, `__` or runs of `-`.
fn check_path(path: &str) -> Result<(), String> {
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("repository \"{path}\" must be lower-case"));
    }
    for component in path.split('/') {
        if !path_component_ok(component) {
            return Err(format!(
                "repository path component \"{component}\" is invalid (lower-case letters and \
                 digits, separated by '.', '_', '__' or '-')"
            ));
        }
    }
    Ok(())
}

fn path_component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-"+; it is followed by an alphanumeric because
        // the component ends with one.
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn parse_tag(tag: &str) -> Result<String, String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let valid = matches!(bytes.first(), Some(&b) if word(b))
        && bytes.len() <= 128
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(tag.to_string())
    } else {
        Err(format!(
            "tag \"{tag}\" is invalid (1 to 128 of [A-Za-z0-9_.-], not starting with '.' or '-')"
        ))
    }
}

/// `algorithm:hex`, with the hex length fixed by the algorithm.
fn parse_digest(digest: &str) -> Result<String, String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("digest \"{digest}\" is not of the form algorithm:hex"))?;
    let expected = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            return Err(format!(
                "digest algorithm \"{algorithm}\" is not supported (sha256, sha384, sha512)"
            ));
        }
    };
    if hex.len() != expected {
        return Err(format!(
            "{algorithm} digest must be {expected} hex characters, got {}",
            hex.len()
        ));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!("{algorithm} digest must be lower-case hex"));
    }
    Ok(digest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// (input, domain, path, tag, digest?)
    #[test]
    fn valid_references_normalise() {
        let d = format!("sha256:{HEX}");
        let cases: Vec<(String, &str, &str, Option<&str>, bool)> = vec![
            ("nginx".into(), "docker.io", "library/nginx", None, false),
            (
                "nginx:1.25".into(),
                "docker.io",
                "library/nginx",
                Some("1.25"),
                false,
            ),
            (
                "nginx:latest".into(),
                "docker.io",
                "library/nginx",
                Some("latest"),
                false,
            ),
            (
                "pytorch/pytorch:2.3.0-cuda12.1-cudnn8-runtime".into(),
                "docker.io",
                "pytorch/pytorch",
                Some("2.3.0-cuda12.1-cudnn8-runtime"),
                false,
            ),
            (
                "docker.io/nginx".into(),
                "docker.io",
                "library/nginx",
                None,
                false,
            ),
            (
                "index.docker.io/library/nginx:1".into(),
                "docker.io",
                "library/nginx",
                Some("1"),
                false,
            ),
            (
                "registry.local:5000/model".into(),
                "registry.local:5000",
                "model",
                None,
                false,
            ),
            (
                "registry.local:5000/model:v1".into(),
                "registry.local:5000",
                "model",
                Some("v1"),
                false,
            ),
            (
                "localhost/model:dev".into(),
                "localhost",
                "model",
                Some("dev"),
                false,
            ),
            (
                "localhost:5000/a/b/c:1".into(),
                "localhost:5000",
                "a/b/c",
                Some("1"),
                false,
            ),
            (
                "ghcr.io/acme/churn-service:0.3.1".into(),
                "ghcr.io",
                "acme/churn-service",
                Some("0.3.1"),
                false,
            ),
            (
                "nvcr.io/nvidia/tritonserver:24.05-py3".into(),
                "nvcr.io",
                "nvidia/tritonserver",
                Some("24.05-py3"),
                false,
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/fraud-model:v2.1.0".into(),
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "fraud-model",
                Some("v2.1.0"),
                false,
            ),
            (
                "Registry.Example.com/model:v1".into(),
                "Registry.Example.com",
                "model",
                Some("v1"),
                false,
            ),
            (
                "[::1]:5000/model:v1".into(),
                "[::1]:5000",
                "model",
                Some("v1"),
                false,
            ),
            (
                "[2001:DB8::1]/team/model".into(),
                "[2001:DB8::1]",
                "team/model",
                None,
                false,
            ),
            // An upper-case first component is a host (normalize.go splitDockerDomain).
            (
                "Docker/docker:20.10".into(),
                "Docker",
                "docker",
                Some("20.10"),
                false,
            ),
            ("LOCALHOST/model:1".into(), "LOCALHOST", "model", Some("1"), false),
            // Ports are any run of digits in the grammar.
            (
                "registry.local:123456/model:1".into(),
                "registry.local:123456",
                "model",
                Some("1"),
                false,
            ),
            // Not a domain: no '.', ':' or upper case, so a Docker Hub namespace.
            (
                "registry/model:1".into(),
                "docker.io",
                "registry/model",
                Some("1"),
                false,
            ),
            // No '/': always a Docker Hub name, even when it looks like a host.
            (
                "example.com".into(),
                "docker.io",
                "library/example.com",
                None,
                false,
            ),
            (
                "model:5000".into(),
                "docker.io",
                "library/model",
                Some("5000"),
                false,
            ),
            (
                "a__b/c_d.e---f:_x".into(),
                "docker.io",
                "a__b/c_d.e---f",
                Some("_x"),
                false,
            ),
            (format!("nginx@{d}"), "docker.io", "library/nginx", None, true),
            (
                format!("nginx:latest@{d}"),
                "docker.io",
                "library/nginx",
                Some("latest"),
                true,
            ),
            (
                format!("registry.local:5000/model@{d}"),
                "registry.local:5000",
                "model",
                None,
                true,
            ),
            (
                format!("quay.io/org/img@sha512:{HEX}{HEX}"),
                "quay.io",
                "org/img",
                None,
                true,
            ),
        ];
        for (input, domain, path, tag, digest) in cases {
            let r = parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.domain, domain, "{input}");
            assert_eq!(r.path, path, "{input}");
            assert_eq!(r.tag.as_deref(), tag, "{input}");
            assert_eq!(r.digest.is_some(), digest, "{input}");
        }
    }

    #[test]
    fn invalid_references_say_why() {
        let long_tag = "t".repeat(129);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            (" nginx".into(), "whitespace"),
            ("nginx :1".into(), "whitespace"),
            ("Nginx:1".into(), "lower-case"),
            ("acme/Fraud-Model:v1".into(), "lower-case"),
            ("nginx:".into(), "tag \"\""),
            ("nginx:-dev".into(), "tag \"-dev\""),
            ("nginx:.hidden".into(), "tag \".hidden\""),
            (format!("nginx:{long_tag}"), "128"),
            ("nginx:v1+build".into(), "tag"),
            ("nginx@sha256:abc".into(), "64 hex"),
            (format!("nginx@sha256:{}", HEX.to_uppercase()), "lower-case hex"),
            (format!("nginx@md5:{HEX}"), "not supported"),
            ("nginx@latest".into(), "algorithm:hex"),
            (
                "registry.company.com/fraud-model@sha256:a1b2c3d4...".into(),
                "64 hex",
            ),
            ("/nginx".into(), "component \"\""),
            ("acme//model".into(), "component \"\""),
            ("acme/model/".into(), "component \"\""),
            ("-acme/model".into(), "component \"-acme\""),
            ("acme/mo..del".into(), "component \"mo..del\""),
            ("acme/mo___del".into(), "component"),
            ("acme/mo_-del".into(), "component"),
            ("registry.local:50x0/model".into(), "invalid port"),
            ("registry.local:/model".into(), "invalid port"),
            ("-bad.host/model".into(), "host name"),
            ("bad..host/model".into(), "host name"),
            ("[zz::1]/model".into(), "IPv6"),
            ("[::1/model".into(), "unclosed"),
            (":1".into(), "empty"),
            (format!("{}/x", "a".repeat(260)), "255"),
            // Upper case is a host only in the first of several components.
            (
                "Docker/Docker:1".into(),
                "repository \"Docker\" must be lower-case",
            ),
            ("Do_cker/docker:1".into(), "host name"),
            // IPv6 in brackets is hex digits and ':' only: no zone, no IPv4-mapped form.
            ("[::ffff:10.0.0.1]:5000/model".into(), "IPv6"),
            ("[fe80::1%eth0]/model".into(), "IPv6"),
            ("[]/model".into(), "component \"[]\""),
            ("[::1]x/model".into(), "junk after ']'"),
            ("::1/model".into(), "host name"),
            // A bare image ID is refused by ParseNormalizedNamed.
            (HEX.into(), "image ID"),
        ];
        for (input, needle) in cases {
            match parse(&input) {
                Ok(r) => panic!("{input:?} parsed as {r}"),
                Err(e) => assert!(e.contains(needle), "{input:?}: {e:?} lacks {needle:?}"),
            }
        }
    }

    /// The 255-character limit is on the normalised path, not on the domain
    /// (distribution/reference reference.go `RepositoryNameTotalLengthMax`; PR #9): Docker
    /// Hub's `library/` counts, a long registry host does not.
    #[test]
    fn the_length_limit_is_on_the_normalised_path() {
        let component = |n: usize| "a".repeat(n);
        let host = format!("{}.example.com", component(200));
        assert!(parse(&format!("{host}/{}:1", component(255))).is_ok());
        assert!(parse(&format!("x/{}:1", component(253))).is_ok());
        assert!(parse(&format!("{}:1", component(247))).is_ok());
        for too_long in [
            format!("{}:1", component(248)),
            format!("x/{}:1", component(254)),
            format!("ghcr.io/{}", component(256)),
        ] {
            let e = parse(&too_long).expect_err("too long");
            assert!(e.contains("more than 255"), "{e}");
        }
        assert_eq!(
            parse(&format!("{}:1", component(248))),
            Err("the repository path has 256 characters, more than 255".into())
        );
    }

    #[test]
    fn display_is_the_normalised_reference() {
        assert_eq!(
            parse("nginx").map(|r| r.to_string()),
            Ok("docker.io/library/nginx".into())
        );
        let d = format!("sha256:{HEX}");
        let r = parse(&format!("ghcr.io/a/b:1@{d}")).expect("valid");
        assert_eq!(r.to_string(), format!("ghcr.io/a/b:1@{d}"));
        assert_eq!(r.repository(), "ghcr.io/a/b");
    }

    /// Properties over random strings of reference characters: parsing never panics, and a
    /// parsed reference's normalised form parses back to itself (normalisation is idempotent).
    #[test]
    fn parsing_is_total_and_normalisation_idempotent() {
        let mut rng = portcullis_policy_sdk::testing::Rng::new(0x1A6E);
        let alphabet = "abcz09.-_/:@AZ[]";
        let mut parsed = 0;
        for _ in 0..20_000 {
            let input = rng.string(alphabet, 24);
            if let Ok(r) = parse(&input) {
                parsed += 1;
                assert_eq!(parse(&r.to_string()).as_ref(), Ok(&r), "{input}");
            }
        }
        assert!(
            parsed > 100,
            "the generator should hit valid references ({parsed})"
        );
        for _ in 0..2_000 {
            let input = format!(
                "{}@sha256:{}",
                rng.string("ab1/.:", 12),
                rng.string("0123456789abcdef", 70)
            );
            if let Ok(r) = parse(&input) {
                assert_eq!(r.digest.as_deref().map(str::len), Some(71), "{input}");
            }
        }
    }

    #[test]
    fn registry_settings_use_the_domain_grammar() {
        for ok in [
            "docker.io",
            "ghcr.io",
            "registry.local:5000",
            "localhost",
            "[::1]:5000",
            "nvcr.io",
        ] {
            assert_eq!(check_domain(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "ghcr.io/",
            "https://ghcr.io",
            "reg istry",
            "a:b",
            "[::ffff:1.2.3.4]",
            "-x.io",
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }
}
