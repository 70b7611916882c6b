//! Tolerations, and when one toleration already does the job of another.
//!
//! GPU node pools are tainted (`nvidia.com/gpu:NoSchedule` is what the GPU operator and the
//! managed clouds apply) so that CPU-only pods stay off expensive nodes. A GPU pod must tolerate
//! the taint, and this policy adds the toleration unless the pod already has one that *covers* it:
//! one that tolerates every taint the configured toleration tolerates. Covering, not equality, is
//! the test, because users write the same intent in several ways (`operator: Exists` with no
//! effect, or the catch-all empty-key `Exists`), and adding a second, narrower copy would be noise.

use serde::Deserialize;
use serde_json::{Map, Value};

/// A toleration as Kubernetes writes it (camelCase field names, so that operators can paste one
/// from a manifest into the settings).
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Toleration {
    /// Taint key; empty with `Exists` means every key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// How `value` is compared.
    #[serde(default)]
    pub operator: Operator,
    /// Taint value, for `Equal` only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Taint effect; `None` means every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
    /// For `NoExecute`: how long the pod stays once tainted; `None` means forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// Toleration operator. Kubernetes' default is `Equal`.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operator {
    /// Tolerates the key whatever its value.
    Exists,
    /// Tolerates the key with exactly this value.
    #[default]
    Equal,
}

/// Taint effect.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// New pods are not scheduled on the node.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Running pods are evicted.
    NoExecute,
}

impl Operator {
    /// The Kubernetes spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Operator::Exists => "Exists",
            Operator::Equal => "Equal",
        }
    }
}

impl Effect {
    /// The Kubernetes spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Effect::NoSchedule => "NoSchedule",
            Effect::PreferNoSchedule => "PreferNoSchedule",
            Effect::NoExecute => "NoExecute",
        }
    }
}

impl Toleration {
    /// Checks what the API server would refuse, so that a bad setting fails the policy load
    /// instead of every GPU pod.
    pub fn check(&self) -> Result<(), String> {
        match self.operator {
            Operator::Exists if !self.value.is_empty() => {
                Err("operator Exists must not have a value".to_string())
            }
            Operator::Equal if self.key.is_empty() => {
                Err("an empty key requires operator Exists".to_string())
            }
            _ if self.toleration_seconds.is_some() && self.effect != Some(Effect::NoExecute) => {
                Err("tolerationSeconds requires effect NoExecute".to_string())
            }
            _ => Ok(()),
        }
    }

    /// The toleration as a pod-spec entry, fields in manifest order and empty ones left out.
    pub fn to_value(&self) -> Value {
        let mut entry = Map::new();
        if !self.key.is_empty() {
            entry.insert("key".into(), self.key.clone().into());
        }
        entry.insert("operator".into(), self.operator.as_str().into());
        if !self.value.is_empty() {
            entry.insert("value".into(), self.value.clone().into());
        }
        if let Some(effect) = self.effect {
            entry.insert("effect".into(), effect.as_str().into());
        }
        if let Some(seconds) = self.toleration_seconds {
            entry.insert("tolerationSeconds".into(), seconds.into());
        }
        Value::Object(entry)
    }

