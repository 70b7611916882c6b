//! What a policy answers: a validation verdict, and what `validate_settings` answers.
//!
//! Field names are snake_case on the wire (`mutated_object`, `audit_annotations`), mirroring
//! Kubewarden's ValidationResponse; empty optional parts are omitted so the smallest answer is
//! `{"accepted":true}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The verdict of one evaluation.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq)]
pub struct ValidationResponse {
    /// Whether the object may be admitted (possibly after `mutated_object` is applied).
    pub accepted: bool,
    /// Why the object was rejected; shown to the user by kubectl, so it must name the object,
    /// the container and the offending value (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// HTTP-like status code for the rejection; `None` lets the webhook choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// The full object after mutation; the webhook computes the JSON patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutated_object: Option<Value>,
    /// Warnings returned to the client even when the object is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Annotations added to the API server's audit event for this request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

impl ValidationResponse {
    /// Admit the object unchanged.
    pub fn accept() -> Self {
        Self {
            accepted: true,
            ..Self::default()
        }
    }

    /// Reject the object with a message; the code is left to the webhook.
    pub fn reject(message: impl Into<String>) -> Self {
        Self {
            accepted: false,
            message: Some(message.into()),
            ..Self::default()
        }
    }

    /// Accept when there are no violations, otherwise reject with all of them joined by `"; "`,
    /// so that the user fixes every problem in one round trip instead of one per `kubectl apply`.
    pub fn reject_all(violations: &[String]) -> Self {
        if violations.is_empty() {
            Self::accept()
        } else {
            Self::reject(violations.join("; "))
        }
    }

    /// Admit the object after replacing it with `object`.
    pub fn mutate(object: Value) -> Self {
        Self {
            accepted: true,
            mutated_object: Some(object),
            ..Self::default()
        }
    }

    /// Admit `object` if `changed`, else admit unchanged, then attach `warnings`: the usual end
    /// of a mutating policy that edited a copy of the object in place.
    pub fn mutated_if(changed: bool, object: Value, warnings: Vec<String>) -> Self {
        let response = if changed {
            Self::mutate(object)
        } else {
            Self::accept()
        };
        warnings.into_iter().fold(response, Self::with_warning)
    }

    /// Adds a warning, keeping the verdict.
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }
}

/// The answer of `validate_settings`: `{"valid": bool, "message"?: str}`.
#[derive(Serialize, Deserialize, Default, Debug, Clone, PartialEq, Eq)]
pub struct SettingsValidation {
    /// Whether the settings can be used.
    pub valid: bool,
    /// Why they cannot; names the offending setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl SettingsValidation {
    /// The settings are usable.
    pub fn valid() -> Self {
        Self {
            valid: true,
            message: None,
        }
    }

    /// The settings are not usable, for the given reason.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self {
            valid: false,
            message: Some(message.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wire(r: &impl Serialize) -> Value {
        serde_json::to_value(r).expect("responses always serialise")
    }

    #[test]
    fn accept_is_minimal() {
        assert_eq!(wire(&ValidationResponse::accept()), json!({"accepted": true}));
    }

    #[test]
    fn reject_carries_only_the_message() {
        assert_eq!(
            wire(&ValidationResponse::reject("no")),
            json!({"accepted": false, "message": "no"})
        );
    }

    #[test]
    fn reject_all_joins_every_violation_or_accepts() {
        assert_eq!(ValidationResponse::reject_all(&[]), ValidationResponse::accept());
        let r = ValidationResponse::reject_all(&["a".to_string(), "b".to_string()]);
        assert_eq!(wire(&r), json!({"accepted": false, "message": "a; b"}));
    }

    #[test]
    fn every_field_uses_snake_case() {
        let mut r = ValidationResponse::mutate(json!({"kind": "Pod"})).with_warning("careful");
        r.code = Some(403);
        r.audit_annotations.insert("k".into(), "v".into());
        assert_eq!(
            wire(&r),
            json!({"accepted": true, "code": 403, "mutated_object": {"kind": "Pod"},
                   "warnings": ["careful"], "audit_annotations": {"k": "v"}})
        );
        let back: ValidationResponse = serde_json::from_value(wire(&r)).expect("round trip");
        assert_eq!(back, r);
    }

    #[test]
    fn settings_validation_shapes() {
        assert_eq!(wire(&SettingsValidation::valid()), json!({"valid": true}));
        assert_eq!(
            wire(&SettingsValidation::invalid("bad")),
            json!({"valid": false, "message": "bad"})
        );
    }
}
