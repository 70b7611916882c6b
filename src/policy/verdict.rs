//! A policy's output decoded into a [`Verdict`], and a verdict settled into what it does to
//! the request under the policy's [`Mode`] and [`FailurePolicy`].
//!
//! Faults are verdicts too: a trap, a timeout or output that breaks the ABI never becomes an
//! HTTP error, only a decision the failure policy makes.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::engine::CallError;
use crate::policy::bounded::{Capped, CappedAnnotations, CappedWarnings, MESSAGE_BYTES};
use crate::policy::spec::{FailurePolicy, Mode, PolicyKind, PolicySpec};

/// Status code of a rejection whose policy names none.
pub const DEFAULT_REJECT_CODE: u16 = 403;
/// Status code of a denial caused by a policy fault.
pub const FAULT_CODE: u16 = 500;

/// Why a policy produced no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    /// The call itself failed (timeout, memory, trap, ABI).
    #[error(transparent)]
    Call(#[from] CallError),
    /// The output is not the JSON ABI v1 specifies.
    #[error("returned invalid output: {0}")]
    InvalidOutput(String),
    /// A validating policy returned `mutated_object`.
    #[error("returned mutated_object but is not configured as mutating")]
    UnexpectedMutation,
    /// `mutated_object` came with `accepted: false`.
    #[error("returned mutated_object together with accepted: false")]
    MutationOnReject,
}

impl Fault {
    /// What kind of failure this is, for metrics.
    pub fn kind(&self) -> FaultKind {
        match self {
            Self::Call(CallError::Timeout(_)) => FaultKind::Timeout,
            Self::Call(CallError::MemoryExhausted(_)) => FaultKind::Memory,
            Self::Call(CallError::Trap(_) | CallError::Guest(_)) => FaultKind::Trap,
            Self::Call(CallError::Abi(_) | CallError::Protocol(..) | CallError::NotExported(_)) => {
                FaultKind::Abi
            }
            Self::Call(CallError::Instantiate(_)) => FaultKind::Instantiate,
            Self::InvalidOutput(_) | Self::UnexpectedMutation | Self::MutationOnReject => FaultKind::Output,
        }
    }
}

/// The kind of a [`Fault`], without its details: a closed set, so it can label a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The deadline passed.
    Timeout,
    /// Linear memory would have grown past the cap.
    Memory,
    /// The guest trapped, exited, or gave up (a waPC `__guest_error`).
    Trap,
    /// The guest broke the call's ABI or its transport's protocol (pointers, lengths, exports).
    Abi,
    /// The output is not what ABI v1 specifies, or says something the policy may not.
    Output,
    /// No instance could be created.
    Instantiate,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [Self; 6] = [
        Self::Timeout,
        Self::Memory,
        Self::Trap,
        Self::Abi,
        Self::Output,
        Self::Instantiate,
    ];

    /// The word in metrics: timeout, memory, trap, abi, output or instantiate.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Memory => "memory",
            Self::Trap => "trap",
            Self::Abi => "abi",
            Self::Output => "output",
            Self::Instantiate => "instantiate",
        }
    }
}

/// What a policy said about one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The request may go ahead, possibly changed.
    Accept {
        /// The whole object after mutation, when the policy changed it.
        mutated: Option<Value>,
        /// Warnings for the user.
        warnings: Vec<String>,
        /// Extra context for the audit log.
        audit: BTreeMap<String, String>,
    },
    /// The policy refuses the request.
    Reject {
        /// Why, in the policy's words.
        message: String,
        /// HTTP status code for the denial.
        code: u16,
        /// Warnings for the user.
        warnings: Vec<String>,
        /// Extra context for the audit log.
        audit: BTreeMap<String, String>,
    },
    /// The policy rejected an UPDATE, but its old object had every violation too (see
    /// [`crate::policy::existing`]): admitted with a warning.
    Existing {
        /// The rejection message.
        message: String,
        /// Warnings for the user.
        warnings: Vec<String>,
        /// Extra context for the audit log.
        audit: BTreeMap<String, String>,
    },
    /// The policy failed.
    Fault(Fault),
}

/// The output shape of ABI v1 (`validate`). Unknown keys are ignored so that policies built
/// with a newer SDK keep working; known keys must have the right types. The message, warnings
/// and annotations are bounded while they are read ([`crate::policy::bounded`]).
#[derive(Deserialize)]
struct WireOutput {
    accepted: bool,
    #[serde(default)]
    message: Option<Capped<MESSAGE_BYTES>>,
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    mutated_object: Option<Value>,
    #[serde(default)]
    warnings: Option<CappedWarnings>,
    #[serde(default)]
    audit_annotations: Option<CappedAnnotations>,
}

impl Verdict {
    /// Decodes a call's result for a policy of `kind`.
    pub fn from_call(result: Result<Vec<u8>, CallError>, kind: PolicyKind) -> Self {
        match result {
            Ok(bytes) => Self::from_output(&bytes, kind),
            Err(e) => Self::Fault(Fault::Call(e)),
        }
    }

