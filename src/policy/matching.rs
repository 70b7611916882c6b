//! Which requests a policy sees: object kind, operation and namespace.
//!
//! Matching happens before any Wasm runs, so a policy that does not apply to a request costs
//! nothing. An empty criterion matches everything.

use std::fmt;

use serde::Deserialize;

/// An admission operation, as the kube-apiserver names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// Object creation.
    Create,
    /// Object update (including status updates sent to the webhook).
    Update,
    /// Object deletion.
    Delete,
    /// Connect (exec, attach, port-forward, proxy).
    Connect,
}

impl From<&kube::core::admission::Operation> for Operation {
    fn from(op: &kube::core::admission::Operation) -> Self {
        use kube::core::admission::Operation as K;
        match op {
            K::Create => Self::Create,
            K::Update => Self::Update,
            K::Delete => Self::Delete,
            K::Connect => Self::Connect,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        })
    }
}

/// The facts of a request that matching looks at.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    /// `request.kind.kind`, e.g. `Deployment` (group-agnostic on purpose: a kind name is what
    /// platform teams write, and ML CRDs rarely collide).
    pub kind: &'a str,
    /// `request.operation`.
    pub operation: Operation,
    /// `request.namespace`; `None` for cluster-scoped objects.
    pub namespace: Option<&'a str>,
}

/// A policy's `match` block, validated.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matcher {
    /// Object kinds; empty means every kind.
    pub kinds: Vec<String>,
    /// Operations; empty means every operation.
    pub operations: Vec<Operation>,
    /// Namespaces the policy is limited to; empty means every namespace. When non-empty,
    /// cluster-scoped objects do not match.
    pub include_namespaces: Vec<String>,
    /// Namespaces the policy never sees; wins over `include_namespaces`.
    pub exclude_namespaces: Vec<String>,
}

impl Matcher {
    /// Does the policy apply to this request?
    pub fn matches(&self, subject: &Subject<'_>) -> bool {
        let kind_ok = self.kinds.is_empty() || self.kinds.iter().any(|k| k == subject.kind);
        let op_ok = self.operations.is_empty() || self.operations.contains(&subject.operation);
        let ns_ok = match subject.namespace {
            Some(ns) => {
                !self.exclude_namespaces.iter().any(|x| x == ns)
                    && (self.include_namespaces.is_empty() || self.include_namespaces.iter().any(|x| x == ns))
            }
            None => self.include_namespaces.is_empty(),
        };
        kind_ok && op_ok && ns_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(kind: &'static str, ns: Option<&'static str>) -> Subject<'static> {
        Subject {
            kind,
            operation: Operation::Create,
            namespace: ns,
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
            operations: vec![Operation::Create],
            include_namespaces: vec![],
            exclude_namespaces: vec!["kube-system".into()],
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
