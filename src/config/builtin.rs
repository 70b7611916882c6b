//! The default policy set compiled into the binary, so `portcullis serve` needs no files.
//!
//! `policies/default.yaml` and the modules it names are embedded at build time; module paths
//! in the embedded configuration resolve against [`MODULES`] instead of the file system. Any
//! other configuration names an embedded module as `builtin:<path>` ([`PREFIX`]), so a
//! configuration shipped without module files (a ConfigMap) can still tune the built-in policies.

use std::path::Path;
use std::sync::Arc;

use crate::policy::spec::ModuleSource;

/// The embedded `policies/default.yaml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../policies/default.yaml");

/// Modules embedded in the binary, keyed by their path relative to `policies/`.
pub const MODULES: &[(&str, &[u8])] = &[
    (
        "wasm/pinned_images.wasm",
        include_bytes!("../../policies/wasm/pinned_images.wasm"),
    ),
    (
        "wasm/gpu_request_limit.wasm",
        include_bytes!("../../policies/wasm/gpu_request_limit.wasm"),
    ),
    (
        "wasm/readiness_probe.wasm",
        include_bytes!("../../policies/wasm/readiness_probe.wasm"),
    ),
    (
        "wasm/no_plaintext_secrets.wasm",
        include_bytes!("../../policies/wasm/no_plaintext_secrets.wasm"),
    ),
    (
        "wasm/gpu_node_isolation.wasm",
        include_bytes!("../../policies/wasm/gpu_node_isolation.wasm"),
    ),
    (
        "wasm/default_resources.wasm",
        include_bytes!("../../policies/wasm/default_resources.wasm"),
    ),
    (
        "wasm/gpu_tolerations.wasm",
        include_bytes!("../../policies/wasm/gpu_tolerations.wasm"),
    ),
    (
        "wasm/secret_references.wasm",
        include_bytes!("../../policies/wasm/secret_references.wasm"),
    ),
];

/// The prefix of a module path that names an embedded module (`builtin:wasm/pinned_images.wasm`)
/// in any configuration. A file whose name starts with it is reached as `./builtin:...`.
pub const PREFIX: &str = "builtin:";

/// The embedded module at `path` (as written in `default.yaml`, or after [`PREFIX`]), if there
/// is one.
pub fn module(path: &Path) -> Option<ModuleSource> {
    let wanted = path.to_str()?.trim_start_matches("./");
    MODULES
        .iter()
        .find(|(p, _)| *p == wanted)
        .map(|(p, bytes)| ModuleSource {
            origin: format!("{PREFIX}policies/{p}"),
            bytes: Arc::from(*bytes),
        })
}

/// The embedded modules' paths, comma-separated, for messages that list them.
pub fn names() -> String {
    MODULES.iter().map(|(p, _)| *p).collect::<Vec<_>>().join(", ")
}
