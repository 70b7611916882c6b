//! Fuzzes the pinned-images policy's container image reference parser
//! (`pinned_images::reference::parse`), its `exempt_images` glob matcher, and the image check
//! built on both. An input is an image reference, or `pattern\nreference` to exempt a pattern.
//!
//! Properties of every parsed reference:
//! - its canonical form (Display) parses back to the same parts: normalisation is idempotent;
//! - the parts obey the grammar: a valid registry domain (never `index.docker.io`), a lower-case
//!   path, Docker Hub paths under a namespace (`library/` for single names), a tag of 1 to 128
//!   characters, a digest of `algorithm:hex` with the algorithm's length;
//! - `repository()` is the canonical form without tag and digest.
//!
//! The glob matcher agrees with a plain dynamic-programming matcher, and `check_image` decides
//! every string without panicking: it passes an exempt image, and never passes a reference that
//! neither parses nor is exempt.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pinned_images::glob;
use pinned_images::reference::{DOCKER_HUB, ImageRef, check_domain, parse};
use pinned_images::{Finding, Settings, check_image};

/// Whole-text glob matching by dynamic programming over (pattern prefix, text prefix): slow but
/// obviously right, the oracle for `glob::matches`.
fn glob_oracle(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // row[j]: does the pattern prefix so far match t[..j]?
    let mut row = vec![false; t.len() + 1];
    row[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        next[0] = pc == '*' && row[0];
        for j in 1..=t.len() {
            next[j] = match pc {
                '*' => row[j] || next[j - 1],
                '?' => row[j - 1],
                c => row[j - 1] && c == t[j - 1],
            };
        }
        row = next;
    }
    row[t.len()]
}

fn check_glob(pattern: &str, text: &str) {
    // Bound the oracle's quadratic cost; the matcher itself runs on every size.
    let matched = glob::matches(pattern, text);
    if pattern.len().saturating_mul(text.len()) <= 1 << 16 {
        assert_eq!(matched, glob_oracle(pattern, text), "{pattern:?} on {text:?}");
    }
}

fn check_reference(input: &str, reference: &ImageRef) {
    let canonical = reference.to_string();
    let reparsed = parse(&canonical);
    // The canonical form names the same image. (A finding of this target, `"a" * 238`, is in
    // fuzz/regressions/: the 255-character limit now applies to the normalised path, as
    // distribution/reference does since its PR #9, so the canonical form re-parses.)
    assert_eq!(reparsed.as_ref(), Ok(reference), "{input:?} → {canonical:?}");
    assert_eq!(check_domain(&reference.domain), Ok(()), "{input:?}");
    assert_ne!(reference.domain, "index.docker.io");
    assert!(!reference.path.is_empty(), "{input:?}");
    assert!(
        !reference.path.bytes().any(|b| b.is_ascii_uppercase()),
        "{input:?}"
    );
    if reference.domain == DOCKER_HUB {
        assert!(
            reference.path.contains('/'),
            "{input:?}: Docker Hub path without a namespace"
        );
    }
    if let Some(tag) = &reference.tag {
        assert!((1..=128).contains(&tag.len()), "{input:?}: tag {tag:?}");
    }
    if let Some(digest) = &reference.digest {
        let (algorithm, hex) = digest.split_once(':').expect("a digest is algorithm:hex");
        let expected = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            other => panic!("{input:?}: digest algorithm {other:?}"),
        };
        assert_eq!(hex.len(), expected, "{input:?}");
    }
    let repository = reference.repository();
    assert_eq!(repository, format!("{}/{}", reference.domain, reference.path));
    assert!(canonical.starts_with(&repository));
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(input) = std::str::from_utf8(bytes) else {
        return;
    };
    let (pattern, image) = match input.split_once('\n') {
        Some((pattern, image)) => (Some(pattern), image),
        None => (None, input),
    };
    let parsed = parse(image);
    if let Ok(reference) = &parsed {
        check_reference(image, reference);
    }

    let mut settings = Settings::default();
    let mut exempt = false;
    if let Some(pattern) = pattern.filter(|p| glob::check_pattern(p).is_ok()) {
        check_glob(pattern, image);
        let normalised = parsed.as_ref().ok().map(ToString::to_string);
        if let Some(normalised) = &normalised {
            check_glob(pattern, normalised);
        }
        settings.exempt_images.push(pattern.to_owned());
        exempt = settings.is_exempt(image, normalised.as_deref());
    }
    let verdict = check_image(&settings, image);
    if exempt {
        // Exemption silences violations; a warning (an upper-case first component read as a
        // registry host) may still say what the reference means.
        assert!(
            !matches!(verdict, Some(Finding::Violation(_))),
            "{image:?} is exempt by {pattern:?}: {verdict:?}"
        );
    } else if parsed.is_err() {
        assert!(
            matches!(verdict, Some(Finding::Violation(_))),
            "{image:?} does not parse but passed the check: {verdict:?}"
        );
    }
});
