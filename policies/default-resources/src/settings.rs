//! Settings of `default-resources`: a LimitRange of type Container, written once for the whole
//! cluster and overridden per namespace.
//!
//! A real LimitRange lives in each namespace and is easy to forget in the next one a team
//! creates; this policy carries the platform's defaults everywhere, and the `namespaces` map
//! tunes them where a team needs more (a training namespace with larger memory limits). Values
//! are kept as written (`"512Mi"`, `1`) so that defaults land in manifests exactly as configured.

use std::collections::BTreeMap;

use portcullis_policy_sdk::{Settings, gpu};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::bounds::Bounds;

/// The five LimitRange maps, each resource name → quantity (string or number).
#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSet {
    /// Limits given to containers that set none (LimitRange `default`); a resource left out
    /// here but in `max` gets `max` (see [`crate::bounds`]).
    pub default: BTreeMap<String, Value>,
    /// Requests given to containers that set none (LimitRange `defaultRequest`); a resource left
    /// out here gets `default`, else `min`.
    pub default_request: BTreeMap<String, Value>,
    /// Lowest allowed request (and limit).
    pub min: BTreeMap<String, Value>,
    /// Highest allowed limit (and request).
    pub max: BTreeMap<String, Value>,
    /// Highest allowed limit / request.
    pub max_limit_request_ratio: BTreeMap<String, Value>,
}

/// The policy's settings: cluster-wide maps, per-namespace overrides, and which resources are
/// GPUs (whose missing request is set to their limit).
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultResourcesSettings {
    /// Cluster-wide limits for containers that set none.
    pub default: BTreeMap<String, Value>,
    /// Cluster-wide requests for containers that set none.
    pub default_request: BTreeMap<String, Value>,
    /// Cluster-wide minimum request.
    pub min: BTreeMap<String, Value>,
    /// Cluster-wide maximum limit.
    pub max: BTreeMap<String, Value>,
    /// Cluster-wide maximum limit / request ratio.
    pub max_limit_request_ratio: BTreeMap<String, Value>,
    /// Namespace → maps whose entries replace the cluster-wide entries of the same map and
    /// resource (other entries are inherited).
    pub namespaces: BTreeMap<String, LimitSet>,
    /// Exact GPU resource names.
    pub gpu_resources: Vec<String>,
    /// GPU resource name prefixes (MIG slice profiles).
    pub gpu_resource_prefixes: Vec<String>,
}

impl Default for DefaultResourcesSettings {
    /// A platform's usual LimitRange: every container requests a quarter CPU and 512Mi and is
    /// held to 1Gi of memory unless it says otherwise. No CPU limit: CPU is compressible, and a
    /// CPU limit only throttles (latency spikes in model servers) without protecting neighbours.
    fn default() -> Self {
        Self {
            default: BTreeMap::from([("memory".to_string(), json!("1Gi"))]),
            default_request: BTreeMap::from([
                ("cpu".to_string(), json!("250m")),
                ("memory".to_string(), json!("512Mi")),
            ]),
            min: BTreeMap::new(),
            max: BTreeMap::new(),
            max_limit_request_ratio: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            gpu_resources: gpu::default_gpu_resources(),
            gpu_resource_prefixes: gpu::default_gpu_resource_prefixes(),
        }
    }
}

