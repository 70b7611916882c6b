//! What Portcullis answers a review: allow (maybe with a patch) or deny, plus warnings and audit
//! annotations, held in the shapes the kube-apiserver will pass on unchanged.
//!
//! The API server edits what a webhook returns before a user sees it, so an answer that ignores
//! its rules loses information silently:
//! - a warning with a control character is dropped, and once the warnings of a request pass 4096
//!   characters in total every warning is cut to 256
//!   (`staging/src/k8s.io/apimachinery/pkg/util/net/http.go` `NewWarningHeader`,
//!   `staging/src/k8s.io/apiserver/pkg/endpoints/filters/warning.go`);
//! - an audit annotation is stored as `<webhook name>/<key>`, and a key that does not make that a
//!   qualified name (a `/` in it, more than 63 characters, other characters than alphanumerics,
//!   `-`, `_` and `.`) is dropped (`staging/src/k8s.io/apiserver/pkg/admission/attributes.go`
//!   `checkKeyFormat`).
//!
//! [`Warnings`] and [`AuditAnnotations`] apply those rules on the way in, so whatever they hold
//! reaches the user as is; what they had to shorten or refuse is reported to the caller, which
//! logs the full text.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeSeq, Serializer};

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

impl Admission {
    /// `allowed`, `patched` or `denied`, for logs.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Allow { patch: Some(_) } => "patched",
            Self::Allow { patch: None } => "allowed",
            Self::Deny { .. } => "denied",
        }
    }
}

/// The whole answer to one review.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// Allow (maybe with a patch) or deny.
    pub admission: Admission,
    /// Warnings for the client, in policy order.
    pub warnings: Warnings,
    /// Audit annotations; when two policies set one key, the first wins.
    pub audit_annotations: AuditAnnotations,
}

/// What [`Warnings::push`] did with a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningFate {
    /// Kept as written.
    Kept,
    /// Kept, with control characters replaced by spaces or cut to [`Warnings::ITEM_CHARS`].
    Shortened,
    /// The same text is already there.
    Duplicate,
    /// Left out: the warnings already fill [`Warnings::TOTAL_CHARS`]; a closing warning says how
    /// many were left out.
    Dropped,
}

/// Warnings that the API server passes on whole: each at most [`Warnings::ITEM_CHARS`]
/// characters without control characters, all together within [`Warnings::TOTAL_CHARS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Warnings {
    items: Vec<String>,
    chars: usize,
    dropped: usize,
}

impl Warnings {
    /// The length the API server cuts every warning to once the total is too long.
    pub const ITEM_CHARS: usize = 256;
    /// The total beyond which the API server starts cutting.
    pub const TOTAL_CHARS: usize = 4096;
    /// Room kept for the closing "N more warnings" line.
    const NOTICE_CHARS: usize = 96;

    /// Adds `text`, made safe first, unless it is a duplicate or there is no room left.
    pub fn push(&mut self, text: &str) -> WarningFate {
        let mut shortened = false;
        let mut safe: String = text
            .chars()
            .map(|c| {
                if c.is_control() {
                    shortened = true;
                    ' '
                } else {
                    c
                }
            })
            .collect();
        let mut chars = safe.chars().count();
        if chars > Self::ITEM_CHARS {
            safe = safe.chars().take(Self::ITEM_CHARS - 1).collect();
            safe.push('…');
            chars = Self::ITEM_CHARS;
            shortened = true;
        }
        if safe.trim().is_empty() {
            return WarningFate::Dropped;
        }
        if self.items.contains(&safe) {
            return WarningFate::Duplicate;
        }
        if self.chars + chars > Self::TOTAL_CHARS - Self::NOTICE_CHARS {
            self.dropped += 1;
            return WarningFate::Dropped;
        }
        self.chars += chars;
        self.items.push(safe);
        if shortened {
            WarningFate::Shortened
        } else {
            WarningFate::Kept
        }
    }

    /// How many warnings will be sent, the closing notice included.
    pub fn len(&self) -> usize {
        self.items.len() + usize::from(self.dropped > 0)
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The warnings as they will be sent, the closing notice included.
    pub fn to_vec(&self) -> Vec<String> {
        let mut all = self.items.clone();
        all.extend(self.notice());
        all
    }

    fn notice(&self) -> Option<String> {
        (self.dropped > 0).then(|| {
            format!(
                "{} more warnings left out to stay within the API server's limits; see the Portcullis log",
                self.dropped
            )
        })
    }
}

impl Serialize for Warnings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let notice = self.notice();
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for item in self.items.iter().chain(notice.as_ref()) {
            seq.serialize_element(item)?;
        }
        seq.end()
    }
}

