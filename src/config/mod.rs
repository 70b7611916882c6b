//! Policy configuration: the YAML file (or the built-in default set) validated into a
//! [`Config`].
//!
//! Loading happens in two stages, raw shape ([`raw`]) then meaning (here), and every error
//! names the file, the policy and the problem, because a webhook that refuses to start must
//! say exactly why.

pub mod builtin;
pub mod raw;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::limits::MAX_POLICY_MEMORY_MIB;
use crate::policy::matching::Matcher;
use crate::policy::spec::{
    MemoryLimit, Mode, ModuleSource, PolicyKind, PolicyName, PolicyNameError, PolicySpec, Settings, Timeout,
};
use raw::{RawConfig, RawPolicy};

/// A validated policy configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the configuration came from, for messages.
    pub origin: String,
    /// The policies in configuration order (the order mutating policies run in).
    pub policies: Vec<PolicySpec>,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the configuration")]
    Read {
        /// The configuration file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the expected YAML shape (outside any one policy).
    #[error("{file}: {source}")]
    Parse {
        /// The configuration file.
        file: String,
        /// The YAML error, with its line and column.
        #[source]
        source: serde_yaml_ng::Error,
    },
    /// A top-level key other than `policies` or an `x-` extension.
    #[error("{file}: unknown top-level key `{key}` (expected `policies`, or an `x-` extension key)")]
    UnknownKey {
        /// The configuration file.
        file: String,
        /// The key.
        key: String,
    },
    /// One policy is wrong.
    #[error("{file}: policy `{policy}`: {problem}")]
    Policy {
        /// The configuration file.
        file: String,
        /// The policy's name as written (or its position when it has none).
        policy: String,
        /// What is wrong with it.
        #[source]
        problem: PolicyProblem,
    },
}

/// What is wrong with one policy entry.
#[derive(Debug, thiserror::Error)]
pub enum PolicyProblem {
    /// The entry does not have the expected keys and types.
    #[error("{0}")]
    Shape(#[source] serde_yaml_ng::Error),
    /// The name is not valid.
    #[error(transparent)]
    Name(#[from] PolicyNameError),
    /// Another policy has the same name.
    #[error("the name is used by another policy; names must be unique")]
    Duplicate,
    /// The module file cannot be read.
    #[error("cannot read module {path}: {source}")]
    Module {
        /// The resolved path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A module named as built in (`builtin:<path>`, or any path of the built-in configuration)
    /// is not embedded in the binary.
    #[error(
        "no built-in module `{0}`; the built-in modules are {modules}",
        modules = builtin::names()
    )]
    UnknownBuiltin(String),
    /// `timeout_ms` is out of range.
    #[error("timeout_ms must be between 1 and {max}, got {got}", max = Timeout::MAX.as_millis())]
    Timeout {
        /// The value written.
        got: u64,
    },
    /// `memory_mib` is out of range.
    #[error("memory_mib must be between 1 and {MAX_POLICY_MEMORY_MIB}, got {got}")]
    Memory {
        /// The value written.
        got: u64,
    },
    /// A `match.kinds` entry is empty.
    #[error("match.kinds must not contain an empty kind")]
    EmptyKind,
    /// A `match.subresources` entry is empty or names a resource too.
    #[error("match.subresources entry {0:?} must be a subresource name like `ephemeralcontainers`, or `*`")]
    BadSubresource(String),
}

/// Where module paths in a configuration are looked up. Whatever the store, a path that starts
/// with [`builtin::PREFIX`] names an embedded module.
#[derive(Clone, Debug)]
pub enum ModuleStore {
    /// Files, relative to this directory (the configuration file's).
    Dir(PathBuf),
    /// The modules embedded in the binary ([`builtin::MODULES`]).
    Builtin,
}

impl ModuleStore {
    fn load(&self, module: &Path) -> Result<ModuleSource, PolicyProblem> {
        if let Some(name) = module.to_str().and_then(|m| m.strip_prefix(builtin::PREFIX)) {
            return builtin::module(Path::new(name))
                .ok_or_else(|| PolicyProblem::UnknownBuiltin(name.to_owned()));
        }
        match self {
            Self::Dir(dir) => {
                let path = dir.join(module);
                let bytes = std::fs::read(&path).map_err(|source| PolicyProblem::Module {
                    path: path.display().to_string(),
                    source,
                })?;
                Ok(ModuleSource {
                    origin: path.display().to_string(),
                    bytes: Arc::from(bytes),
                })
            }
            Self::Builtin => builtin::module(module)
                .ok_or_else(|| PolicyProblem::UnknownBuiltin(module.display().to_string())),
        }
    }
}

impl Config {
    /// Loads and validates the configuration file at `path`; module paths are relative to it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_yaml(&text, &file, &ModuleStore::Dir(dir))
    }

