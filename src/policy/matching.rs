//! Which requests a policy sees: object kind, subresource, operation and namespace.
//!
//! Matching happens before any Wasm runs, so a policy that does not apply to a request costs
//! nothing. An empty criterion matches everything, except subresources: like a webhook rule's
//! `pods` versus `pods/ephemeralcontainers`, a policy sees a subresource's reviews (a `status`
//! write, a `scale`, a `kubectl debug`) only when it lists that subresource.

use serde::Deserialize;

use crate::review::{Operation, Review};

/// Whether a policy judges objects that Kubernetes' own controllers create from a template:
/// the Pods of a ReplicaSet, Job, StatefulSet or DaemonSet, the ReplicaSets of a Deployment, the
/// Jobs of a CronJob.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControllerCreated {
    /// Judge them like any object. The default: a policy that does not see the owner kinds
    /// would otherwise let such objects in unjudged.
    #[default]
    Judge,
    /// Skip them, because the policy judged the template when their owner was admitted. Without
    /// this, a Deployment that predates a policy can no longer scale up: each new Pod is a CREATE
    /// the policy denies. Only requests the API server authenticated as the controller manager
    /// are skipped, so an ownerReference written by a user changes nothing.
    Skip,
}

/// Whether `username` is the controller manager: `system:kube-controller-manager`, or one of the
/// per-controller service accounts it uses with `--use-service-account-credentials`
/// (`system:serviceaccount:kube-system:replicaset-controller`, ...).
pub fn is_controller_manager(username: &str) -> bool {
    username == "system:kube-controller-manager" || username.starts_with("system:serviceaccount:kube-system:")
}

/// The facts of a request that matching looks at.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// `request.kind.kind`, e.g. `Deployment` (group-agnostic on purpose: a kind name is what
    /// platform teams write, and ML CRDs rarely collide).
    pub kind: &'a str,
    /// `request.subResource`; `None` for the main resource.
    pub subresource: Option<&'a str>,
    /// `request.operation`.
    pub operation: Operation,
    /// `request.namespace`; `None` for cluster-scoped objects.
    pub namespace: Option<&'a str>,
    /// The object has a controller and the controller manager is creating or changing it.
    pub controller_created: bool,
}

impl<'a> Subject<'a> {
    /// The facts of `review`.
    pub fn of(review: &'a Review) -> Self {
        Self {
            kind: &review.kind,
            subresource: review.subresource.as_deref(),
            operation: review.operation,
            namespace: review.namespace.as_deref(),
            controller_created: review.controller.is_some() && is_controller_manager(&review.username),
        }
    }
}

/// A policy's `match` block, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matcher {
    /// Object kinds; empty means every kind.
    pub kinds: Vec<String>,
    /// Subresources seen besides the main resource (`ephemeralcontainers`, `status`, ...; `*`
    /// for all); empty means the main resource only.
    pub subresources: Vec<String>,
    /// Operations; empty means every operation.
    pub operations: Vec<Operation>,
    /// Namespaces the policy is limited to; empty means every namespace. When non-empty,
    /// cluster-scoped objects do not match.
    pub include_namespaces: Vec<String>,
    /// Namespaces the policy never sees; wins over `include_namespaces`.
    pub exclude_namespaces: Vec<String>,
    /// Whether objects that controllers create from a template are judged.
    pub controller_created: ControllerCreated,
}

