//! `portcullis check`: the verdict on manifests before they are applied, from the same policies
//! the webhook runs, in the same order.
//!
//! Each object is wrapped into the CREATE review the API server would send
//! ([`crate::review::synthetic`]); the mutating policies run first and their patch is applied, as
//! the API server's mutating admission runs before its validating admission; then the validating
//! policies judge the mutated object. Nothing here reads a cluster.

pub mod manifest;
pub mod report;

use serde_json::Value;

use crate::policy::evaluate::{self, PolicyRun, Target};
use crate::policy::spec::{FailurePolicy, Mode};
use crate::policy::verdict::Label;
use crate::policy::{Decision, PolicySet};
use crate::review::synthetic::{self, Submitter, SyntheticError};
use crate::review::{Admission, Review};
use manifest::{Document, Source};

/// What one policy did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Accepted unchanged.
    Allowed,
    /// Accepted and changed the object.
    Patched,
    /// Would not deny, but has something to say (monitor mode, a fault that fails open).
    Warning,
    /// Denies the object.
    Denied,
}

/// One policy's verdict on one object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PolicyResult {
    /// The policy.
    pub policy: String,
    /// What it did.
    pub outcome: Outcome,
    /// Its rejection message or fault, when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The verdict on one object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ObjectResult {
    /// Where the object is.
    #[serde(serialize_with = "as_display")]
    pub source: Source,
    /// `kind`.
    pub kind: String,
    /// `metadata.name` (or `generateName`).
    pub name: String,
    /// The namespace it was checked in.
    pub namespace: String,
    /// The worst policy outcome (`allowed` when no policy matched).
    pub outcome: Outcome,
    /// Every policy that matched, mutating ones first.
    pub policies: Vec<PolicyResult>,
    /// The warnings kubectl would print.
    pub warnings: Vec<String>,
    /// The RFC 6902 patch the mutating policies would apply, when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<json_patch::Patch>,
    /// The object after mutation, for `--show-patches`.
    #[serde(skip)]
    pub before_after: Option<(Value, Value)>,
}

/// A document that could not be checked.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BrokenDocument {
    /// Where it is.
    #[serde(serialize_with = "as_display")]
    pub source: Source,
    /// Why it could not be checked.
    pub problem: String,
}

/// The whole run.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// Checked objects, in input order.
    pub objects: Vec<ObjectResult>,
    /// Documents that could not be checked.
    pub errors: Vec<BrokenDocument>,
}

impl Report {
    /// Whether any object is denied.
    pub fn denied(&self) -> bool {
        self.objects.iter().any(|o| o.outcome == Outcome::Denied)
    }

    /// Whether the run should fail a CI job: something is denied or could not be checked.
    pub fn failed(&self) -> bool {
        self.denied() || !self.errors.is_empty()
    }
}

