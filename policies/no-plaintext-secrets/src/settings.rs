//! Settings of the `no-plaintext-secrets` policy: what a credential's name looks like.

use serde::Deserialize;

use crate::name;

/// Which environment variable names are treated as credentials.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Words that mark a credential. A pattern matches a variable when it equals one of the
    /// name's tokens (or, for a pattern with `_`, a run of consecutive tokens), ignoring case;
    /// see [`crate::name`] for how names are split.
    pub name_patterns: Vec<String>,
    /// Exact variable names (case-insensitive) that are never flagged although they match.
    pub allowed_names: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let strings = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Self {
            name_patterns: strings(&[
                "KEY",
                "APIKEY",
                "TOKEN",
                "PASSWORD",
                "PASSWD",
                "PASS",
                // MySQL's client password (MYSQL_PWD), DB_PWD.
                "PWD",
                "PASSPHRASE",
                "SECRET",
                "CREDENTIAL",
                "CREDENTIALS",
                "PRIVATE_KEY",
                // Whole words through KEY already; these catch ACCESSKEY / SECRETKEY written
                // as one token (MINIO_SECRETKEY).
                "ACCESS_KEY",
                "SECRET_KEY",
            ]),
            allowed_names: strings(&[
                // Hugging Face tokenizers' thread switch, set in most HF images.
                "TOKENIZERS_PARALLELISM",
                // A path to a mounted key file, not a key.
                "GOOGLE_APPLICATION_CREDENTIALS",
                // The shell's working directories, not passwords.
                "PWD",
                "OLDPWD",
            ]),
        }
    }
}

impl Settings {
    /// The first pattern that makes `variable` a credential, unless it is allowed.
    pub fn credential_pattern(&self, variable: &str) -> Option<&str> {
        if self
            .allowed_names
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(variable))
        {
            return None;
        }
        name::credential_match(variable, &self.name_patterns)
    }
}

impl portcullis_policy_sdk::Settings for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.name_patterns.is_empty() {
            return Err(
                "name_patterns is empty, so nothing would be checked; remove the policy instead".into(),
            );
        }
        for pattern in &self.name_patterns {
            let tokens_ok = !pattern.is_empty()
                && pattern
                    .split('_')
                    .all(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()));
            if !tokens_ok {
                return Err(format!(
                    "name_patterns: \"{pattern}\" must be letters and digits, optionally joined by single '_' (e.g. ACCESS_KEY)"
                ));
            }
        }
        if let Some(empty) = self.allowed_names.iter().find(|n| n.trim().is_empty()) {
            return Err(format!("allowed_names: \"{empty}\" is not a variable name"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::Settings as _;

    #[test]
    fn defaults_flag_ml_credentials_but_not_lookalikes() {
        let s = Settings::default();
        assert_eq!(s.validate(), Ok(()));
        for flagged in [
            "OPENAI_API_KEY",
            "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ACCESS_KEY_ID",
            "WANDB_API_KEY",
            "POSTGRES_PASSWORD",
            "DB_PASS",
            "MLFLOW_TRACKING_PASSWORD",
            "openaiApiKey",
            "service-account-credentials",
            "GITHUB_PRIVATE_KEY",
            "COHERE_APIKEY",
            // Written as one word (name.rs: long patterns match the end of a token).
            "PGPASSWORD",
            "MYSQL_PWD",
            "OPENAIAPIKEY",
            "HFToken",
            "MINIO_SECRETKEY",
            "S3ACCESSKEY",
            "SSH_KEY_PASSPHRASE",
            "DBPASSWD",
        ] {
            assert!(
                s.credential_pattern(flagged).is_some(),
                "{flagged} should be flagged"
            );
        }
        for fine in [
            "MONKEY_COUNT",
            "TOKENIZERS_PARALLELISM",
            "tokenizers_parallelism",
            "MAX_NEW_TOKENS",
            "MAX_TOKENS",
            "KEYBOARD_LAYOUT",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "SECRETARY_EMAIL",
            "MODEL_NAME",
            "CUDA_VISIBLE_DEVICES",
            "HF_TOKEN_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "POSTGRES_PASSWORD_FILE",
            "PGPASSFILE",
            "PWD",
            "OLDPWD",
            "BYPASS_PROXY",
            "COMPASS_HEADING",
            "HOTKEY",
        ] {
            assert_eq!(s.credential_pattern(fine), None, "{fine} should not be flagged");
        }
    }

    #[test]
    fn allowed_names_and_custom_patterns() {
        let s = Settings {
            name_patterns: vec!["ACCESS_KEY".into(), "DSN".into()],
            allowed_names: vec!["SENTRY_DSN".into()],
        };
        assert_eq!(s.credential_pattern("AWS_SECRET_ACCESS_KEY"), Some("ACCESS_KEY"));
        assert_eq!(s.credential_pattern("DATABASE_DSN"), Some("DSN"));
        assert_eq!(s.credential_pattern("sentry_dsn"), None);
        assert_eq!(s.credential_pattern("OPENAI_API_KEY"), None);
    }

    #[test]
    fn malformed_settings_are_named() {
        let bad = Settings {
            name_patterns: vec!["API KEY".into()],
            ..Settings::default()
        };
        assert!(
            bad.validate()
                .expect_err("space")
                .starts_with("name_patterns: \"API KEY\"")
        );
        let trailing = Settings {
            name_patterns: vec!["KEY_".into()],
            ..Settings::default()
        };
        assert!(trailing.validate().is_err());
        let empty = Settings {
            name_patterns: vec![],
            ..Settings::default()
        };
        assert!(empty.validate().is_err());
    }
}
