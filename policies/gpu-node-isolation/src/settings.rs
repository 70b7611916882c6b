//! Settings of the `gpu-node-isolation` policy: what marks a GPU node and a GPU request.

use portcullis_policy_sdk::gpu;
use serde::Deserialize;

use crate::toleration::{GpuTaint, TaintEffect};

/// GPU taints, GPU resource names, and kinds that may tolerate GPU taints freely.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Taints that GPU node pools carry: a toleration that tolerates one of them is a ticket onto
    /// GPU nodes.
    pub gpu_taints: Vec<GpuTaint>,
    /// Extended resources that are GPUs.
    pub gpu_resources: Vec<String>,
    /// Prefixes of resource names that are GPUs too (NVIDIA MIG slices such as
    /// `nvidia.com/mig-1g.5gb`).
    pub gpu_resource_prefixes: Vec<String>,
    /// Kinds whose pods legitimately run on every node without using a GPU: node agents such as
    /// the device plugin, DCGM exporter or log collectors. Pods owned by these kinds are exempt.
    pub exempt_kinds: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Self {
            // GPU node pools are tainted NoSchedule with the device plugin's resource name, the
            // value varying by platform (GKE: `present`).
            gpu_taints: gpu::DEFAULT_GPU_RESOURCES
                .iter()
                .map(|key| GpuTaint::any_value(key, TaintEffect::NoSchedule))
                .collect(),
            gpu_resources: gpu::default_gpu_resources(),
            gpu_resource_prefixes: gpu::default_gpu_resource_prefixes(),
            exempt_kinds: strings(&["DaemonSet"]),
        }
    }
}

impl Settings {
    /// Whether `resource` names a GPU.
    pub fn is_gpu_resource(&self, resource: &str) -> bool {
        gpu::is_gpu(&self.gpu_resources, &self.gpu_resource_prefixes, resource)
    }

    /// Whether `kind` is exempt.
    pub fn is_exempt(&self, kind: &str) -> bool {
        self.exempt_kinds.iter().any(|k| k == kind)
    }
}

impl portcullis_policy_sdk::Settings for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.gpu_taints.is_empty() {
            return Err("gpu_taints is empty, so no toleration could ever match".into());
        }
        for taint in &self.gpu_taints {
            let blank = |text: &str| text.is_empty() || text.contains(char::is_whitespace);
            if blank(&taint.key)
                || taint
                    .value
                    .as_deref()
                    .is_some_and(|v| v.contains(char::is_whitespace))
            {
                return Err(format!(
                    "gpu_taints: \"{taint}\" needs a key, and neither key nor value may contain whitespace"
                ));
            }
        }
        if self.gpu_resources.is_empty() && self.gpu_resource_prefixes.is_empty() {
            return Err(
                "gpu_resources and gpu_resource_prefixes are both empty, so every GPU pod would be rejected"
                    .into(),
            );
        }
        let lists = [
            ("gpu_resources", &self.gpu_resources),
            ("gpu_resource_prefixes", &self.gpu_resource_prefixes),
            ("exempt_kinds", &self.exempt_kinds),
        ];
        for (setting, items) in lists {
            if let Some(bad) = items
                .iter()
                .find(|item| item.is_empty() || item.contains(char::is_whitespace))
            {
                return Err(format!(
                    "{setting}: \"{bad}\" is not a valid name (empty or contains whitespace)"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::Settings as _;

    #[test]
    fn defaults() {
        let s = Settings::default();
        assert_eq!(s.validate(), Ok(()));
        assert!(s.is_gpu_resource("nvidia.com/gpu"));
        assert!(s.is_gpu_resource("nvidia.com/mig-1g.5gb"));
        assert!(s.is_gpu_resource("gpu.intel.com/i915"));
        assert!(!s.is_gpu_resource("cpu"));
        assert!(!s.is_gpu_resource("nvidia.com/gpu.shared"));
        assert!(s.is_exempt("DaemonSet") && !s.is_exempt("Deployment"));
        let taints: Vec<String> = s.gpu_taints.iter().map(ToString::to_string).collect();
        assert_eq!(
            taints,
            [
                "nvidia.com/gpu:NoSchedule",
                "amd.com/gpu:NoSchedule",
                "gpu.intel.com/i915:NoSchedule"
            ]
        );
    }

    #[test]
    fn invalid() {
        let no_taints = Settings {
            gpu_taints: vec![],
            ..Settings::default()
        };
        assert!(no_taints.validate().is_err());
        let blank_key = Settings {
            gpu_taints: vec![GpuTaint::any_value("", TaintEffect::NoSchedule)],
            ..Settings::default()
        };
        assert_eq!(
            blank_key.validate(),
            Err(
                "gpu_taints: \":NoSchedule\" needs a key, and neither key nor value may contain whitespace"
                    .into()
            )
        );
        let parsed: Settings = serde_json::from_str(
            r#"{"gpu_taints": [{"key": "sku", "value": "gpu", "effect": "NoExecute"}]}"#,
        )
        .expect("settings");
        assert_eq!(parsed.gpu_taints[0].to_string(), "sku=gpu:NoExecute");
        for typo in [
            r#"{"gpu_taints": [{"key": "sku", "effect": "noschedule"}]}"#,
            r#"{"gpu_taints": [{"key": "sku"}]}"#,
            r#"{"gpu_taint_keys": ["sku"]}"#,
        ] {
            assert!(serde_json::from_str::<Settings>(typo).is_err(), "{typo}");
        }
        let blank = Settings {
            gpu_resources: vec![" ".into()],
            ..Settings::default()
        };
        assert!(blank.validate().expect_err("blank").starts_with("gpu_resources:"));
        let no_gpus = Settings {
            gpu_resources: vec![],
            gpu_resource_prefixes: vec![],
            ..Settings::default()
        };
        assert!(no_gpus.validate().is_err());
    }
}
