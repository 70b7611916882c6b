//! How an environment variable's name is matched against credential words.
//!
//! Substring matching is useless here: `KEY` is inside `MONKEY_COUNT` and `KEYBOARD_LAYOUT`,
//! `TOKEN` inside `TOKENIZERS_PARALLELISM` and `MAX_NEW_TOKENS`. So names are split into tokens
//! (on `_`, `-`, `.` and lower→upper camelCase boundaries, then upper-cased) and a pattern must
//! equal a whole token, or, when the pattern itself contains `_`, a run of consecutive tokens
//! (`ACCESS_KEY` matches `AWS_SECRET_ACCESS_KEY`).
//!
//! Many tools read credentials from names written as one word: `PGPASSWORD` (libpq),
//! `HFTOKEN`, `OPENAIAPIKEY`, `MINIO_SECRETKEY`. So a pattern of at least
//! [`CONCATENATION_MIN`] letters (its `_` dropped: `SECRET_KEY` → `SECRETKEY`) also matches the
//! end of a token. Shorter patterns (`KEY`, `PASS`, `PWD`) do not, because ordinary words end
//! with them: `MONKEY`, `HOTKEY`, `BYPASS`, `COMPASS`. Only the end: a credential word at the
//! start of a token names something about the credential (`SECRETNAME`, `TOKENURL`).
//!
//! Names whose last token is `FILE`, `PATH` or `DIR` point at a mounted file rather than holding
//! the credential (`HF_TOKEN_FILE`, `AWS_SHARED_CREDENTIALS_FILE`), so they never match.

/// Last tokens that mark a variable as a reference to a file, not a credential.
const LOCATION_SUFFIXES: &[&str] = &["FILE", "PATH", "DIR"];

/// Shortest pattern (without `_`) that also matches the end of a concatenated token.
pub const CONCATENATION_MIN: usize = 5;

/// Splits a variable name into upper-cased tokens.
pub fn tokens(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if c.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        current.push(c.to_ascii_uppercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The first of `patterns` that `name` matches, if any.
pub fn credential_match<'p>(name: &str, patterns: &'p [String]) -> Option<&'p str> {
    let tokens = tokens(name);
    if tokens
        .last()
        .is_some_and(|last| LOCATION_SUFFIXES.contains(&last.as_str()))
    {
        return None;
    }
    patterns
        .iter()
        .find(|pattern| pattern_matches(&tokens, pattern))
        .map(String::as_str)
}

/// Whether `pattern` equals a run of `tokens`, or, concatenated and long enough, ends a token.
fn pattern_matches(tokens: &[String], pattern: &str) -> bool {
    let wanted: Vec<String> = pattern.split('_').map(str::to_ascii_uppercase).collect();
    if wanted.is_empty() {
        return false;
    }
    if tokens
        .windows(wanted.len())
        .any(|window| window == wanted.as_slice())
    {
        return true;
    }
    let joined = wanted.concat();
    joined.len() >= CONCATENATION_MIN && tokens.iter().any(|token| token.ends_with(&joined))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitting() {
        assert_eq!(tokens("OPENAI_API_KEY"), ["OPENAI", "API", "KEY"]);
        assert_eq!(tokens("openaiApiKey"), ["OPENAI", "API", "KEY"]);
        assert_eq!(tokens("s3.secret-key"), ["S3", "SECRET", "KEY"]);
        assert_eq!(tokens("__X__"), ["X"]);
        assert_eq!(tokens("HFToken"), ["HFTOKEN"]);
        assert!(tokens("").is_empty());
    }

    #[test]
    fn matching() {
        let p = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let patterns = p(&["KEY", "ACCESS_KEY"]);
        assert_eq!(credential_match("MONKEY_COUNT", &patterns), None);
        assert_eq!(credential_match("API_KEY", &patterns), Some("KEY"));
        assert_eq!(
            credential_match("ACCESS_KEY", &p(&["ACCESS_KEY"])),
            Some("ACCESS_KEY")
        );
        assert_eq!(credential_match("ACCESS_TO_KEY", &p(&["ACCESS_KEY"])), None);
        assert_eq!(credential_match("SSH_KEY_PATH", &patterns), None);
        assert_eq!(credential_match("KEY", &patterns), Some("KEY"));
    }

    #[test]
    fn concatenations_match_long_patterns_at_the_end_of_a_token() {
        let p = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let patterns = p(&["KEY", "PASS", "PWD", "TOKEN", "PASSWORD", "SECRET_KEY"]);
        for (name, pattern) in [
            ("PGPASSWORD", "PASSWORD"),
            ("HFToken", "TOKEN"),
            ("GITHUBTOKEN", "TOKEN"),
            ("MINIO_SECRETKEY", "SECRET_KEY"),
            ("minioSecretkey", "SECRET_KEY"),
            ("MYSQL_PWD", "PWD"),
        ] {
            assert_eq!(credential_match(name, &patterns), Some(pattern), "{name}");
        }
        // Short patterns stay whole words; long ones never match a token's start.
        for name in [
            "MONKEY_COUNT",
            "HOTKEY",
            "BYPASS_CACHE",
            "COMPASS_URL",
            "TOKENURL",
            "PASSWORDLESS_LOGIN",
            "PGPASSFILE",
            "TOKEN_PATH",
        ] {
            assert_eq!(credential_match(name, &patterns), None, "{name}");
        }
        assert_eq!(credential_match("PASSWORD", &patterns), Some("PASSWORD"));
    }
}