impl DefaultResourcesSettings {
    /// The maps in force in `namespace` (cluster-wide ones when `None` or not listed), parsed.
    pub fn bounds_for(&self, namespace: Option<&str>) -> Result<Bounds, String> {
        let overrides = namespace.and_then(|ns| self.namespaces.get(ns));
        let merged = |global: &BTreeMap<String, Value>, pick: fn(&LimitSet) -> &BTreeMap<String, Value>| {
            let mut map = global.clone();
            if let Some(set) = overrides {
                map.extend(pick(set).iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            map
        };
        let set = LimitSet {
            default: merged(&self.default, |s| &s.default),
            default_request: merged(&self.default_request, |s| &s.default_request),
            min: merged(&self.min, |s| &s.min),
            max: merged(&self.max, |s| &s.max),
            max_limit_request_ratio: merged(&self.max_limit_request_ratio, |s| &s.max_limit_request_ratio),
        };
        Bounds::parse(&set)
    }

    /// Whether `resource` is a GPU.
    pub fn is_gpu(&self, resource: &str) -> bool {
        gpu::is_gpu(&self.gpu_resources, &self.gpu_resource_prefixes, resource)
    }
}

impl Settings for DefaultResourcesSettings {
    /// Every quantity must parse, and the cluster-wide set and each namespace's merged set must be
    /// consistent as the API server requires of a LimitRange (min ≤ default request ≤ default ≤
    /// max, ratio ≥ 1). GPU names must be domain-qualified so that an empty prefix cannot make
    /// every resource a GPU.
    fn validate(&self) -> Result<(), String> {
        self.bounds_for(None)?;
        for namespace in self.namespaces.keys() {
            self.bounds_for(Some(namespace))
                .map_err(|e| format!("namespaces.{namespace}: {e}"))?;
        }
        gpu::check_names(&self.gpu_resources, &self.gpu_resource_prefixes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(value: Value) -> DefaultResourcesSettings {
        serde_json::from_value(value).expect("settings deserialise")
    }

    #[test]
    fn defaults_are_valid_and_give_cpu_memory_requests_and_a_memory_limit() {
        let s = DefaultResourcesSettings::default();
        assert_eq!(s.validate(), Ok(()));
        let b = s.bounds_for(Some("anywhere")).expect("bounds");
        assert_eq!(b.resources().collect::<Vec<_>>(), ["cpu", "memory"]);
        assert!(s.is_gpu("nvidia.com/mig-1g.5gb") && !s.is_gpu("memory"));
    }

    #[test]
    fn namespaces_override_entry_by_entry() {
        let s = settings(json!({
            "default": {"memory": "1Gi", "cpu": "1"},
            "namespaces": {"ml-training": {"default": {"memory": "16Gi"}, "max": {"memory": "64Gi"}}}
        }));
        assert_eq!(s.validate(), Ok(()));
        let training = s.bounds_for(Some("ml-training")).expect("bounds");
        let memory = training.get("memory").expect("memory");
        assert_eq!(memory.default.as_ref().map(|b| &b.raw), Some(&json!("16Gi")));
        assert!(memory.max.is_some());
        let cpu = training.get("cpu").expect("cpu inherited");
        assert_eq!(cpu.default.as_ref().map(|b| &b.raw), Some(&json!("1")));
        let other = s.bounds_for(Some("ml-prod")).expect("bounds");
        assert!(other.get("memory").and_then(|m| m.max.as_ref()).is_none());
    }

    #[test]
    fn invalid_settings_name_the_place() {
        let cases = [
            (json!({"default": {"memory": "1GB"}}), "default.memory"),
            (json!({"min": {"cpu": "-1"}}), "min.cpu"),
            (
                json!({"default": {"memory": "1Gi"}, "default_request": {"memory": "2Gi"}}),
                "default_request.memory 2Gi is above default.memory 1Gi",
            ),
            (
                json!({"namespaces": {"team-a": {"max": {"memory": "256Mi"}}}}),
                "namespaces.team-a: default_request.memory 512Mi is above max.memory 256Mi",
            ),
            (
                json!({"max_limit_request_ratio": {"cpu": "0.5"}}),
                "max_limit_request_ratio.cpu",
            ),
            (json!({"gpu_resource_prefixes": [""]}), "gpu_resource_prefixes"),
        ];
        for (value, message) in cases {
            let e = settings(value.clone()).validate().expect_err("invalid");
            assert!(e.contains(message), "{value}: {e}");
        }
        let typo = json!({"namespaces": {"a": {"defaults": {}}}});
        assert!(serde_json::from_value::<DefaultResourcesSettings>(typo).is_err());
    }
}
