//! The configuration file as written: serde structs that refuse unknown keys.
//!
//! Nothing here is validated beyond shape; [`super::Config`] turns these into checked
//! [`crate::policy::spec::PolicySpec`]s. Policies are parsed one at a time so that a shape
//! error can name the policy it is in.

use std::path::PathBuf;

use serde::Deserialize;

use crate::engine::abi::Abi;
use crate::policy::matching::ControllerCreated;
use crate::policy::spec::{ExistingViolations, FailurePolicy, Mode};
use crate::review::Operation;

/// The top level of a configuration file.
#[derive(Debug, Deserialize)]
pub struct RawConfig {
    /// Each entry is parsed on its own into [`RawPolicy`], so errors can name the policy.
    pub policies: Vec<serde_yaml_ng::Value>,
    /// Other top-level keys. Only `x-` extension keys (holders of YAML anchors, as in
    /// `x-workloads: &workloads`) are allowed; any other is an error, checked by the caller.
    #[serde(flatten)]
    pub extensions: std::collections::BTreeMap<String, serde_yaml_ng::Value>,
}

/// One entry of `policies:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// Unique, `[a-z0-9-]`.
    pub name: String,
    /// Path to the module, relative to the configuration file, or `builtin:<path>` for a module
    /// embedded in the binary.
    pub module: PathBuf,
    /// `core`, `wasi`, `wapc` or `component`: the transport the module must speak. Absent, the
    /// engine detects it from the module's exports.
    #[serde(default)]
    pub abi: Option<Abi>,
    /// May the policy change the object?
    #[serde(default)]
    pub mutating: bool,
    /// `enforce` or `monitor`.
    #[serde(default)]
    pub mode: Mode,
    /// `deny` or `allow`.
    #[serde(default)]
    pub failure: FailurePolicy,
    /// `allow` or `deny`: what a rejection of an UPDATE does when the old object had the same
    /// violations.
    #[serde(default)]
    pub existing_violations: ExistingViolations,
    /// Time bound per evaluation, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Linear memory bound per instance, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Which requests the policy sees.
    #[serde(default, rename = "match")]
    pub matching: RawMatch,
    /// Handed to the policy as is.
    #[serde(default = "empty_settings")]
    pub settings: serde_json::Value,
}

/// A policy's `match:` block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    /// Object kinds (group-agnostic).
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Subresources seen besides the main resource.
    #[serde(default)]
    pub subresources: Vec<String>,
    /// Admission operations.
    #[serde(default)]
    pub operations: Vec<Operation>,
    /// Namespace include and exclude lists.
    #[serde(default)]
    pub namespaces: RawNamespaces,
    /// `judge` or `skip` objects controllers create from a template.
    #[serde(default)]
    pub controller_created: ControllerCreated,
}

/// `match.namespaces`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNamespaces {
    /// Only these namespaces (empty: all).
    #[serde(default)]
    pub include: Vec<String>,
    /// Never these namespaces.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn default_timeout_ms() -> u64 {
    100
}

fn default_memory_mib() -> u64 {
    64
}

fn empty_settings() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}