fn as_display<S: serde::Serializer>(value: &Source, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Checks every document against `set`, placing namespaced objects without a namespace in
/// `namespace`. Blocking: runs Wasm.
pub fn check(set: &PolicySet, documents: Vec<Document>, namespace: &str) -> Report {
    let mut report = Report::default();
    for (index, document) in documents.into_iter().enumerate() {
        match document {
            Document::Broken { source, problem } => report.errors.push(BrokenDocument { source, problem }),
            Document::Object { source, object } => match check_object(set, &object, namespace, index) {
                Ok(result) => report.objects.push(ObjectResult { source, ..result }),
                Err(e) => report.errors.push(BrokenDocument {
                    source,
                    problem: e.to_string(),
                }),
            },
        }
    }
    report
}

/// Why one object could not be judged.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    /// The object cannot be wrapped into a review.
    #[error(transparent)]
    Synthetic(#[from] SyntheticError),
    /// The review built from the object does not decode.
    #[error("the object makes an invalid review: {0}")]
    Review(#[from] crate::review::DecodeError),
    /// The mutating policies' patch does not apply to the object.
    #[error("the mutating policies' patch does not apply: {0}")]
    Patch(#[from] json_patch::PatchError),
}

/// The policies' verdict on one object submitted as a CREATE, before it is summarised: what
/// `check` reports per manifest and `audit` per stored object.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// The object's kind, as the review named it.
    pub kind: String,
    /// The namespace it was judged in (empty for cluster-scoped objects).
    pub namespace: String,
    /// What the mutating policies did, in order, on the object as given.
    pub mutated: Decision,
    /// What the validating policies did to the mutated object; empty when a mutating policy
    /// denied it, as the API server stops there.
    pub validated: Decision,
    /// The object after the mutating policies' patch, when there is one.
    pub patched: Option<(json_patch::Patch, Value)>,
}

impl Judgement {
    /// Every policy that ran, mutating ones first.
    pub fn runs(&self) -> impl Iterator<Item = &PolicyRun> {
        self.mutated.evaluated.iter().chain(&self.validated.evaluated)
    }

    /// The warnings kubectl would print, the mutating policies' first.
    pub fn warnings(&self) -> Vec<String> {
        self.mutated
            .answer
            .warnings
            .to_vec()
            .into_iter()
            .chain(self.validated.answer.warnings.to_vec())
            .collect()
    }
}

/// Judges `object` as the API server would admit it on CREATE from `submitter`: the mutating
/// policies first, then the validating ones on the mutated object. Namespaced objects without a
/// namespace go to `namespace`; `uid` names the synthetic request. Blocking: runs Wasm.
pub fn judge(
    set: &PolicySet,
    object: &Value,
    namespace: &str,
    uid: &str,
    submitter: Submitter,
) -> Result<Judgement, JudgeError> {
    let review = Review::decode(&synthetic::create_review_by(object, namespace, uid, submitter)?)?;
    let mutated = evaluate::mutate(set, &review, Target::All);
    let (validated, patched) = match &mutated.answer.admission {
        Admission::Deny { .. } => (Decision::default(), None),
        Admission::Allow { patch } => {
            let mut after = object.clone();
            if let Some(patch) = patch {
                json_patch::patch(&mut after, patch)?;
            }
            let body = synthetic::create_review_by(&after, namespace, uid, submitter)?;
            let validated = evaluate::validate(set, &Review::decode(&body)?, Target::All);
            (validated, patch.clone().map(|p| (p, after)))
        }
    };
    Ok(Judgement {
        kind: review.kind,
        namespace: review.namespace.unwrap_or_default(),
        mutated,
        validated,
        patched,
    })
}

fn check_object(
    set: &PolicySet,
    object: &Value,
    namespace: &str,
    index: usize,
) -> Result<ObjectResult, JudgeError> {
    let judgement = judge(set, object, namespace, &format!("check-{index}"), Submitter::User)?;
    let policies: Vec<PolicyResult> = judgement.runs().map(|run| policy_result(set, run)).collect();
    let outcome = policies
        .iter()
        .map(|p| p.outcome)
        .max_by_key(|o| severity(*o))
        .unwrap_or(Outcome::Allowed);
    let warnings = judgement.warnings();
    let meta = |field: &str| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
    };
    let (patch, before_after) = match judgement.patched {
        Some((patch, after)) => (Some(patch), Some((object.clone(), after))),
        None => (None, None),
    };
    Ok(ObjectResult {
        source: Source {
            file: String::new(),
            line: 0,
            item: None,
        },
        kind: judgement.kind,
        name: meta("name").or(meta("generateName")).unwrap_or("").to_owned(),
        namespace: judgement.namespace,
        outcome,
        policies,
        warnings,
        patch,
        before_after,
    })
}

fn severity(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Allowed => 0,
        Outcome::Patched => 1,
        Outcome::Warning => 2,
        Outcome::Denied => 3,
    }
}

/// What a policy's verdict means for the object, under its mode and failure policy.
fn policy_result(set: &PolicySet, run: &PolicyRun) -> PolicyResult {
    let spec = set.get(&run.name).map(|p| &p.spec);
    let enforced = spec.is_some_and(|s| s.mode == Mode::Enforce);
    let fails_closed = spec.is_some_and(|s| s.failure == FailurePolicy::Deny);
    let outcome = match (run.verdict, enforced) {
        (Label::Accepted, _) => Outcome::Allowed,
        (Label::Mutated, true) => Outcome::Patched,
        (Label::Rejected, true) => Outcome::Denied,
        (Label::Fault, true) if fails_closed => Outcome::Denied,
        _ => Outcome::Warning,
    };
    PolicyResult {
        policy: run.name.clone(),
        outcome,
        message: run.message.clone(),
    }
}