    /// The default policy set embedded in the binary (`policies/default.yaml`).
    pub fn builtin() -> Result<Self, ConfigError> {
        Self::from_yaml(
            builtin::DEFAULT_CONFIG,
            "builtin:policies/default.yaml",
            &ModuleStore::Builtin,
        )
    }

    /// Validates configuration text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str, store: &ModuleStore) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
            file: origin.to_owned(),
            source,
        })?;
        if let Some(key) = raw.extensions.keys().find(|k| !k.starts_with("x-")) {
            return Err(ConfigError::UnknownKey {
                file: origin.to_owned(),
                key: key.clone(),
            });
        }
        let mut seen = HashSet::new();
        let mut policies = Vec::with_capacity(raw.policies.len());
        for (index, mut entry) in raw.policies.into_iter().enumerate() {
            let label = entry
                .get("name")
                .and_then(serde_yaml_ng::Value::as_str)
                .map_or_else(|| format!("#{}", index + 1), str::to_owned);
            let fail = |problem| ConfigError::Policy {
                file: origin.to_owned(),
                policy: label.clone(),
                problem,
            };
            // YAML merge keys (`<<: *anchor`) let a `match` block extend a shared one.
            entry.apply_merge().map_err(|e| fail(PolicyProblem::Shape(e)))?;
            let raw: RawPolicy =
                serde_yaml_ng::from_value(entry).map_err(|e| fail(PolicyProblem::Shape(e)))?;
            let spec = validate_policy(raw, store).map_err(fail)?;
            if !seen.insert(spec.name.clone()) {
                return Err(fail(PolicyProblem::Duplicate));
            }
            policies.push(spec);
        }
        Ok(Self {
            origin: origin.to_owned(),
            policies,
        })
    }

    /// Forces every policy into monitor mode (`serve --dry-run`).
    pub fn force_monitor(&mut self) {
        for policy in &mut self.policies {
            policy.mode = Mode::Monitor;
        }
    }
}