    /// Decodes ABI v1 output bytes.
    pub fn from_output(bytes: &[u8], kind: PolicyKind) -> Self {
        let out: WireOutput = match serde_json::from_slice(bytes) {
            Ok(out) => out,
            Err(e) => return Self::Fault(Fault::InvalidOutput(e.to_string())),
        };
        let warnings = out.warnings.map(CappedWarnings::into_vec).unwrap_or_default();
        let audit = out.audit_annotations.map(|a| a.0).unwrap_or_default();
        let mutated = match out.mutated_object {
            None | Some(Value::Null) => None,
            Some(_) if kind == PolicyKind::Validating => {
                return Self::Fault(Fault::UnexpectedMutation);
            }
            Some(_) if !out.accepted => return Self::Fault(Fault::MutationOnReject),
            Some(obj @ Value::Object(_)) => Some(obj),
            Some(_) => {
                return Self::Fault(Fault::InvalidOutput(
                    "mutated_object must be a JSON object".into(),
                ));
            }
        };
        if out.accepted {
            return Self::Accept {
                mutated,
                warnings,
                audit,
            };
        }
        let code = match out.code {
            None => DEFAULT_REJECT_CODE,
            Some(c @ 400..=599) => c,
            Some(c) => {
                return Self::Fault(Fault::InvalidOutput(format!(
                    "code {c} is not an HTTP error status (400-599)"
                )));
            }
        };
        let message = out
            .message
            .map(|m| m.0)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "rejected".to_owned());
        Self::Reject {
            message,
            code,
            warnings,
            audit,
        }
    }

    /// What the policy said against the request (a rejection's message, a fault), if anything.
    pub fn message(&self) -> Option<String> {
        match self {
            Self::Accept { .. } => None,
            Self::Reject { message, .. } | Self::Existing { message, .. } => Some(message.clone()),
            Self::Fault(fault) => Some(fault.to_string()),
        }
    }

    /// The kind of fault, when the policy failed.
    pub fn fault_kind(&self) -> Option<FaultKind> {
        match self {
            Self::Fault(fault) => Some(fault.kind()),
            _ => None,
        }
    }

    /// What kind of verdict this is, for logs and reports.
    pub fn label(&self) -> Label {
        match self {
            Self::Accept { mutated: Some(_), .. } => Label::Mutated,
            Self::Accept { .. } => Label::Accepted,
            Self::Reject { .. } => Label::Rejected,
            Self::Existing { .. } => Label::Existing,
            Self::Fault(_) => Label::Fault,
        }
    }
}

/// The kind of a [`Verdict`], without its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    /// Accepted unchanged.
    Accepted,
    /// Accepted with a changed object.
    Mutated,
    /// Rejected.
    Rejected,
    /// Rejected, but only for violations the old object had.
    Existing,
    /// Failed.
    Fault,
}

impl Label {
    /// The word in logs: accepted, mutated, rejected, existing or fault.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Mutated => "mutated",
            Self::Rejected => "rejected",
            Self::Existing => "existing",
            Self::Fault => "fault",
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verdict after the policy's mode and failure policy have had their say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settled {
    /// `Some((code, message))` when this policy denies the request.
    pub denial: Option<(u16, String)>,
    /// Warnings to return, already prefixed where needed.
    pub warnings: Vec<String>,
    /// Audit annotations to return.
    pub audit: BTreeMap<String, String>,
    /// The mutated object to carry forward, only for enforcing mutating policies.
    pub mutated: Option<Value>,
}

