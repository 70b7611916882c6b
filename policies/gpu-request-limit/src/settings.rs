//! Settings of `gpu-request-limit`: which extended resources count as GPUs.
//!
//! GPUs reach Kubernetes through device plugins, each naming its own extended resource, so the
//! list is configuration rather than code: a cluster with Habana or TPU-like devices adds theirs.
//! NVIDIA's MIG strategy "mixed" advertises one resource per slice profile
//! (`nvidia.com/mig-1g.5gb`, `nvidia.com/mig-3g.20gb`, ...), hence prefixes as well as names.

use portcullis_policy_sdk::{Settings, gpu};
use serde::Deserialize;

/// Which resources are GPUs.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct GpuRequestLimitSettings {
    /// Exact resource names of GPUs.
    pub gpu_resources: Vec<String>,
    /// Prefixes of GPU resource names (a resource starting with one is a GPU).
    pub gpu_resource_prefixes: Vec<String>,
}

impl Default for GpuRequestLimitSettings {
    fn default() -> Self {
        Self {
            gpu_resources: gpu::default_gpu_resources(),
            gpu_resource_prefixes: gpu::default_gpu_resource_prefixes(),
        }
    }
}

impl GpuRequestLimitSettings {
    /// Whether `resource` is a GPU under these settings.
    pub fn is_gpu(&self, resource: &str) -> bool {
        gpu::is_gpu(&self.gpu_resources, &self.gpu_resource_prefixes, resource)
    }
}

impl Settings for GpuRequestLimitSettings {
    /// Every entry must be a domain-qualified extended resource name (`vendor.com/...`): anything
    /// else (`gpu`, `""`) is a typo that would silently check nothing, or match every resource.
    fn validate(&self) -> Result<(), String> {
        gpu::check_names(&self.gpu_resources, &self.gpu_resource_prefixes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_cover_the_common_vendors_and_mig() {
        let s = GpuRequestLimitSettings::default();
        for gpu in [
            "nvidia.com/gpu",
            "amd.com/gpu",
            "gpu.intel.com/i915",
            "nvidia.com/mig-1g.5gb",
        ] {
            assert!(s.is_gpu(gpu), "{gpu}");
        }
        for other in ["cpu", "memory", "nvidia.com/gpu.shared", "example.com/fpga"] {
            assert!(!s.is_gpu(other), "{other}");
        }
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn unqualified_names_are_rejected() {
        for bad in ["gpu", "", "nvidia/gpu"] {
            let s = GpuRequestLimitSettings {
                gpu_resources: vec![bad.to_string()],
                gpu_resource_prefixes: vec![],
            };
            assert!(s.validate().is_err(), "{bad:?}");
        }
        let s = GpuRequestLimitSettings {
            gpu_resources: vec![],
            gpu_resource_prefixes: vec!["".to_string()],
        };
        let e = s.validate().expect_err("empty prefix matches everything");
        assert!(e.contains("gpu_resource_prefixes"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let typo = serde_json::json!({"gpu_resource": ["habana.ai/gaudi"]});
        assert!(serde_json::from_value::<GpuRequestLimitSettings>(typo).is_err());
    }
}