/// Why an audit annotation was not kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationRejected {
    /// The key would not be a qualified name under the webhook's prefix.
    #[error(
        "audit annotation key {0:?} must be 1 to 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric (the API server drops it otherwise)"
    )]
    InvalidKey(String),
    /// An earlier policy set the same key.
    #[error("audit annotation key {0:?} is already set by an earlier policy")]
    Taken(String),
}

/// Audit annotation keys and values that the API server will record.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(transparent)]
pub struct AuditAnnotations(BTreeMap<String, String>);

impl AuditAnnotations {
    /// The longest key: the name part of a qualified name.
    pub const KEY_CHARS: usize = 63;

    /// Adds `key` = `value` when the key is valid and not yet set.
    pub fn insert(&mut self, key: String, value: String) -> Result<(), AnnotationRejected> {
        if !valid_key(&key) {
            return Err(AnnotationRejected::InvalidKey(key));
        }
        if self.0.contains_key(&key) {
            return Err(AnnotationRejected::Taken(key));
        }
        self.0.insert(key, value);
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// How many annotations there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The name part of `IsQualifiedName`: `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63.
fn valid_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= AuditAnnotations::KEY_CHARS
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_lose_control_characters_and_are_cut_to_256() {
        let mut w = Warnings::default();
        assert_eq!(w.push("plain"), WarningFate::Kept);
        assert_eq!(w.push("two\nlines\t\u{7f}"), WarningFate::Shortened);
        assert_eq!(w.push("plain"), WarningFate::Duplicate);
        assert_eq!(w.push("\n"), WarningFate::Dropped);
        assert_eq!(w.push(&"é".repeat(300)), WarningFate::Shortened);
        let sent = w.to_vec();
        assert_eq!(sent[1], "two lines  ");
        assert_eq!(sent[2].chars().count(), Warnings::ITEM_CHARS);
        assert!(sent[2].ends_with('…'));
        assert!(sent.iter().all(|s| !s.chars().any(char::is_control)));
    }

    /// However many warnings policies return, the API server never has to truncate: the total
    /// stays within 4096 characters, and a last warning says how many were left out.
    #[test]
    fn warnings_stay_within_the_total_and_say_what_was_left_out() {
        let mut w = Warnings::default();
        let fates: Vec<_> = (0..40)
            .map(|i| w.push(&format!("{i:03} {}", "x".repeat(200))))
            .collect();
        let kept = fates.iter().filter(|f| **f == WarningFate::Kept).count();
        let dropped = fates.iter().filter(|f| **f == WarningFate::Dropped).count();
        assert_eq!(kept + dropped, 40);
        let sent = w.to_vec();
        let total: usize = sent.iter().map(|s| s.chars().count()).sum();
        assert!(total <= Warnings::TOTAL_CHARS, "{total}");
        assert_eq!(
            sent.last().map(String::as_str),
            Some(
                format!(
                    "{dropped} more warnings left out to stay within the API server's limits; see the Portcullis log"
                )
                .as_str()
            )
        );
        assert_eq!(sent.len(), w.len());
        assert_eq!(serde_json::to_value(&w).expect("json"), serde_json::json!(sent));
    }

    #[test]
    fn audit_keys_follow_qualified_name_rules() {
        let mut a = AuditAnnotations::default();
        assert_eq!(a.insert("image-tag".into(), "v1".into()), Ok(()));
        assert_eq!(a.insert("A.b_c-9".into(), "v".into()), Ok(()));
        assert_eq!(a.insert("x".repeat(63), "v".into()), Ok(()));
        for bad in ["", "a/b", "-a", "a-", "a b", "ü", &"x".repeat(64)] {
            assert_eq!(
                a.insert(bad.to_owned(), "v".into()),
                Err(AnnotationRejected::InvalidKey(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(
            a.insert("image-tag".into(), "v2".into()),
            Err(AnnotationRejected::Taken("image-tag".into()))
        );
        assert_eq!(a.get("image-tag"), Some("v1"));
        assert_eq!(a.len(), 3);
    }
}