fn validate_policy(raw: RawPolicy, store: &ModuleStore) -> Result<PolicySpec, PolicyProblem> {
    let name = PolicyName::new(&raw.name)?;
    let timeout =
        Timeout::from_millis(raw.timeout_ms).ok_or(PolicyProblem::Timeout { got: raw.timeout_ms })?;
    let memory = MemoryLimit::from_mib(raw.memory_mib, MAX_POLICY_MEMORY_MIB)
        .ok_or(PolicyProblem::Memory { got: raw.memory_mib })?;
    if raw.matching.kinds.iter().any(|k| k.trim().is_empty()) {
        return Err(PolicyProblem::EmptyKind);
    }
    if let Some(bad) = raw
        .matching
        .subresources
        .iter()
        .find(|s| s.trim().is_empty() || s.contains('/'))
    {
        return Err(PolicyProblem::BadSubresource(bad.clone()));
    }
    let module = store.load(&raw.module)?;
    Ok(PolicySpec {
        name,
        module,
        abi: raw.abi,
        kind: if raw.mutating {
            PolicyKind::Mutating
        } else {
            PolicyKind::Validating
        },
        mode: raw.mode,
        failure: raw.failure,
        existing_violations: raw.existing_violations,
        timeout,
        memory,
        matcher: Matcher {
            kinds: raw.matching.kinds,
            subresources: raw.matching.subresources,
            operations: raw.matching.operations,
            include_namespaces: raw.matching.namespaces.include,
            exclude_namespaces: raw.matching.namespaces.exclude,
            controller_created: raw.matching.controller_created,
        },
        settings: Settings::new(&raw.settings),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spec::{ExistingViolations, FailurePolicy};

    fn dir_with_module() -> (tempdir::Dir, ModuleStore) {
        let dir = tempdir::Dir::new();
        std::fs::write(dir.path().join("p.wasm"), b"\0asm\x01\0\0\0").expect("write module");
        let store = ModuleStore::Dir(dir.path().to_path_buf());
        (dir, store)
    }

    /// A throwaway directory removed on drop (std only, to keep dev-dependencies small).
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let p = std::env::temp_dir().join(format!("portcullis-config-{}-{n}", std::process::id()));
                std::fs::create_dir_all(&p).expect("create temp dir");
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    fn err(text: &str) -> String {
        let (_d, store) = dir_with_module();
        Config::from_yaml(text, "cfg.yaml", &store)
            .expect_err("must fail")
            .to_string()
    }

    #[test]
    fn full_entry_parses_with_every_field() {
        let (_d, store) = dir_with_module();
        let text = r#"
policies:
  - name: pinned-images
    module: p.wasm
    mutating: false
    mode: monitor
    failure: allow
    existing_violations: deny
    timeout_ms: 250
    memory_mib: 32
    match:
      kinds: [Pod, Deployment]
      subresources: [ephemeralcontainers]
      operations: [CREATE, UPDATE]
      namespaces: {include: [ml], exclude: [kube-system]}
    settings: {require_digest: true}
"#;
        let cfg = Config::from_yaml(text, "cfg.yaml", &store).expect("valid");
        let p = &cfg.policies[0];
        assert_eq!(p.name.as_str(), "pinned-images");
        assert_eq!(p.mode, Mode::Monitor);
        assert_eq!(p.failure, FailurePolicy::Allow);
        assert_eq!(p.timeout.duration().as_millis(), 250);
        assert_eq!(p.memory.bytes(), 32 << 20);
        assert_eq!(p.matcher.kinds, ["Pod", "Deployment"]);
        assert_eq!(p.matcher.subresources, ["ephemeralcontainers"]);
        assert_eq!(p.existing_violations, ExistingViolations::Deny);
        assert_eq!(p.matcher.exclude_namespaces, ["kube-system"]);
        assert_eq!(p.settings.json(), r#"{"require_digest":true}"#);
        assert_eq!(p.kind, PolicyKind::Validating);
    }

    #[test]
    fn defaults_fail_closed_and_enforce() {
        let (_d, store) = dir_with_module();
        let cfg = Config::from_yaml("policies: [{name: a, module: p.wasm}]", "c", &store).expect("valid");
        let p = &cfg.policies[0];
        assert_eq!((p.mode, p.failure), (Mode::Enforce, FailurePolicy::Deny));
        assert_eq!(p.existing_violations, ExistingViolations::Allow);
        assert!(p.matcher.subresources.is_empty());
        assert_eq!(p.timeout.duration().as_millis(), 100);
        assert_eq!(p.memory.bytes(), 64 << 20);
        assert_eq!(p.settings.json(), "{}");
    }

    #[test]
    fn errors_name_file_policy_and_problem() {
        let e = err("policies: [{name: a, module: p.wasm, modul: x}]");
        assert!(
            e.starts_with("cfg.yaml: policy `a`: unknown field `modul`"),
            "{e}"
        );
        let e = err("policies: [{name: a, module: p.wasm}, {name: a, module: p.wasm}]");
        assert_eq!(
            e,
            "cfg.yaml: policy `a`: the name is used by another policy; names must be unique"
        );
        let e = err("policies: [{name: a, module: missing.wasm}]");
        assert!(
            e.starts_with("cfg.yaml: policy `a`: cannot read module ") && e.contains("missing.wasm"),
            "{e}"
        );
        let e = err("policies: [{name: Bad_Name, module: p.wasm}]");
        assert!(
            e.starts_with("cfg.yaml: policy `Bad_Name`: policy name `Bad_Name` must be"),
            "{e}"
        );
        let e = err("policies: [{name: a, module: p.wasm, timeout_ms: 0}]");
        assert_eq!(
            e,
            "cfg.yaml: policy `a`: timeout_ms must be between 1 and 30000, got 0"
        );
        let e = err("policies: [{name: a, module: p.wasm, memory_mib: 100000}]");
        assert!(e.contains("memory_mib must be between 1 and"), "{e}");
        let e = err("policies: [{name: a, module: p.wasm, mode: audit}]");
        assert!(
            e.starts_with("cfg.yaml: policy `a`: unknown variant `audit`"),
            "{e}"
        );
        let e = err("policies: [{module: p.wasm}]");
        assert!(
            e.starts_with("cfg.yaml: policy `#1`: missing field `name`"),
            "{e}"
        );
        let e = err("policies: []\npolicy: []");
        assert_eq!(
            e,
            "cfg.yaml: unknown top-level key `policy` (expected `policies`, or an `x-` extension key)"
        );
        let e = err("x-ok: 1");
        assert!(e.starts_with("cfg.yaml: missing field `policies`"), "{e}");
        let e = err("policies: [{name: a, module: p.wasm, match: {subresources: [pods/status]}}]");
        assert_eq!(
            e,
            "cfg.yaml: policy `a`: match.subresources entry \"pods/status\" must be a subresource name like `ephemeralcontainers`, or `*`"
        );
        let e = err("policies: [{name: a, module: p.wasm, existing_violations: warn}]");
        assert!(
            e.starts_with("cfg.yaml: policy `a`: unknown variant `warn`"),
            "{e}"
        );
        let e = err("policies: [{name: a, module: p.wasm, match: {operations: [PATCH]}}]");
        assert!(e.contains("unknown variant `PATCH`"), "{e}");
    }

    #[test]
    fn extension_keys_hold_anchors() {
        let (_d, store) = dir_with_module();
        let text = "x-m: &m {kinds: [Pod]}\npolicies: [{name: a, module: p.wasm, match: *m}]";
        let cfg = Config::from_yaml(text, "c", &store).expect("valid");
        assert_eq!(cfg.policies[0].matcher.kinds, ["Pod"]);
    }

    #[test]
    fn merge_keys_extend_an_anchored_block() {
        let (_d, store) = dir_with_module();
        let text = "x-m: &m {kinds: [Pod], operations: [UPDATE]}\n\
                    policies: [{name: a, module: p.wasm, match: {<<: *m, subresources: [ephemeralcontainers]}}]";
        let cfg = Config::from_yaml(text, "c", &store).expect("valid");
        let m = &cfg.policies[0].matcher;
        assert_eq!(
            (m.kinds.as_slice(), m.subresources.as_slice()),
            (&["Pod".to_owned()][..], &["ephemeralcontainers".to_owned()][..])
        );
        assert_eq!(m.operations, [crate::review::Operation::Update]);
    }

    #[test]
    fn dry_run_forces_monitor() {
        let (_d, store) = dir_with_module();
        let mut cfg = Config::from_yaml("policies: [{name: a, module: p.wasm}]", "c", &store).expect("valid");
        cfg.force_monitor();
        assert_eq!(cfg.policies[0].mode, Mode::Monitor);
    }

    #[test]
    fn builtin_prefix_names_an_embedded_module_in_any_configuration() {
        let (_d, store) = dir_with_module();
        let text = "policies: [{name: a, module: builtin:wasm/pinned_images.wasm, mode: monitor}]";
        let cfg = Config::from_yaml(text, "cfg.yaml", &store).expect("valid");
        let p = &cfg.policies[0];
        assert_eq!(p.module.origin, "builtin:policies/wasm/pinned_images.wasm");
        let (_, embedded) = builtin::MODULES
            .iter()
            .find(|(path, _)| *path == "wasm/pinned_images.wasm")
            .expect("embedded");
        assert_eq!(&*p.module.bytes, *embedded);
        assert_eq!(p.mode, Mode::Monitor);
    }

    #[test]
    fn an_unknown_builtin_module_is_refused_naming_the_known_ones() {
        let e = err("policies: [{name: a, module: builtin:wasm/pinned-images.wasm}]");
        assert_eq!(
            e,
            format!(
                "cfg.yaml: policy `a`: no built-in module `wasm/pinned-images.wasm`; the built-in modules are {}",
                builtin::names()
            )
        );
        assert!(
            e.ends_with("are wasm/pinned_images.wasm, wasm/gpu_request_limit.wasm, wasm/readiness_probe.wasm, wasm/no_plaintext_secrets.wasm, wasm/gpu_node_isolation.wasm, wasm/default_resources.wasm, wasm/gpu_tolerations.wasm, wasm/secret_references.wasm"),
            "{e}"
        );
        // The built-in configuration's own paths fail the same way.
        let e = Config::from_yaml(
            "policies: [{name: a, module: wasm/x.wasm}]",
            "builtin",
            &ModuleStore::Builtin,
        )
        .expect_err("not embedded")
        .to_string();
        assert!(e.starts_with("builtin: policy `a`: no built-in module `wasm/x.wasm`; the built-in modules are wasm/pinned_images.wasm, "), "{e}");
    }

    #[test]
    fn a_file_named_like_the_prefix_is_reached_through_dot_slash() {
        let (d, store) = dir_with_module();
        std::fs::write(d.path().join("builtin:p.wasm"), b"\0asm\x01\0\0\0").expect("write module");
        let cfg =
            Config::from_yaml("policies: [{name: a, module: ./builtin:p.wasm}]", "c", &store).expect("valid");
        assert!(cfg.policies[0].module.origin.ends_with("builtin:p.wasm"));
        assert!(!cfg.policies[0].module.origin.starts_with("builtin:"));
    }

    #[test]
    fn builtin_default_set_loads() {
        let cfg = Config::builtin().expect("the embedded default set is valid");
        assert_eq!(cfg.policies.len(), builtin::MODULES.len().max(cfg.policies.len()));
    }
}
