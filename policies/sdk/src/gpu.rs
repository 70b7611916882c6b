//! Which extended resources are GPUs: the defaults every GPU-aware policy starts from, the
//! match, and the check of a configured list.
//!
//! GPUs reach Kubernetes through device plugins, each naming its own extended resource, so the
//! lists are settings; NVIDIA's MIG "mixed" strategy advertises one resource per slice profile
//! (`nvidia.com/mig-1g.5gb`, ...), hence prefixes as well as names. Policies keep the two lists as
//! their own settings fields (serde's `flatten` does not combine with `deny_unknown_fields`) and
//! call these functions, so the vendors and the rules stay the same in every policy.

/// GPU resource names known by default: NVIDIA, AMD and Intel device plugins.
pub const DEFAULT_GPU_RESOURCES: [&str; 3] = ["nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915"];

/// GPU resource name prefixes known by default: NVIDIA MIG slices.
pub const DEFAULT_GPU_RESOURCE_PREFIXES: [&str; 1] = ["nvidia.com/mig-"];

/// [`DEFAULT_GPU_RESOURCES`] as owned strings, for a settings default.
pub fn default_gpu_resources() -> Vec<String> {
    DEFAULT_GPU_RESOURCES.map(String::from).to_vec()
}

/// [`DEFAULT_GPU_RESOURCE_PREFIXES`] as owned strings, for a settings default.
pub fn default_gpu_resource_prefixes() -> Vec<String> {
    DEFAULT_GPU_RESOURCE_PREFIXES.map(String::from).to_vec()
}

/// Whether `resource` is one of `names` or starts with one of `prefixes`.
pub fn is_gpu(names: &[String], prefixes: &[String], resource: &str) -> bool {
    names.iter().any(|r| r == resource) || prefixes.iter().any(|p| resource.starts_with(p.as_str()))
}

/// Every entry of the `gpu_resources` and `gpu_resource_prefixes` settings must be a
/// domain-qualified extended resource name (`vendor.com/...`): anything else (`gpu`, `""`) is a
/// typo that would silently check nothing, or, as a prefix, match every resource.
pub fn check_names(names: &[String], prefixes: &[String]) -> Result<(), String> {
    let names = names.iter().map(|n| ("gpu_resources", n));
    let prefixes = prefixes.iter().map(|n| ("gpu_resource_prefixes", n));
    for (setting, name) in names.chain(prefixes) {
        if !name
            .split_once('/')
            .is_some_and(|(domain, _)| domain.contains('.'))
        {
            return Err(format!(
                "{setting}: {name:?} is not a domain-qualified extended resource name \
                 such as \"nvidia.com/gpu\""
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_vendors_and_mig_slices() {
        let (names, prefixes) = (default_gpu_resources(), default_gpu_resource_prefixes());
        for gpu in [
            "nvidia.com/gpu",
            "amd.com/gpu",
            "gpu.intel.com/i915",
            "nvidia.com/mig-1g.5gb",
        ] {
            assert!(is_gpu(&names, &prefixes, gpu), "{gpu}");
        }
        for other in ["cpu", "memory", "nvidia.com/gpu-x", "example.com/fpga"] {
            assert!(!is_gpu(&names, &prefixes, other), "{other}");
        }
        assert_eq!(check_names(&names, &prefixes), Ok(()));
    }

    #[test]
    fn unqualified_names_are_refused_with_the_setting_named() {
        let e = check_names(&["gpu".into()], &[]).expect_err("unqualified");
        assert_eq!(
            e,
            "gpu_resources: \"gpu\" is not a domain-qualified extended resource name such as \"nvidia.com/gpu\""
        );
        let e = check_names(&[], &["".into()]).expect_err("empty prefix");
        assert!(e.starts_with("gpu_resource_prefixes: \"\""), "{e}");
    }
}
