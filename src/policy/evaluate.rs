//! Evaluating a review against a policy set and merging the verdicts into one [`Decision`].
//!
//! Validating policies all run and any enforcing rejection denies, with a message that names
//! every rejecting policy. Mutating policies run in configuration order, each on the object the
//! previous one produced, and the decision carries one JSON Patch from the object as admitted
//! to the final one. Blocking: run it on a blocking thread.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::engine::{Export, Output};
use crate::policy::set::{LoadedPolicy, PolicySet};
use crate::policy::spec::{PolicyKind, Settings};
use crate::policy::verdict::{Settled, Verdict, settle};
use crate::review::{Review, patch};

/// How much of a policy's stdout/stderr goes into one log line.
const STDIO_LOG_BYTES: usize = 4096;

/// Which policies a review runs against.
#[derive(Clone, Copy, Debug)]
pub enum Target<'a> {
    /// Every matching policy of the route's kind (`/validate`, `/mutate`).
    All,
    /// One named policy (`/validate/{policy}`, `/mutate/{policy}`), if it matches the request.
    One(&'a Arc<LoadedPolicy>),
}

/// What happens to the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Let it in, changed by `patch` when there is one.
    Allow {
        /// RFC 6902 patch from the submitted object to the mutated one.
        patch: Option<json_patch::Patch>,
    },
    /// Refuse it.
    Deny {
        /// HTTP status code for `status.code`.
        code: u16,
        /// `status.message`: every denying policy and its reason.
        message: String,
    },
}

impl Default for Admission {
    fn default() -> Self {
        Self::Allow { patch: None }
    }
}

/// One policy's part in a decision, for the review's log line.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    /// The policy.
    pub name: String,
    /// accepted, mutated, rejected or fault.
    pub verdict: &'static str,
    /// Wall time of its evaluation.
    pub elapsed: Duration,
}

/// The merged outcome of a review.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Allow (maybe with a patch) or deny.
    pub admission: Admission,
    /// Warnings for the client, in policy order.
    pub warnings: Vec<String>,
    /// Audit annotations; when two policies set one key, the first wins.
    pub audit_annotations: BTreeMap<String, String>,
    /// The policies that ran.
    pub evaluated: Vec<PolicyRun>,
}

/// Collects settled verdicts into a decision.
#[derive(Default)]
struct Merge {
    decision: Decision,
    denials: Vec<(u16, String)>,
}

impl Merge {
    fn add(&mut self, policy: &LoadedPolicy, verdict: &'static str, elapsed: Duration, settled: Settled) {
        self.decision.evaluated.push(PolicyRun {
            name: policy.spec.name.to_string(),
            verdict,
            elapsed,
        });
        self.decision.warnings.extend(settled.warnings);
        for (k, v) in settled.audit {
            self.decision.audit_annotations.entry(k).or_insert(v);
        }
        if let Some(denial) = settled.denial {
            self.denials.push(denial);
        }
    }

    fn finish(mut self, patch: Option<json_patch::Patch>) -> Decision {
        self.decision.admission = match self.denials.len() {
            0 => Admission::Allow { patch },
            1 => {
                let (code, message) = self.denials.remove(0);
                Admission::Deny { code, message }
            }
            n => Admission::Deny {
                code: self.denials[0].0,
                message: format!(
                    "denied by {n} policies: {}",
                    self.denials
                        .iter()
                        .map(|(_, m)| m.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
        };
        self.decision
    }
}

fn selected<'a>(
    set: &'a PolicySet,
    review: &'a Review,
    target: Target<'a>,
    kind: PolicyKind,
) -> impl Iterator<Item = &'a Arc<LoadedPolicy>> {
    let subject = review.subject();
    let chosen: Box<dyn Iterator<Item = &'a Arc<LoadedPolicy>>> = match target {
        Target::All => Box::new(set.of_kind(kind)),
        Target::One(p) => Box::new(std::iter::once(p)),
    };
    chosen.filter(move |p| p.spec.matcher.matches(&subject))
}

