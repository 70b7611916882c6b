//! GPU taints, and whether a pod's toleration tolerates one, exactly as the scheduler decides.
//!
//! A toleration is a ticket onto GPU nodes only if it tolerates the taint those nodes carry, so
//! the match follows `Toleration.ToleratesTaint` (kubernetes/kubernetes
//! staging/src/k8s.io/api/core/v1/toleration.go): a set effect must equal the taint's (an empty
//! one matches every effect), a set key must equal the taint's (an empty key with `Exists`
//! matches every key), then `Exists` matches any value, `Equal` (or no operator) an equal value,
//! and `Lt`/`Gt` compare the values as 64-bit integers. `tolerations[i]` with effect
//! `NoExecute` therefore does not admit a pod past a `NoSchedule` GPU taint.
//!
//! The pod's tolerations are the user's data, read leniently (a missing or non-string field is
//! empty): the API server validates them, this policy only asks what they match.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// A taint that GPU nodes carry, as configured. `value: None` stands for "whatever value the
/// pool uses" (GKE writes `nvidia.com/gpu=present`, others leave it empty), so a toleration
/// matches when it matches some value.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GpuTaint {
    /// Taint key, e.g. `nvidia.com/gpu`.
    pub key: String,
    /// Taint value; absent means any value.
    #[serde(default)]
    pub value: Option<String>,
    /// Taint effect.
    pub effect: TaintEffect,
}

/// A taint's effect.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaintEffect {
    /// New pods that do not tolerate it are not scheduled on the node.
    NoSchedule,
    /// The scheduler avoids the node for pods that do not tolerate it.
    PreferNoSchedule,
    /// Pods that do not tolerate it are not scheduled, and running ones are evicted.
    NoExecute,
}

impl TaintEffect {
    /// The Kubernetes spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            TaintEffect::NoSchedule => "NoSchedule",
            TaintEffect::PreferNoSchedule => "PreferNoSchedule",
            TaintEffect::NoExecute => "NoExecute",
        }
    }
}

impl GpuTaint {
    /// A taint on `key` with any value.
    pub fn any_value(key: &str, effect: TaintEffect) -> Self {
        GpuTaint {
            key: key.to_string(),
            value: None,
            effect,
        }
    }
}

impl fmt::Display for GpuTaint {
    /// `key[=value]:Effect`, as `kubectl taint` writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)?;
        if let Some(value) = &self.value {
            write!(f, "={value}")?;
        }
        write!(f, ":{}", self.effect.as_str())
    }
}

/// `ToleratesTaint`: whether `toleration`, one entry of a pod's `tolerations`, tolerates `taint`.
pub fn tolerates(toleration: &Value, taint: &GpuTaint) -> bool {
    let field = |name: &str| toleration.get(name).and_then(Value::as_str).unwrap_or("");
    let effect = field("effect");
    if !effect.is_empty() && effect != taint.effect.as_str() {
        return false;
    }
    let key = field("key");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    let value = field("value");
    match field("operator") {
        "" | "Equal" => taint.value.as_deref().is_none_or(|v| v == value),
        "Exists" => true,
        "Lt" => compares(value, taint.value.as_deref(), |taint, bound| taint < bound),
        "Gt" => compares(value, taint.value.as_deref(), |taint, bound| taint > bound),
        _ => false,
    }
}

