//! What one configured policy is: a validated name, how it may act, and its bounds.
//!
//! Every field here is already checked: a `PolicySpec` cannot hold an invalid name, a zero
//! timeout or a memory cap the engine cannot honour. The config layer builds these; nothing
//! downstream re-validates them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::abi::Abi;
use crate::policy::matching::Matcher;

/// A policy's name: 1 to 63 characters of `[a-z0-9-]`, starting and ending alphanumeric, so
/// that it is safe in URLs (`/validate/{name}`), log fields and metric labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyName(String);

/// Why a string is not a [`PolicyName`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyNameError {
    /// The name is empty.
    #[error("a policy name must not be empty")]
    Empty,
    /// The name is longer than 63 characters.
    #[error("policy name `{0}` is longer than 63 characters")]
    TooLong(String),
    /// The name has a character outside `[a-z0-9-]` or starts/ends with `-`.
    #[error(
        "policy name `{0}` must be lower-case letters, digits and `-`, starting and ending with a letter or digit"
    )]
    Invalid(String),
}

impl PolicyName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, PolicyNameError> {
        if name.is_empty() {
            return Err(PolicyNameError::Empty);
        }
        if name.len() > 63 {
            return Err(PolicyNameError::TooLong(name.to_owned()));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if !name.chars().all(allowed) || name.starts_with('-') || name.ends_with('-') {
            return Err(PolicyNameError::Invalid(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a policy's rejections deny the request or only warn (dry-run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Rejections deny the request.
    #[default]
    Enforce,
    /// Rejections become `[monitor]` warnings and log lines; the request is never denied.
    Monitor,
}

/// What a policy fault (trap, timeout, memory exhaustion, ABI violation) does to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Fail closed: the fault denies the request. The default, because a policy that cannot
    /// decide must not let an unchecked object in.
    #[default]
    Deny,
    /// Fail open: the request is allowed with a warning naming the fault.
    Allow,
}

/// What an enforcing policy's rejection of an UPDATE does when the old object already broke the
/// policy the same way: Kyverno's `allowExistingViolations`, which users of policy engines
/// already know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExistingViolations {
    /// Admit the UPDATE with a warning, so that objects created before the policy can still be
    /// labelled, scaled, have finalizers removed and be fixed step by step. The default.
    #[default]
    Allow,
    /// Deny every UPDATE the policy rejects, old violations included.
    Deny,
}

/// Whether a policy may change the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    /// Accepts or rejects; a `mutated_object` in its output is a fault.
    Validating,
    /// May also return a `mutated_object`; runs on `/mutate` in configuration order.
    Mutating,
}

/// How long one evaluation of a policy may run, from instantiation to its last instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(Duration);

impl Timeout {
    /// The largest timeout a policy may ask for: the kube-apiserver itself gives a webhook at
    /// most 30 s, so anything longer could never be honoured.
    pub const MAX: Duration = Duration::from_secs(30);

    /// A timeout of `ms` milliseconds, if it is between 1 ms and [`Timeout::MAX`].
    pub fn from_millis(ms: u64) -> Option<Self> {
        let d = Duration::from_millis(ms);
        (ms > 0 && d <= Self::MAX).then_some(Self(d))
    }

    /// The bound as a duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// The most linear memory one instance of a policy may hold, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemoryLimit(u64);

impl MemoryLimit {
    const MIB: u64 = 1024 * 1024;

    /// A limit of `mib` MiB, if it is between 1 and `max_mib`.
    pub fn from_mib(mib: u64, max_mib: u64) -> Option<Self> {
        (mib > 0 && mib <= max_mib).then(|| Self(mib * Self::MIB))
    }

    /// The limit in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB", self.0 / Self::MIB)
    }
}

/// A policy's settings, serialised once at load so that every evaluation only copies bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings(Arc<str>);

impl Settings {
    /// Serialises `value`. Settings are plain JSON already (parsed from YAML), so this cannot
    /// fail for any value the config layer produces.
    pub fn new(value: &serde_json::Value) -> Self {
        Self(Arc::from(value.to_string()))
    }

    /// The settings as compact JSON text.
    pub fn json(&self) -> &str {
        &self.0
    }
}

/// The Wasm module a policy runs, with where it came from (for messages).
#[derive(Clone, Debug)]
pub struct ModuleSource {
    /// A path or `builtin:<path>`, used in error messages and logs.
    pub origin: String,
    /// The module's bytes (binary Wasm).
    pub bytes: Arc<[u8]>,
}

/// One policy as configured and validated.
#[derive(Clone, Debug)]
pub struct PolicySpec {
    /// Unique within a policy set.
    pub name: PolicyName,
    /// The module to run.
    pub module: ModuleSource,
    /// The transport the configuration insists on, or `None` to let the engine detect it.
    pub abi: Option<Abi>,
    /// May it change the object?
    pub kind: PolicyKind,
    /// Enforce or monitor.
    pub mode: Mode,
    /// What a fault does.
    pub failure: FailurePolicy,
    /// Whether an UPDATE may keep violations its old object already had.
    pub existing_violations: ExistingViolations,
    /// Time bound of one evaluation.
    pub timeout: Timeout,
    /// Memory bound of one instance.
    pub memory: MemoryLimit,
    /// Which requests it sees.
    pub matcher: Matcher,
    /// Handed to the policy verbatim.
    pub settings: Settings,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A spec for unit tests: an empty module, default bounds, matching everything.
    pub(crate) fn spec(name: &str, mode: Mode) -> PolicySpec {
        PolicySpec {
            name: PolicyName::new(name).expect("valid name"),
            module: ModuleSource {
                origin: "test".into(),
                bytes: Arc::from(Vec::new()),
            },
            abi: None,
            kind: PolicyKind::Validating,
            mode,
            failure: FailurePolicy::Deny,
            existing_violations: ExistingViolations::Allow,
            timeout: Timeout::from_millis(100).expect("valid"),
            memory: MemoryLimit::from_mib(64, 1024).expect("valid"),
            matcher: Matcher::default(),
            settings: Settings::new(&serde_json::json!({})),
        }
    }

    #[test]
    fn policy_names_follow_dns_label_rules() {
        assert!(PolicyName::new("pinned-images").is_ok());
        assert!(PolicyName::new("a1").is_ok());
        assert_eq!(PolicyName::new(""), Err(PolicyNameError::Empty));
        for bad in ["Pinned", "-x", "x-", "a_b", "a.b", "a b", "ü"] {
            assert_eq!(
                PolicyName::new(bad),
                Err(PolicyNameError::Invalid(bad.into())),
                "{bad}"
            );
        }
        assert!(matches!(
            PolicyName::new(&"a".repeat(64)),
            Err(PolicyNameError::TooLong(_))
        ));
    }

    #[test]
    fn bounds_reject_zero_and_excess() {
        assert!(Timeout::from_millis(0).is_none());
        assert!(Timeout::from_millis(30_001).is_none());
        assert_eq!(
            Timeout::from_millis(100).map(|t| t.to_string()),
            Some("100 ms".into())
        );
        assert!(MemoryLimit::from_mib(0, 512).is_none());
        assert!(MemoryLimit::from_mib(513, 512).is_none());
        assert_eq!(MemoryLimit::from_mib(64, 512).map(|m| m.bytes()), Some(64 << 20));
    }
}
