//! Glob patterns for `exempt_images`: `*` matches any run of characters (including `/`), `?`
//! exactly one; everything else matches itself.
//!
//! Hand-written because a glob crate (or a regex translation) would be compiled on every
//! evaluation in a fresh instance; this matcher needs no preparation at all.

/// Characters a pattern may contain: those of image references plus the two wildcards.
fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-:/@+[]*?".contains(c)
}

/// Checks a pattern from the settings; the error names what is wrong.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("pattern is empty".into());
    }
    match pattern.chars().find(|&c| !allowed(c)) {
        Some(c) => Err(format!(
            "pattern \"{pattern}\" contains {c:?}; only image-reference characters and the wildcards '*' and '?' are allowed"
        )),
        None => Ok(()),
    }
}

/// Whether `text` matches `pattern` in full. Linear-time greedy matching with a single
/// backtrack point (the most recent `*`), so hostile patterns cannot blow up.
pub fn matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let cases = [
            ("*", "anything/at:all", true),
            ("", "", true),
            ("", "x", false),
            (
                "docker.io/library/busybox:*",
                "docker.io/library/busybox:1.36",
                true,
            ),
            ("docker.io/library/busybox:*", "docker.io/library/busybox", false),
            ("ghcr.io/acme/*", "ghcr.io/acme/team/tool:1", true),
            ("ghcr.io/acme/*", "ghcr.io/acmex/tool", false),
            ("*/debug-tools:*", "registry.local:5000/debug-tools:v2", true),
            ("nginx:1.2?", "nginx:1.25", true),
            ("nginx:1.2?", "nginx:1.2", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("**", "", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(matches(pattern, text), want, "{pattern} vs {text}");
        }
    }

    /// Reference semantics: plain recursion, exponential but fine for short strings.
    fn naive(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, _) => t.is_empty(),
            (Some('*'), _) => naive(&p[1..], t) || (!t.is_empty() && naive(p, &t[1..])),
            (Some(&c), Some(&d)) if c == '?' || c == d => naive(&p[1..], &t[1..]),
            _ => false,
        }
    }

    #[test]
    fn agrees_with_naive_matching() {
        let mut rng = portcullis_policy_sdk::testing::Rng::new(0x610B);
        for _ in 0..20_000 {
            let pattern = rng.string("ab*?", 7);
            let text = rng.string("ab", 8);
            let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
            assert_eq!(matches(&pattern, &text), naive(&p, &t), "{pattern} vs {text}");
        }
    }

    #[test]
    fn pattern_checks() {
        assert!(check_pattern("ghcr.io/acme/*:v?").is_ok());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("ghcr.io/acme/{a,b}").is_err());
        assert!(check_pattern("with space").is_err());
    }
}