    /// Whether `existing`, an entry of a pod's `tolerations`, tolerates every taint that `self`
    /// tolerates, so that adding `self` would change nothing.
    ///
    /// The entry is read leniently (missing or odd fields count as empty), because it is the
    /// user's: the API server validates it, not this policy. It covers `self` when
    /// - its effect is empty (all effects) or equals `self`'s;
    /// - its key is empty with `Exists` (all keys) or equals `self`'s;
    /// - its operator is `Exists`, or both are `Equal` with the same value (an `Equal` toleration
    ///   does not cover an `Exists` one: the taint's value may differ, e.g. `present` vs `true`);
    /// - it stays at least as long: no `tolerationSeconds`, or no fewer than `self`'s.
    pub fn is_covered_by(&self, existing: &Value) -> bool {
        let text = |field: &str| existing.get(field).and_then(Value::as_str).unwrap_or("");
        let exists = text("operator") == "Exists";
        let effect_ok = match text("effect") {
            "" => true,
            effect => self.effect.is_some_and(|e| e.as_str() == effect),
        };
        let key_ok = (text("key").is_empty() && exists) || text("key") == self.key;
        let value_ok = exists || (self.operator == Operator::Equal && text("value") == self.value);
        let seconds_ok = match existing.get("tolerationSeconds").and_then(Value::as_i64) {
            None => true,
            Some(theirs) => self.toleration_seconds.is_some_and(|ours| theirs >= ours),
        };
        effect_ok && key_ok && value_ok && seconds_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gpu_exists() -> Toleration {
        Toleration {
            key: "nvidia.com/gpu".into(),
            operator: Operator::Exists,
            value: String::new(),
            effect: Some(Effect::NoSchedule),
            toleration_seconds: None,
        }
    }

    #[test]
    fn serialises_like_a_manifest() {
        assert_eq!(
            gpu_exists().to_value(),
            json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
        );
        let parsed: Toleration =
            serde_json::from_value(json!({"key": "k", "value": "v", "effect": "NoExecute",
                                          "tolerationSeconds": 30}))
            .expect("valid toleration");
        assert_eq!(parsed.operator, Operator::Equal);
        assert_eq!(parsed.toleration_seconds, Some(30));
        assert!(serde_json::from_value::<Toleration>(json!({"key": "k", "efect": "x"})).is_err());
    }

    #[test]
    fn covering_tolerations() {
        let wanted = gpu_exists();
        let covering = [
            json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
            json!({"key": "nvidia.com/gpu", "operator": "Exists"}),
            json!({"operator": "Exists"}),
            json!({"operator": "Exists", "effect": "NoSchedule"}),
        ];
        for t in covering {
            assert!(wanted.is_covered_by(&t), "{t}");
        }
        let not_covering = [
            json!({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present",
                   "effect": "NoSchedule"}),
            json!({"key": "nvidia.com/gpu", "value": "present"}),
            json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}),
            json!({"key": "amd.com/gpu", "operator": "Exists"}),
            json!({"operator": "Exists", "effect": "PreferNoSchedule"}),
            json!({"key": "nvidia.com/gpu", "operator": "Exists", "tolerationSeconds": 60}),
            json!({"effect": "NoSchedule"}),
            json!("nonsense"),
        ];
        for t in not_covering {
            assert!(!wanted.is_covered_by(&t), "{t}");
        }
    }

    #[test]
    fn equal_and_timed_tolerations() {
        let equal = Toleration {
            operator: Operator::Equal,
            value: "present".into(),
            ..gpu_exists()
        };
        assert!(equal.is_covered_by(&json!({"key": "nvidia.com/gpu", "value": "present"})));
        assert!(!equal.is_covered_by(&json!({"key": "nvidia.com/gpu", "value": "true"})));
        let timed = Toleration {
            effect: Some(Effect::NoExecute),
            toleration_seconds: Some(300),
            ..gpu_exists()
        };
        let longer = json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute",
                            "tolerationSeconds": 600});
        let shorter = json!({"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 60});
        assert!(timed.is_covered_by(&longer));
        assert!(!timed.is_covered_by(&shorter));
        assert!(timed.is_covered_by(&timed.to_value()));
    }

    #[test]
    fn every_toleration_covers_itself() {
        let all_effects = Toleration {
            effect: None,
            ..gpu_exists()
        };
        let catch_all = Toleration {
            key: String::new(),
            effect: None,
            ..gpu_exists()
        };
        for t in [gpu_exists(), all_effects, catch_all] {
            assert!(t.is_covered_by(&t.to_value()), "{t:?}");
        }
    }

    #[test]
    fn check_refuses_what_the_api_server_would() {
        assert_eq!(gpu_exists().check(), Ok(()));
        let bad = [
            Toleration {
                value: "x".into(),
                ..gpu_exists()
            },
            Toleration {
                key: String::new(),
                operator: Operator::Equal,
                ..gpu_exists()
            },
            Toleration {
                toleration_seconds: Some(5),
                ..gpu_exists()
            },
        ];
        for t in bad {
            assert!(t.check().is_err(), "{t:?}");
        }
    }
}