/// Settles `verdict` for `policy`: monitor mode never denies and never mutates, a fault
/// follows the failure policy.
pub fn settle(policy: &PolicySpec, verdict: Verdict) -> Settled {
    let name = &policy.name;
    match (verdict, policy.mode) {
        (
            Verdict::Accept {
                mutated,
                warnings,
                audit,
            },
            Mode::Enforce,
        ) => Settled {
            denial: None,
            warnings,
            audit,
            mutated,
        },
        (
            Verdict::Accept {
                mutated,
                mut warnings,
                audit,
            },
            Mode::Monitor,
        ) => {
            if mutated.is_some() {
                warnings.push(format!(
                    "[monitor] {name}: would mutate the object (not applied in monitor mode)"
                ));
            }
            Settled {
                denial: None,
                warnings,
                audit,
                mutated: None,
            }
        }
        (
            Verdict::Reject {
                message,
                code,
                warnings,
                audit,
            },
            Mode::Enforce,
        ) => Settled {
            denial: Some((code, format!("{name}: {message}"))),
            warnings,
            audit,
            mutated: None,
        },
        (
            Verdict::Reject {
                message,
                mut warnings,
                mut audit,
                ..
            },
            Mode::Monitor,
        ) => {
            // Warnings reach the client; the API server's audit log keeps the record, under
            // `<webhook name>/<policy>`.
            audit
                .entry(name.to_string())
                .or_insert_with(|| format!("monitor: would deny: {message}"));
            warnings.push(format!("[monitor] {name}: {message}"));
            Settled {
                denial: None,
                warnings,
                audit,
                mutated: None,
            }
        }
        (
            Verdict::Existing {
                message,
                mut warnings,
                audit,
            },
            _,
        ) => {
            warnings.push(format!("[existing] {name}: {message}"));
            Settled {
                denial: None,
                warnings,
                audit,
                mutated: None,
            }
        }
        (Verdict::Fault(fault), Mode::Monitor) => Settled {
            warnings: vec![format!("[monitor] policy {name} failed: {fault}")],
            ..Settled::default()
        },
        (Verdict::Fault(fault), Mode::Enforce) => match policy.failure {
            FailurePolicy::Deny => Settled {
                denial: Some((FAULT_CODE, format!("policy {name} failed: {fault}"))),
                ..Settled::default()
            },
            FailurePolicy::Allow => Settled {
                warnings: vec![format!(
                    "policy {name} failed: {fault}; allowed by its failure policy"
                )],
                ..Settled::default()
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out(v: Value, kind: PolicyKind) -> Verdict {
        Verdict::from_output(v.to_string().as_bytes(), kind)
    }

    /// A monitored violation is recorded in the API server's audit log too, keyed by the policy.
    #[test]
    fn monitored_rejections_are_audit_annotated() {
        let spec = crate::policy::spec::tests::spec("gpu-node-isolation", Mode::Monitor);
        let settled = settle(
            &spec,
            Verdict::Reject {
                message: "no GPU".into(),
                code: 403,
                warnings: vec![],
                audit: BTreeMap::new(),
            },
        );
        assert_eq!(settled.denial, None);
        assert_eq!(settled.warnings, ["[monitor] gpu-node-isolation: no GPU"]);
        assert_eq!(
            settled.audit,
            BTreeMap::from([(
                "gpu-node-isolation".to_owned(),
                "monitor: would deny: no GPU".to_owned()
            )])
        );
        let enforced = crate::policy::spec::tests::spec("gpu-node-isolation", Mode::Enforce);
        let settled = settle(
            &enforced,
            Verdict::Reject {
                message: "no GPU".into(),
                code: 403,
                warnings: vec![],
                audit: BTreeMap::new(),
            },
        );
        assert!(settled.audit.is_empty());
    }

    #[test]
    fn output_decoding_checks_the_abi() {
        use PolicyKind::*;
        assert_eq!(
            out(json!({"accepted": true}), Validating).label(),
            Label::Accepted
        );
        assert_eq!(
            out(
                json!({"accepted": false, "message": "no", "code": 422}),
                Validating
            ),
            Verdict::Reject {
                message: "no".into(),
                code: 422,
                warnings: vec![],
                audit: BTreeMap::new()
            }
        );
        assert!(matches!(
            out(json!({"accepted": false}), Validating),
            Verdict::Reject { code: 403, .. }
        ));
        assert_eq!(
            out(json!({"accepted": true, "mutated_object": {}}), Validating),
            Verdict::Fault(Fault::UnexpectedMutation)
        );
        assert_eq!(
            out(json!({"accepted": false, "mutated_object": {}}), Mutating),
            Verdict::Fault(Fault::MutationOnReject)
        );
        assert_eq!(
            out(json!({"accepted": true, "mutated_object": {"a": 1}}), Mutating).label(),
            Label::Mutated
        );
        assert!(matches!(
            out(json!({"accepted": true, "mutated_object": [1]}), Mutating),
            Verdict::Fault(Fault::InvalidOutput(_))
        ));
        assert!(
            matches!(out(json!({"accepted": false, "code": 200}), Validating), Verdict::Fault(Fault::InvalidOutput(m)) if m.contains("200"))
        );
        assert!(matches!(
            out(json!({"accepted": "yes"}), Validating),
            Verdict::Fault(Fault::InvalidOutput(_))
        ));
        assert!(
            matches!(out(json!({"message": "x"}), Validating), Verdict::Fault(Fault::InvalidOutput(m)) if m.contains("accepted"))
        );
        assert!(matches!(
            Verdict::from_output(b"{not json", Validating),
            Verdict::Fault(Fault::InvalidOutput(_))
        ));
    }

    #[test]
    fn every_fault_has_its_kind() {
        use std::time::Duration;
        let kinds: Vec<_> = [
            Fault::Call(CallError::Timeout(Duration::from_millis(100))),
            Fault::Call(CallError::MemoryExhausted(8 << 20)),
            Fault::Call(CallError::Trap("unreachable".into())),
            Fault::Call(CallError::Abi("bad pointer".into())),
            Fault::Call(CallError::NotExported(crate::engine::Export::ValidateSettings)),
            Fault::Call(CallError::Instantiate("pool exhausted".into())),
            Fault::InvalidOutput("eof".into()),
            Fault::UnexpectedMutation,
            Fault::MutationOnReject,
        ]
        .iter()
        .map(|f| f.kind().as_str())
        .collect();
        assert_eq!(
            kinds,
            [
                "timeout",
                "memory",
                "trap",
                "abi",
                "abi",
                "instantiate",
                "output",
                "output",
                "output"
            ]
        );
        assert_eq!(
            Verdict::Fault(Fault::UnexpectedMutation).fault_kind(),
            Some(FaultKind::Output)
        );
        assert_eq!(
            out(json!({"accepted": true}), PolicyKind::Validating).fault_kind(),
            None
        );
    }
}
