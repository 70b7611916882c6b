//! Existing violations: on UPDATE, a rejection counts only for what the update makes worse.
//!
//! A policy installed into a running cluster finds objects that already break it. Denying every
//! UPDATE of those would stop a platform team from labelling them, scaling them, removing a
//! finalizer from a terminating Pod (which then stays Terminating forever) or fixing them one
//! violation at a time. So, like Kyverno's `allowExistingViolations`, when an enforcing policy
//! rejects an UPDATE the host asks the same policy about the old object, and admits the update
//! with a warning when every violation it reports was already there. This works for policies in
//! any language: the host compares the policies' messages, which list their violations separated
//! by `"; "` (the contract in `policies/README.md`). A policy whose message is one sentence is
//! compared whole.

use std::collections::HashSet;

use serde_json::Value;

use crate::policy::spec::{ExistingViolations, Mode, PolicySpec};
use crate::policy::verdict::Verdict;
use crate::review::{Operation, Review};

/// What separates violations in a rejection message.
pub const SEPARATOR: &str = "; ";

/// Whether a rejection of `review` by `policy` may be waived as an existing violation: an
/// enforcing policy that allows them, on an UPDATE that carries its old object.
pub fn waivable(policy: &PolicySpec, review: &Review) -> bool {
    review.operation == Operation::Update
        && review.has_old_object
        && policy.mode == Mode::Enforce
        && policy.existing_violations == ExistingViolations::Allow
}

/// The request a policy judges the old object in: the same request with `object` set to
/// `oldObject`, no `oldObject`, operation `CREATE` and no `options`, i.e. "would the old object
/// be admitted if it were submitted now?". `None` when the request has no old object.
pub fn old_object_request(review: &Review) -> Option<String> {
    let Ok(Value::Object(mut request)) = serde_json::from_str::<Value>(review.raw_request.get()) else {
        return None;
    };
    let old = request.remove("oldObject").filter(|v| v.is_object())?;
    request.insert("object".to_owned(), old);
    request.insert("oldObject".to_owned(), Value::Null);
    request.insert(
        "operation".to_owned(),
        Value::String(Operation::Create.to_string()),
    );
    request.insert("options".to_owned(), Value::Null);
    Some(Value::Object(request).to_string())
}

/// The verdict on an UPDATE, given the same policy's verdict on its old object: a rejection
/// whose every violation the old object also had becomes [`Verdict::Existing`].
pub fn settle_update(new: Verdict, old: &Verdict) -> Verdict {
    let (Verdict::Reject { message, .. }, Verdict::Reject { message: before, .. }) = (&new, old) else {
        return new;
    };
    let before: HashSet<&str> = violations(before).collect();
    if !violations(message).all(|v| before.contains(v)) {
        return new;
    }
    match new {
        Verdict::Reject {
            message,
            warnings,
            audit,
            ..
        } => Verdict::Existing {
            message,
            warnings,
            audit,
        },
        other => other,
    }
}

fn violations(message: &str) -> impl Iterator<Item = &str> {
    message.split(SEPARATOR).map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::policy::verdict::Label;

    fn reject(message: &str) -> Verdict {
        Verdict::Reject {
            message: message.to_owned(),
            code: 403,
            warnings: vec![],
            audit: BTreeMap::new(),
        }
    }

    #[test]
    fn a_rejection_is_waived_only_when_every_violation_is_old() {
        let latest = "container \"m\": image \"a:latest\" uses the mutable tag :latest";
        let probe = "container \"m\" has no readinessProbe";
        let both = format!("{latest}; {probe}");
        assert_eq!(
            settle_update(reject(latest), &reject(latest)).label(),
            Label::Existing
        );
        assert_eq!(
            settle_update(reject(probe), &reject(&both)).label(),
            Label::Existing,
            "fixing one of two"
        );
        assert_eq!(
            settle_update(reject(&both), &reject(latest)).label(),
            Label::Rejected,
            "a new one"
        );
        assert_eq!(
            settle_update(
                reject(latest),
                &Verdict::Accept {
                    mutated: None,
                    warnings: vec![],
                    audit: BTreeMap::new()
                }
            )
            .label(),
            Label::Rejected
        );
        let accepted = Verdict::Accept {
            mutated: None,
            warnings: vec!["w".into()],
            audit: BTreeMap::new(),
        };
        assert_eq!(settle_update(accepted.clone(), &reject(latest)), accepted);
    }

    #[test]
    fn the_old_object_is_judged_as_if_submitted_now() {
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "operation": "UPDATE", "userInfo": {"username": "admin"}, "name": "d", "namespace": "ml",
                "object": {"metadata": {"name": "d", "labels": {"team": "ml"}}},
                "oldObject": {"metadata": {"name": "d"}},
                "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}
            }
        });
        let review = Review::decode(body.to_string().as_bytes()).expect("valid");
        let old: Value =
            serde_json::from_str(&old_object_request(&review).expect("has an old object")).expect("json");
        assert_eq!(old["object"], serde_json::json!({"metadata": {"name": "d"}}));
        assert_eq!(
            (&old["oldObject"], &old["operation"], &old["options"]),
            (&Value::Null, &serde_json::json!("CREATE"), &Value::Null)
        );
        assert_eq!(old["uid"], "u");
    }
}
