//! The default policy set compiled into the binary, so `portcullis serve` needs no files.
//!
//! `policies/default.yaml` and the modules it names are embedded at build time; module paths
//! in the embedded configuration resolve against [`MODULES`] instead of the file system.

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

/// The embedded module at `path` (as written in `default.yaml`), if there is one.
pub fn module(path: &Path) -> Option<ModuleSource> {
    let wanted = path.to_str()?.trim_start_matches("./");
    MODULES
        .iter()
        .find(|(p, _)| *p == wanted)
        .map(|(p, bytes)| ModuleSource {
            origin: format!("builtin:policies/{p}"),
            bytes: Arc::from(*bytes),
        })
}
