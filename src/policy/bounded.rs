//! Policy output decoded within bounds: a message, warnings and audit annotations are cut while
//! they are read, so a hostile policy's megabytes of them never become megabytes of strings in
//! the host.
//!
//! The engine caps an output at 4 MiB; inside that, a million one-letter warnings would still be
//! a million heap allocations, and a 4 MiB message a 4 MiB string copied into every answer and
//! log line. Those allocations outlive the review in the allocator's arenas (measured: +120 MiB
//! resident after five such reviews). Strings here are read through serde's borrowed `&str`
//! (serde_json's scratch buffer when escaped), so only what is kept is allocated, and list items
//! past the bound are skipped unparsed.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The longest rejection message kept, in bytes; a rejection naming every container of a large
/// workload stays well below it.
pub const MESSAGE_BYTES: usize = 32 * 1024;
/// The longest warning kept, in bytes (the API server shows at most 256 characters of one).
pub const WARNING_BYTES: usize = 1024;
/// Warnings kept per policy (the API server passes on about 4 KiB of warnings in all).
pub const WARNINGS: usize = 64;
/// Audit annotations kept per policy, and the longest value kept, in bytes.
pub const ANNOTATIONS: usize = 64;
/// See [`ANNOTATIONS`].
pub const ANNOTATION_BYTES: usize = 4096;

/// `text` cut to at most `max` bytes on a character boundary, with `…` when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A string of at most `N` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capped<const N: usize>(pub String);

impl<'de, const N: usize> Deserialize<'de> for Capped<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text<const N: usize>;
        impl<const N: usize> Visitor<'_> for Text<N> {
            type Value = Capped<N>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Capped(cut(v, N)))
            }
        }
        deserializer.deserialize_str(Text::<N>)
    }
}

/// Warnings: at most [`WARNINGS`] of at most [`WARNING_BYTES`] each, and how many more there were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CappedWarnings {
    /// The warnings kept.
    pub kept: Vec<String>,
    /// How many were skipped.
    pub skipped: usize,
}

impl CappedWarnings {
    /// The kept warnings, plus one saying how many were skipped, if any.
    pub fn into_vec(mut self) -> Vec<String> {
        if self.skipped > 0 {
            self.kept.push(format!(
                "{} more warnings from this policy were dropped",
                self.skipped
            ));
        }
        self.kept
    }
}

impl<'de> Deserialize<'de> for CappedWarnings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = CappedWarnings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = CappedWarnings::default();
                while out.kept.len() < WARNINGS {
                    match seq.next_element::<Capped<WARNING_BYTES>>()? {
                        Some(w) => out.kept.push(w.0),
                        None => return Ok(out),
                    }
                }
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    out.skipped += 1;
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(List)
    }
}

/// Audit annotations: at most [`ANNOTATIONS`], values cut to [`ANNOTATION_BYTES`] (keys longer
/// than 63 characters are refused later anyway, so they are cut to 64 bytes here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CappedAnnotations(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for CappedAnnotations {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Map;
        impl<'de> Visitor<'de> for Map {
            type Value = CappedAnnotations;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while out.len() < ANNOTATIONS {
                    match map.next_entry::<Capped<64>, Capped<ANNOTATION_BYTES>>()? {
                        Some((k, v)) => {
                            out.insert(k.0, v.0);
                        }
                        None => return Ok(CappedAnnotations(out)),
                    }
                }
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(CappedAnnotations(out))
            }
        }
        deserializer.deserialize_map(Map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_cut_on_character_boundaries() {
        let c: Capped<8> = serde_json::from_str(r#""ééééé""#).expect("string");
        assert_eq!(c.0, "éé…");
        assert!(c.0.len() <= 8);
        let short: Capped<8> = serde_json::from_str(r#""ok""#).expect("string");
        assert_eq!(short.0, "ok");
        let escaped: Capped<8> = serde_json::from_str(r#""a\nbcdefghij""#).expect("string");
        assert_eq!(escaped.0, "a\nbcd…");
        assert!(serde_json::from_str::<Capped<8>>("1").is_err());
    }

    #[test]
    fn lists_and_maps_keep_their_bound_and_count_the_rest() {
        let many: Vec<String> = (0..1000).map(|i| format!("w{i}")).collect();
        let w: CappedWarnings =
            serde_json::from_str(&serde_json::to_string(&many).expect("json")).expect("list");
        assert_eq!(w.kept.len(), WARNINGS);
        assert_eq!(w.skipped, 1000 - WARNINGS);
        let all = w.into_vec();
        assert_eq!(
            all.last().map(String::as_str),
            Some("936 more warnings from this policy were dropped")
        );
        assert!(
            serde_json::from_str::<CappedWarnings>(r#"["a", 1]"#).is_err(),
            "types still checked"
        );
        let map: BTreeMap<String, String> =
            (0..100).map(|i| (format!("k{i:03}"), "v".repeat(5000))).collect();
        let a: CappedAnnotations =
            serde_json::from_str(&serde_json::to_string(&map).expect("json")).expect("map");
        assert_eq!(a.0.len(), ANNOTATIONS);
        assert!(a.0.values().all(|v| v.len() <= ANNOTATION_BYTES));
    }
}
