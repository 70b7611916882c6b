//! Evaluating a review against a policy set and merging the verdicts into one [`Decision`].
//!
//! Validating policies all run and any enforcing rejection denies, with a message that names
//! every rejecting policy. Mutating policies run in configuration order, each on the object the
//! previous one produced, and the decision carries one JSON Patch from the object as admitted
//! to the final one. Blocking: run it on a blocking thread.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::engine::{Export, Output};
use crate::policy::matching::Subject;
use crate::policy::set::{LoadedPolicy, PolicySet};
use crate::policy::spec::{PolicyKind, Settings};
use crate::policy::verdict::{FaultKind, Label, Settled, Verdict, settle};
use crate::policy::{existing, frozen};
use crate::review::answer::WarningFate;
use crate::review::{Admission, Answer, Review, patch};

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

/// One policy's part in a decision, for the review's log line.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRun {
    /// The policy.
    pub name: String,
    /// What it decided.
    pub verdict: Label,
    /// Wall time of its evaluation (of both objects, when an UPDATE's old object was judged).
    pub elapsed: Duration,
    /// What it said against the request: a rejection's message or a fault.
    pub message: Option<String>,
    /// How it failed, when it did.
    pub fault: Option<FaultKind>,
}

impl PolicyRun {
    fn of(policy: &LoadedPolicy, verdict: &Verdict, elapsed: Duration) -> Self {
        Self {
            name: policy.spec.name.to_string(),
            verdict: verdict.label(),
            elapsed,
            message: verdict.message(),
            fault: verdict.fault_kind(),
        }
    }
}

/// The merged outcome of a review: the answer for the API server, and what ran, for the log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// What the API server is told.
    pub answer: Answer,
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
    /// Adds `policy`'s settled verdict; `run` is its part for the log, from before settling,
    /// and is counted by the policy's meter.
    fn add(&mut self, policy: &LoadedPolicy, run: PolicyRun, settled: Settled) {
        let name = &policy.spec.name;
        policy.meter.record(run.verdict, run.fault, run.elapsed);
        self.decision.evaluated.push(run);
        let answer = &mut self.decision.answer;
        for warning in settled.warnings {
            // Whatever the API server would cut or drop is logged whole.
            match answer.warnings.push(&warning) {
                WarningFate::Kept | WarningFate::Duplicate => {}
                fate => {
                    tracing::info!(policy = %name, ?fate, %warning, "warning shortened for the API server")
                }
            }
        }
        for (key, value) in settled.audit {
            if let Err(error) = answer.audit_annotations.insert(key, value) {
                tracing::warn!(policy = %name, %error, "audit annotation not returned");
            }
        }
        if let Some(denial) = settled.denial {
            self.denials.push(denial);
        }
    }

    fn finish(mut self, patch: Option<json_patch::Patch>) -> Decision {
        self.decision.answer.admission = match self.denials.len() {
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
    let subject = Subject::of(review);
    let chosen: Box<dyn Iterator<Item = &'a Arc<LoadedPolicy>>> = match target {
        Target::All => Box::new(set.of_kind(kind)),
        Target::One(p) => Box::new(std::iter::once(p)),
    };
    chosen.filter(move |p| p.spec.matcher.matches(&subject))
}

/// Runs every matching validating policy (or the one targeted) over `review`. On UPDATE, an
/// enforcing rejection is checked against the old object ([`existing`]), which is then judged
/// at most once per policy and only for policies that rejected.
pub fn validate(set: &PolicySet, review: &Review, target: Target<'_>) -> Decision {
    let mut merge = Merge::default();
    let mut old_request: Option<Option<String>> = None;
    for policy in selected(set, review, target, PolicyKind::Validating) {
        let (mut verdict, mut elapsed) = run(policy, review.raw_request.get());
        if matches!(verdict, Verdict::Reject { .. }) && existing::waivable(&policy.spec, review) {
            let old = old_request.get_or_insert_with(|| existing::old_object_request(review));
            if let Some(old) = old {
                let (before, old_elapsed) = run(policy, old);
                elapsed += old_elapsed;
                verdict = existing::settle_update(verdict, &before);
            }
        }
        let part = PolicyRun::of(policy, &verdict, elapsed);
        merge.add(policy, part, settle(&policy.spec, verdict));
    }
    merge.finish(None)
}

/// Runs the matching mutating policies (or the one targeted) in order, each on the previous
/// one's output, and patches from the submitted object to the last one, leaving untouched what
/// the review may not change ([`frozen`]). A denial stops the chain: later policies would only
/// mutate an object that is refused anyway.
pub fn mutate(set: &PolicySet, review: &Review, target: Target<'_>) -> Decision {
    let mut merge = Merge::default();
    if frozen::is_controller_copy(review) {
        return merge.finish(None);
    }
    // Parsed only once a policy actually mutates; until then the raw request is handed on.
    let mut request: Option<Value> = None;
    let mut original_object: Option<Value> = None;
    for policy in selected(set, review, target, PolicyKind::Mutating) {
        let text: Cow<'_, str> = match &request {
            None => Cow::Borrowed(review.raw_request.get()),
            Some(v) => Cow::Owned(v.to_string()),
        };
        let (verdict, elapsed) = run(policy, &text);
        let part = PolicyRun::of(policy, &verdict, elapsed);
        let mut settled = settle(&policy.spec, verdict);
        let denied = settled.denial.is_some();
        if let Some(object) = settled.mutated.take() {
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
        merge.add(policy, part, settled);
        if denied {
            return merge.finish(None);
        }
    }
    let patch = match (&original_object, request.as_mut()) {
        (Some(original), Some(req)) => final_patch(review, original, req),
        _ => None,
    };
    merge.finish(patch)
}

/// The patch from `original` to the chain's last object in `request`, once what the review may
/// not change is put back.
fn final_patch(review: &Review, original: &Value, request: &mut Value) -> Option<json_patch::Patch> {
    let fields = request.as_object_mut()?;
    let mut mutated = fields.remove("object")?;
    let old = fields.get("oldObject").unwrap_or(&Value::Null);
    let frozen = frozen::frozen_paths(review, original, old);
    if frozen::restore(&mut mutated, original, &frozen) {
        tracing::debug!(paths = ?frozen, "mutations this UPDATE may not make were not applied");
    }
    patch::diff(original, &mutated)
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
            tracing::debug!(policy = %policy.spec.name, verdict = v.label().as_str(), elapsed_us = elapsed.as_micros() as u64, "policy evaluated")
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