/// `Lt`/`Gt`: both values must parse as base-10 `i64` (Go's `strconv.ParseInt`), and the taint's
/// must compare to the toleration's. With any taint value, some integer compares unless the
/// bound is the extreme one.
fn compares(bound: &str, taint_value: Option<&str>, holds: fn(i64, i64) -> bool) -> bool {
    let Ok(bound) = bound.parse::<i64>() else {
        return false;
    };
    match taint_value {
        Some(value) => value.parse::<i64>().is_ok_and(|value| holds(value, bound)),
        None => holds(i64::MIN, bound) || holds(i64::MAX, bound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, value: Option<&str>, effect: TaintEffect) -> GpuTaint {
        GpuTaint {
            key: key.into(),
            value: value.map(String::from),
            effect,
        }
    }

    /// The rules of `ToleratesTaint` (toleration.go), one case each.
    #[test]
    fn tolerates_taint_rules() {
        use TaintEffect::{NoExecute, NoSchedule};
        let gpu = taint("nvidia.com/gpu", Some("present"), NoSchedule);
        let cases = [
            // 1. An empty effect matches every effect; a set one must be equal.
            (json!({"key": "nvidia.com/gpu", "operator": "Exists"}), true),
            (
                json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
                true,
            ),
            (
                json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}),
                false,
            ),
            (
                json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "PreferNoSchedule"}),
                false,
            ),
            // 2. Exists matches any value; Equal (the default) only an equal one.
            (json!({"key": "nvidia.com/gpu", "value": "present"}), true),
            (
                json!({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}),
                true,
            ),
            (
                json!({"key": "nvidia.com/gpu", "operator": "Equal", "value": "true"}),
                false,
            ),
            (json!({"key": "nvidia.com/gpu", "operator": "Equal"}), false),
            // 3. An empty key with Exists matches every key, within its effect.
            (json!({"operator": "Exists"}), true),
            (json!({"operator": "Exists", "effect": "NoSchedule"}), true),
            (json!({"operator": "Exists", "effect": "NoExecute"}), false),
            (json!({"key": "dedicated", "operator": "Exists"}), false),
            // Unknown operators match nothing.
            (json!({"key": "nvidia.com/gpu", "operator": "exists"}), false),
            // Odd fields read as empty.
            (json!({"key": 7, "operator": "Exists", "effect": null}), true),
        ];
        for (toleration, expected) in cases {
            assert_eq!(tolerates(&toleration, &gpu), expected, "{toleration}");
        }
        let no_execute = taint("nvidia.com/gpu", None, NoExecute);
        assert!(tolerates(
            &json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}),
            &no_execute
        ));
    }

    /// 4. `Lt`/`Gt` compare integers; a value that does not parse matches nothing.
    #[test]
    fn numeric_operators() {
        let generation = taint("gpu-generation", Some("8"), TaintEffect::NoSchedule);
        let op = |operator: &str, value: &str| json!({"key": "gpu-generation", "operator": operator, "value": value});
        assert!(tolerates(&op("Lt", "9"), &generation));
        assert!(!tolerates(&op("Lt", "8"), &generation));
        assert!(tolerates(&op("Gt", "+7"), &generation));
        assert!(!tolerates(&op("Gt", "8"), &generation));
        assert!(!tolerates(&op("Gt", "seven"), &generation));
        let named = taint("gpu-generation", Some("hopper"), TaintEffect::NoSchedule);
        assert!(!tolerates(&op("Lt", "9"), &named));
        let any = taint("gpu-generation", None, TaintEffect::NoSchedule);
        assert!(tolerates(&op("Lt", "9"), &any));
        assert!(!tolerates(&op("Lt", &i64::MIN.to_string()), &any));
        assert!(!tolerates(&op("Gt", &i64::MAX.to_string()), &any));
    }

    /// A taint whose value is not configured stands for every value.
    #[test]
    fn any_value_taints() {
        let any = GpuTaint::any_value("nvidia.com/gpu", TaintEffect::NoSchedule);
        assert!(tolerates(
            &json!({"key": "nvidia.com/gpu", "value": "present"}),
            &any
        ));
        assert!(tolerates(&json!({"key": "nvidia.com/gpu"}), &any));
        assert_eq!(any.to_string(), "nvidia.com/gpu:NoSchedule");
        assert_eq!(
            taint("sku", Some("gpu"), TaintEffect::NoExecute).to_string(),
            "sku=gpu:NoExecute"
        );
    }
}
