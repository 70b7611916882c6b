//! Fuzzes the configuration loader, [`Config::from_yaml`]: YAML shape, the raw → validated
//! stage, anchors and `x-` extension keys. Module paths resolve in a scratch directory holding
//! small placeholder files for the paths the seed configurations name (the loader reads a
//! module's bytes but does not compile them), so valid seeds load all the way through.
//!
//! Properties:
//! - every error names the file it came from (`fuzz.yaml: …`), and an error about one policy
//!   names that policy (`policy `…`: …`);
//! - a loaded configuration holds only what validation allows: unique valid names, timeouts and
//!   memory bounds in range, no blank kind, settings that are JSON.

#![no_main]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use portcullis::config::builtin::MODULES;
use portcullis::config::{Config, ConfigError, ModuleStore};
use portcullis::engine::limits::MAX_POLICY_MEMORY_MIB;
use portcullis::policy::spec::{PolicyName, Timeout};

const ORIGIN: &str = "fuzz.yaml";

/// `<tmp>/portcullis-fuzz-config/cfg` with `p.wasm` and `wasm/<module>` beside it, and
/// `../policies/wasm/<module>`, the paths `policies/default.yaml` and `examples/` use.
fn store() -> &'static ModuleStore {
    static STORE: OnceLock<ModuleStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let base = std::env::temp_dir().join("portcullis-fuzz-config");
        let cfg = base.join("cfg");
        let mut files: Vec<PathBuf> = vec![cfg.join("p.wasm")];
        for (path, _) in MODULES {
            files.push(cfg.join(path));
            files.push(base.join("policies").join(path));
        }
        for file in files {
            let dir = file.parent().expect("placeholder files live in a directory");
            std::fs::create_dir_all(dir).expect("create the scratch module directory");
            std::fs::write(&file, b"\0asm\x01\0\0\0").expect("write a placeholder module");
        }
        ModuleStore::Dir(cfg)
    })
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let config = match Config::from_yaml(text, ORIGIN, store()) {
        Ok(config) => config,
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.starts_with("fuzz.yaml: "), "{shown}");
            if let ConfigError::Policy { policy, .. } = &e {
                assert!(shown.starts_with(&format!("fuzz.yaml: policy `{policy}`: ")));
            }
            return;
        }
    };
    assert_eq!(config.origin, ORIGIN);
    let mut names = HashSet::new();
    for policy in &config.policies {
        let name = policy.name.as_str();
        assert_eq!(PolicyName::new(name).as_ref(), Ok(&policy.name));
        assert!(names.insert(name), "duplicate name {name}");
        let timeout = policy.timeout.duration();
        assert!(timeout > Duration::ZERO && timeout <= Timeout::MAX, "{timeout:?}");
        let memory = policy.memory.bytes();
        assert!(memory > 0 && memory <= MAX_POLICY_MEMORY_MIB << 20, "{memory}");
        assert!(policy.matcher.kinds.iter().all(|k| !k.trim().is_empty()));
        serde_json::from_str::<serde_json::Value>(policy.settings.json()).expect("settings are JSON text");
    }
});
