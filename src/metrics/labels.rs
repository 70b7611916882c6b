//! The labels of Portcullis's metrics: closed enums and one policy name, so that every family's
//! cardinality is bounded by the code and, for `policy`, by the configured set. Nothing about
//! a request (uid, name, namespace, user) is ever a label.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::policy::spec::Mode;
use crate::policy::verdict::{FaultKind, Label};
use crate::review::Admission;

/// Which route a request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/validate` and `/validate/{policy}`.
    Validate,
    /// `/mutate` and `/mutate/{policy}`.
    Mutate,
    /// Anything else: `/healthz`, `/readyz`, unknown paths.
    Other,
}

impl Endpoint {
    /// The endpoint a request path belongs to.
    pub fn of_path(path: &str) -> Self {
        let under = |route: &str| {
            path.strip_prefix(route)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        if under("/validate") {
            Self::Validate
        } else if under("/mutate") {
            Self::Mutate
        } else {
            Self::Other
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Validate => "validate",
            Self::Mutate => "mutate",
            Self::Other => "other",
        }
    }
}

/// What became of a request: the review's decision, or for a request answered without one (a
/// refused body, an unknown policy, `/healthz`) the class of its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Answered {
    /// Admitted unchanged.
    Allowed,
    /// Admitted with a patch.
    Mutated,
    /// Denied.
    Denied,
    /// No decision; the status code's class (1 to 5).
    Status(StatusClass),
}

impl Answered {
    /// The decision behind `admission`.
    pub fn of(admission: &Admission) -> Self {
        match admission {
            Admission::Allow { patch: None } => Self::Allowed,
            Admission::Allow { patch: Some(_) } => Self::Mutated,
            Admission::Deny { .. } => Self::Denied,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Mutated => "mutated",
            Self::Denied => "denied",
            Self::Status(class) => class.as_str(),
        }
    }
}

/// The class of an HTTP status code: its first digit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx (and anything out of range, which hyper never produces).
    ServerError,
}

impl StatusClass {
    /// The class of `status`.
    pub fn of(status: u16) -> Self {
        match status / 100 {
            1 => Self::Informational,
            2 => Self::Success,
            3 => Self::Redirection,
            4 => Self::ClientError,
            _ => Self::ServerError,
        }
    }

    /// `1xx` to `5xx`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Informational => "1xx",
            Self::Success => "2xx",
            Self::Redirection => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
        }
    }
}

/// Encodes a closed enum through its `as_str`.
macro_rules! label_value {
    ($($ty:ty),*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                EncodeLabelValue::encode(&self.as_str(), encoder)
            }
        }
    )*};
}

label_value!(Endpoint, Answered, Label, FaultKind);

impl EncodeLabelValue for Mode {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        let word = match self {
            Mode::Enforce => "enforce",
            Mode::Monitor => "monitor",
        };
        EncodeLabelValue::encode(&word, encoder)
    }
}

/// `portcullis_requests_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route.
    pub endpoint: Endpoint,
    /// The decision, or the status class.
    pub decision: Answered,
}

/// `portcullis_request_duration_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EndpointLabels {
    /// The route.
    pub endpoint: Endpoint,
}

/// `portcullis_policy_evaluations_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EvaluationLabels {
    /// The policy's configured name.
    pub policy: String,
    /// Its mode.
    pub mode: Mode,
    /// What its verdict was.
    pub outcome: Label,
}

/// `portcullis_policy_evaluation_duration_seconds`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The policy's configured name.
    pub policy: String,
}

/// `portcullis_policy_faults_total`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FaultLabels {
    /// The policy's configured name.
    pub policy: String,
    /// How it failed.
    pub kind: FaultKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_their_route_only() {
        for (path, endpoint) in [
            ("/validate", Endpoint::Validate),
            ("/validate/pinned-images", Endpoint::Validate),
            ("/mutate", Endpoint::Mutate),
            ("/mutate/default-resources", Endpoint::Mutate),
            ("/validated", Endpoint::Other),
            ("/mutates/x", Endpoint::Other),
            ("/healthz", Endpoint::Other),
            ("/", Endpoint::Other),
        ] {
            assert_eq!(Endpoint::of_path(path), endpoint, "{path}");
        }
    }

    #[test]
    fn status_classes_are_the_first_digit() {
        let classes: Vec<_> = [101, 200, 204, 308, 400, 413, 429, 500, 503, 999]
            .iter()
            .map(|s| StatusClass::of(*s).as_str())
            .collect();
        assert_eq!(
            classes,
            [
                "1xx", "2xx", "2xx", "3xx", "4xx", "4xx", "4xx", "5xx", "5xx", "5xx"
            ]
        );
    }
}