/// Runs every matching validating policy (or the one targeted) over `review`.
pub fn validate(set: &PolicySet, review: &Review, target: Target<'_>) -> Decision {
    let mut merge = Merge::default();
    for policy in selected(set, review, target, PolicyKind::Validating) {
        let (verdict, elapsed) = run(policy, review.raw_request.get());
        let label = verdict.label();
        merge.add(policy, label, elapsed, settle(&policy.spec, verdict));
    }
    merge.finish(None)
}

/// Runs the matching mutating policies (or the one targeted) in order, each on the previous
/// one's output, and patches from the submitted object to the last one. A denial stops the
/// chain: later policies would only mutate an object that is refused anyway.
pub fn mutate(set: &PolicySet, review: &Review, target: Target<'_>) -> Decision {
    let mut merge = Merge::default();
    // Parsed only once a policy actually mutates; until then the raw request is handed on.
    let mut request: Option<Value> = None;
    let mut original_object: Option<Value> = None;
    for policy in selected(set, review, target, PolicyKind::Mutating) {
        let text: Cow<'_, str> = match &request {
            None => Cow::Borrowed(review.raw_request.get()),
            Some(v) => Cow::Owned(v.to_string()),
        };
        let (verdict, elapsed) = run(policy, &text);
        let label = verdict.label();
        let settled = settle(&policy.spec, verdict);
        let denied = settled.denial.is_some();
        if let Some(object) = settled.mutated.clone() {
            let req = match request.as_mut() {
                Some(req) => req,
                None => {
                    // The raw request was parsed by `Review::decode`; it is valid JSON.
                    let parsed: Value = serde_json::from_str(review.raw_request.get()).unwrap_or(Value::Null);
                    original_object = Some(parsed.get("object").cloned().unwrap_or(Value::Null));
                    request.insert(parsed)
                }
            };
            if let Some(slot) = req.as_object_mut() {
                slot.insert("object".to_owned(), object);
            }
        }
        merge.add(
            policy,
            label,
            elapsed,
            Settled {
                mutated: None,
                ..settled
            },
        );
        if denied {
            return merge.finish(None);
        }
    }
    let patch = match (&original_object, &request) {
        (Some(original), Some(req)) => patch::diff(original, req.get("object").unwrap_or(&Value::Null)),
        _ => None,
    };
    merge.finish(patch)
}

/// One policy over one request: build the input, call, decode.
fn run(policy: &LoadedPolicy, request_json: &str) -> (Verdict, Duration) {
    let span = tracing::debug_span!("policy", policy = %policy.spec.name);
    let _entered = span.enter();
    let input = input(request_json, &policy.spec.settings);
    let started = Instant::now();
    let result = policy.module.call(Export::Validate, &input, policy.limits());
    let elapsed = started.elapsed();
    let verdict = Verdict::from_call(
        result.map(|out| {
            log_stdio(policy, &out);
            out.bytes
        }),
        policy.spec.kind,
    );
    match &verdict {
        Verdict::Fault(fault) => tracing::warn!(policy = %policy.spec.name, %fault, "policy fault"),
        v => {
            tracing::debug!(policy = %policy.spec.name, verdict = v.label(), elapsed_us = elapsed.as_micros() as u64, "policy evaluated")
        }
    }
    (verdict, elapsed)
}

/// `{"request": <request>, "settings": <settings>}` by concatenation: both parts are JSON
/// text already, so nothing is parsed or re-serialised per policy.
pub fn input(request_json: &str, settings: &Settings) -> Vec<u8> {
    let mut buf = Vec::with_capacity(request_json.len() + settings.json().len() + 24);
    buf.extend_from_slice(b"{\"request\":");
    buf.extend_from_slice(request_json.as_bytes());
    buf.extend_from_slice(b",\"settings\":");
    buf.extend_from_slice(settings.json().as_bytes());
    buf.push(b'}');
    buf
}

fn log_stdio(policy: &LoadedPolicy, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if !bytes.is_empty() {
            let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(STDIO_LOG_BYTES)]);
            tracing::info!(policy = %policy.spec.name, stream, bytes = bytes.len(), output = %shown, "policy output");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_valid_json_with_both_parts() {
        let settings = Settings::new(&serde_json::json!({"a": [1]}));
        let bytes = input(r#"{"uid":"x"}"#, &settings);
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(
            v,
            serde_json::json!({"request": {"uid": "x"}, "settings": {"a": [1]}})
        );
    }
}
