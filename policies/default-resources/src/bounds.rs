//! Bounds: the LimitRange maps in force for one request, parsed and checked, per resource.
//!
//! Settings keep quantities as JSON values so that defaults are written back exactly as
//! configured; this module pairs each with its parsed [`Quantity`] for comparisons, and checks the
//! consistency rules the API server applies to a LimitRange, so that a contradictory
//! configuration (a default above the maximum) fails at load time rather than denying every pod.

use std::collections::BTreeMap;

use portcullis_policy_sdk::quantity::Quantity;
use serde_json::Value;

use crate::settings::LimitSet;

/// One configured quantity: as written, and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    /// The value as configured, written verbatim into manifests.
    pub raw: Value,
    /// Its exact value.
    pub quantity: Quantity,
}

impl Bound {
    /// The configured text, for messages.
    pub fn shown(&self) -> String {
        shown(&self.raw)
    }
}

/// What is configured for one resource.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceBounds {
    /// Default limit.
    pub default: Option<Bound>,
    /// Default request.
    pub default_request: Option<Bound>,
    /// Minimum request and limit.
    pub min: Option<Bound>,
    /// Maximum limit and request.
    pub max: Option<Bound>,
    /// Maximum limit / request.
    pub max_limit_request_ratio: Option<Bound>,
}

/// Selects one map's field of a [`ResourceBounds`].
type Slot = fn(&mut ResourceBounds) -> &mut Option<Bound>;

/// Every configured resource's bounds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Bounds {
    by_resource: BTreeMap<String, ResourceBounds>,
}

impl Bounds {
    /// Parses and checks a merged [`LimitSet`]. Errors name the map and resource
    /// (`max.memory: ...`).
    pub fn parse(set: &LimitSet) -> Result<Bounds, String> {
        let mut by_resource: BTreeMap<String, ResourceBounds> = BTreeMap::new();
        let maps: [(&str, &BTreeMap<String, Value>, Slot); 5] = [
            ("default", &set.default, |r| &mut r.default),
            ("default_request", &set.default_request, |r| {
                &mut r.default_request
            }),
            ("min", &set.min, |r| &mut r.min),
            ("max", &set.max, |r| &mut r.max),
            ("max_limit_request_ratio", &set.max_limit_request_ratio, |r| {
                &mut r.max_limit_request_ratio
            }),
        ];
        for (setting, map, slot) in maps {
            for (resource, raw) in map {
                if resource.is_empty() {
                    return Err(format!("{setting}: a resource name must not be empty"));
                }
                let quantity = Quantity::parse(raw).map_err(|e| format!("{setting}.{resource}: {e}"))?;
                if quantity.is_negative() {
                    return Err(format!(
                        "{setting}.{resource}: {} must not be negative",
                        shown(raw)
                    ));
                }
                let bound = Bound {
                    raw: raw.clone(),
                    quantity,
                };
                *slot(by_resource.entry(resource.clone()).or_default()) = Some(bound);
            }
        }
        for (resource, bounds) in &by_resource {
            bounds.check(resource)?;
        }
        Ok(Bounds { by_resource })
    }

    /// The bounds of `resource`, if any is configured.
    pub fn get(&self, resource: &str) -> Option<&ResourceBounds> {
        self.by_resource.get(resource)
    }

    /// Configured resource names, sorted.
    pub fn resources(&self) -> impl Iterator<Item = &str> {
        self.by_resource.keys().map(String::as_str)
    }
}

impl ResourceBounds {
    /// The API server's LimitRange rules: min ≤ default request ≤ default ≤ max (each pair that
    /// is configured), and a ratio of at least 1.
    fn check(&self, resource: &str) -> Result<(), String> {
        let ordered = [
            ("min", &self.min, "default_request", &self.default_request),
            ("min", &self.min, "default", &self.default),
            ("min", &self.min, "max", &self.max),
            ("default_request", &self.default_request, "default", &self.default),
            ("default_request", &self.default_request, "max", &self.max),
            ("default", &self.default, "max", &self.max),
        ];
        for (low_name, low, high_name, high) in ordered {
            if let (Some(low), Some(high)) = (low, high)
                && low.quantity > high.quantity
            {
                return Err(format!(
                    "{low_name}.{resource} {} is above {high_name}.{resource} {}",
                    low.shown(),
                    high.shown()
                ));
            }
        }
        if let Some(ratio) = &self.max_limit_request_ratio
            && ratio.quantity < Quantity::from_units(1)
        {
            return Err(format!(
                "max_limit_request_ratio.{resource}: {} must be at least 1 (a limit is never \
                 below its request)",
                ratio.shown()
            ));
        }
        Ok(())
    }
}

/// A quantity as written: strings bare, numbers as numbers.
pub fn shown(raw: &Value) -> String {
    match raw {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(value: Value) -> LimitSet {
        serde_json::from_value(value).expect("limit set")
    }

    #[test]
    fn pairs_raw_values_with_quantities() {
        let b = Bounds::parse(&set(json!({"default": {"memory": "1Gi", "nvidia.com/gpu": 1},
                                          "min": {"memory": 1048576}})))
        .expect("valid");
        let memory = b.get("memory").expect("memory");
        assert_eq!(memory.default.as_ref().map(Bound::shown).as_deref(), Some("1Gi"));
        assert_eq!(memory.min.as_ref().map(Bound::shown).as_deref(), Some("1048576"));
        assert_eq!(b.resources().collect::<Vec<_>>(), ["memory", "nvidia.com/gpu"]);
    }

    #[test]
    fn consistency_rules() {
        let ok = set(json!({"min": {"cpu": "100m"}, "default_request": {"cpu": "250m"},
                            "default": {"cpu": "1"}, "max": {"cpu": "1000m"},
                            "max_limit_request_ratio": {"cpu": 1}}));
        assert!(Bounds::parse(&ok).is_ok());
        let bad = [
            (
                json!({"min": {"cpu": "1"}, "max": {"cpu": "500m"}}),
                "min.cpu 1 is above max.cpu 500m",
            ),
            (
                json!({"min": {"cpu": "1"}, "default_request": {"cpu": "500m"}}),
                "min.cpu",
            ),
            (
                json!({"default": {"cpu": "2"}, "max": {"cpu": "1"}}),
                "default.cpu 2 is above max.cpu 1",
            ),
            (
                json!({"max_limit_request_ratio": {"memory": "999m"}}),
                "at least 1",
            ),
            (
                json!({"max": {"memory": "lots"}}),
                "max.memory: quantity \"lots\"",
            ),
            (
                json!({"min": {"": "1"}}),
                "min: a resource name must not be empty",
            ),
        ];
        for (value, message) in bad {
            let e = Bounds::parse(&set(value.clone())).expect_err("inconsistent");
            assert!(e.contains(message), "{value}: {e}");
        }
    }
}
