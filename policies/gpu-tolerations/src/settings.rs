//! Settings of `gpu-tolerations`: for each GPU resource, the tolerations (and optionally the node
//! labels) that put a pod requesting it onto the GPU node pool.
//!
//! Keyed by resource because each device plugin's nodes carry their own taint (`nvidia.com/gpu`,
//! `amd.com/gpu`), and by prefix because NVIDIA's "mixed" MIG strategy advertises one resource per
//! slice profile (`nvidia.com/mig-1g.5gb`, ...) on nodes that still carry the `nvidia.com/gpu`
//! taint.

use std::collections::BTreeMap;

use portcullis_policy_sdk::Settings;
use serde::Deserialize;

use crate::toleration::{Effect, Operator, Toleration};

/// The policy's settings. A key given replaces that map of the defaults whole.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GpuTolerationsSettings {
    /// Exact GPU resource name → its placement.
    pub resources: BTreeMap<String, GpuPlacement>,
    /// GPU resource name prefix → its placement.
    pub resource_prefixes: BTreeMap<String, GpuPlacement>,
}

/// What a pod requesting one GPU resource gets.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct GpuPlacement {
    /// Tolerations for the GPU nodes' taints, added unless already covered.
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Labels merged into `nodeSelector`; a label the pod already sets to another value is kept
    /// and reported as a warning.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

impl GpuPlacement {
    /// The placement for nodes tainted `<key>:NoSchedule`, as GPU operators taint them.
    pub fn tainted(key: &str) -> Self {
        Self {
            tolerations: vec![Toleration {
                key: key.to_string(),
                operator: Operator::Exists,
                value: String::new(),
                effect: Some(Effect::NoSchedule),
                toleration_seconds: None,
            }],
            node_selector: BTreeMap::new(),
        }
    }
}

impl Default for GpuTolerationsSettings {
    fn default() -> Self {
        let nvidia = GpuPlacement::tainted("nvidia.com/gpu");
        Self {
            resources: BTreeMap::from([
                ("nvidia.com/gpu".to_string(), nvidia.clone()),
                ("amd.com/gpu".to_string(), GpuPlacement::tainted("amd.com/gpu")),
            ]),
            resource_prefixes: BTreeMap::from([("nvidia.com/mig-".to_string(), nvidia)]),
        }
    }
}

impl GpuTolerationsSettings {
    /// Every placement that applies to `resource`: its exact entry, then matching prefixes.
    pub fn placements_for(&self, resource: &str) -> Vec<(&str, &GpuPlacement)> {
        let exact = self.resources.get_key_value(resource);
        let prefixed = self
            .resource_prefixes
            .iter()
            .filter(|(prefix, _)| resource.starts_with(prefix.as_str()));
        exact
            .into_iter()
            .chain(prefixed)
            .map(|(name, placement)| (name.as_str(), placement))
            .collect()
    }
}

impl Settings for GpuTolerationsSettings {
    /// Refuses empty names and prefixes (an empty prefix would make every resource a GPU),
    /// tolerations the API server would refuse, and empty node-selector keys.
    fn validate(&self) -> Result<(), String> {
        let entries = self
            .resources
            .iter()
            .map(|e| ("resources", e))
            .chain(self.resource_prefixes.iter().map(|e| ("resource_prefixes", e)));
        for (setting, (name, placement)) in entries {
            if name.is_empty() {
                return Err(format!("{setting}: a resource name must not be empty"));
            }
            for (i, toleration) in placement.tolerations.iter().enumerate() {
                toleration
                    .check()
                    .map_err(|e| format!("{setting}.{name}.tolerations[{i}]: {e}"))?;
            }
            if placement.node_selector.keys().any(String::is_empty) {
                return Err(format!(
                    "{setting}.{name}.node_selector: a label key must not be empty"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_map_nvidia_amd_and_mig_to_their_taints() {
        let s = GpuTolerationsSettings::default();
        assert_eq!(s.validate(), Ok(()));
        let keys = |resource: &str| -> Vec<String> {
            s.placements_for(resource)
                .into_iter()
                .flat_map(|(_, p)| p.tolerations.iter().map(|t| t.key.clone()))
                .collect()
        };
        assert_eq!(keys("nvidia.com/gpu"), ["nvidia.com/gpu"]);
        assert_eq!(keys("amd.com/gpu"), ["amd.com/gpu"]);
        assert_eq!(keys("nvidia.com/mig-2g.10gb"), ["nvidia.com/gpu"]);
        assert!(keys("memory").is_empty());
    }

    #[test]
    fn settings_read_like_kubernetes_tolerations() {
        let s: GpuTolerationsSettings = serde_json::from_value(json!({
            "resources": {"nvidia.com/gpu": {
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                                 "effect": "NoSchedule"}],
                "node_selector": {"accelerator": "nvidia-a100"}}}
        }))
        .expect("valid settings");
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.resources["nvidia.com/gpu"].tolerations[0].value, "present");
        // resource_prefixes keeps its default when not given.
        assert!(s.resource_prefixes.contains_key("nvidia.com/mig-"));
    }

    #[test]
    fn bad_settings_name_the_setting() {
        let cases = [
            (json!({"resources": {"": {}}}), "resources: a resource name"),
            (
                json!({"resource_prefixes": {"x.io/": {"tolerations": [{"value": "v"}]}}}),
                "resource_prefixes.x.io/.tolerations[0]: an empty key requires operator Exists",
            ),
            (
                json!({"resources": {"x.io/gpu": {"node_selector": {"": "a"}}}}),
                "resources.x.io/gpu.node_selector",
            ),
        ];
        for (settings, message) in cases {
            let s: GpuTolerationsSettings = serde_json::from_value(settings.clone()).expect("deserialises");
            let e = s.validate().expect_err("invalid");
            assert!(e.contains(message), "{settings}: {e}");
        }
        for typo in [
            json!({"resource": {}}),
            json!({"resources": {"x.io/gpu": {"toleration": []}}}),
            json!({"resources": {"x.io/gpu": {"tolerations": [{"effect": "NoSchedul"}]}}}),
        ] {
            assert!(serde_json::from_value::<GpuTolerationsSettings>(typo).is_err());
        }
    }
}