impl Matcher {
    /// Does the policy apply to this request?
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        let kind_ok = self.kinds.is_empty() || self.kinds.iter().any(|k| k == subject.kind);
        let subresource_ok = subject
            .subresource
            .is_none_or(|sub| self.subresources.iter().any(|s| s == sub || s == "*"));
        let op_ok = self.operations.is_empty() || self.operations.contains(&subject.operation);
        let ns_ok = match subject.namespace {
            Some(ns) => {
                !self.exclude_namespaces.iter().any(|x| x == ns)
                    && (self.include_namespaces.is_empty() || self.include_namespaces.iter().any(|x| x == ns))
            }
            None => self.include_namespaces.is_empty(),
        };
        let origin_ok = !(subject.controller_created && self.controller_created == ControllerCreated::Skip);
        kind_ok && subresource_ok && op_ok && ns_ok && origin_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(kind: &'static str, ns: Option<&'static str>) -> Subject<'static> {
        Subject {
            kind,
            subresource: None,
            operation: Operation::Create,
            namespace: ns,
            controller_created: false,
        }
    }

    #[test]
    fn empty_matcher_matches_everything() {
        let m = Matcher::default();
        assert!(m.matches(&subject("Pod", Some("ml"))));
        assert!(m.matches(&subject("Namespace", None)));
    }

    #[test]
    fn each_criterion_narrows() {
        let m = Matcher {
            kinds: vec!["Pod".into(), "Deployment".into()],
            subresources: vec![],
            operations: vec![Operation::Create],
            include_namespaces: vec![],
            exclude_namespaces: vec!["kube-system".into()],
            controller_created: ControllerCreated::Judge,
        };
        assert!(m.matches(&subject("Deployment", Some("ml"))));
        assert!(!m.matches(&subject("Job", Some("ml"))));
        assert!(!m.matches(&subject("Pod", Some("kube-system"))));
        let update = Subject {
            operation: Operation::Update,
            ..subject("Pod", Some("ml"))
        };
        assert!(!m.matches(&update));
    }

    /// A webhook rule for `pods` does not see `pods/ephemeralcontainers` or `pods/status`
    /// (`staging/src/k8s.io/apiserver/pkg/admission/plugin/webhook/predicates/rules/rules.go`,
    /// `resource()` compares `resource/subresource`): a policy sees only the subresources it names.
    #[test]
    fn subresources_are_seen_only_when_listed() {
        let debug = Subject {
            subresource: Some("ephemeralcontainers"),
            operation: Operation::Update,
            ..subject("Pod", Some("ml"))
        };
        let status = Subject {
            subresource: Some("status"),
            ..debug
        };
        assert!(!Matcher::default().matches(&debug));
        let m = Matcher {
            subresources: vec!["ephemeralcontainers".into()],
            ..Matcher::default()
        };
        assert!(m.matches(&debug));
        assert!(!m.matches(&status));
        assert!(
            m.matches(&subject("Pod", Some("ml"))),
            "the main resource is always seen"
        );
        let all = Matcher {
            subresources: vec!["*".into()],
            ..Matcher::default()
        };
        assert!(all.matches(&status));
    }

    #[test]
    fn controller_created_objects_are_skipped_only_when_asked() {
        let copy = Subject {
            controller_created: true,
            ..subject("Pod", Some("ml"))
        };
        assert!(Matcher::default().matches(&copy));
        let skip = Matcher {
            controller_created: ControllerCreated::Skip,
            ..Matcher::default()
        };
        assert!(!skip.matches(&copy));
        assert!(skip.matches(&subject("Pod", Some("ml"))));
        assert!(is_controller_manager(
            "system:serviceaccount:kube-system:replicaset-controller"
        ));
        assert!(is_controller_manager("system:kube-controller-manager"));
        assert!(!is_controller_manager(
            "system:serviceaccount:ml:replicaset-controller"
        ));
        assert!(!is_controller_manager("alice"));
    }

    #[test]
    fn include_list_excludes_cluster_scoped_and_exclude_wins() {
        let m = Matcher {
            include_namespaces: vec!["prod".into()],
            exclude_namespaces: vec!["prod".into()],
            ..Matcher::default()
        };
        assert!(!m.matches(&subject("Pod", Some("prod"))));
        let m = Matcher {
            include_namespaces: vec!["prod".into()],
            ..Matcher::default()
        };
        assert!(m.matches(&subject("Pod", Some("prod"))));
        assert!(!m.matches(&subject("Pod", Some("dev"))));
        assert!(!m.matches(&subject("ClusterRole", None)));
    }
}
