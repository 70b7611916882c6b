//! Settings of the `readiness-probe` policy: which kinds are long-running.

use serde::Deserialize;

/// Kinds whose containers must have a readiness probe, and kinds that never need one.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Kinds that serve traffic until deleted, so Services route to them: their regular
    /// containers need a readiness probe.
    pub long_running_kinds: Vec<String>,
    /// Batch kinds that run to completion and receive no Service traffic. A Pod owned by one of
    /// these kinds is exempt too, as is a Pod labelled with a Job name.
    pub exempt_kinds: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let strings = |kinds: &[&str]| kinds.iter().map(|k| k.to_string()).collect();
        Self {
            long_running_kinds: strings(&[
                "Pod",
                "Deployment",
                "ReplicaSet",
                "StatefulSet",
                "DaemonSet",
                "ReplicationController",
                "InferenceService",
                "RayService",
                "PodTemplate",
            ]),
            exempt_kinds: strings(&[
                "Job",
                "CronJob",
                "PyTorchJob",
                "TFJob",
                "MPIJob",
                "XGBoostJob",
                "RayJob",
                "JobSet",
            ]),
        }
    }
}

impl Settings {
    /// Whether objects of `kind` are checked at all.
    pub fn checks(&self, kind: &str) -> bool {
        self.long_running_kinds.iter().any(|k| k == kind) && !self.is_exempt(kind)
    }

    /// Whether `kind` is a batch kind (its objects and the Pods it owns are exempt).
    pub fn is_exempt(&self, kind: &str) -> bool {
        self.exempt_kinds.iter().any(|k| k == kind)
    }
}

impl portcullis_policy_sdk::Settings for Settings {
    fn validate(&self) -> Result<(), String> {
        let lists = [
            ("long_running_kinds", &self.long_running_kinds),
            ("exempt_kinds", &self.exempt_kinds),
        ];
        for (setting, kinds) in lists {
            if let Some(bad) = kinds.iter().find(|k| !is_kind_name(k)) {
                return Err(format!(
                    "{setting}: \"{bad}\" is not a Kubernetes kind (an upper-case letter followed by letters and digits)"
                ));
            }
        }
        if let Some(both) = self
            .long_running_kinds
            .iter()
            .find(|k| self.exempt_kinds.contains(k))
        {
            return Err(format!(
                "\"{both}\" is in both long_running_kinds and exempt_kinds; choose one"
            ));
        }
        Ok(())
    }
}

fn is_kind_name(kind: &str) -> bool {
    let mut chars = kind.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::Settings as _;

    #[test]
    fn defaults_are_valid_and_split_serving_from_batch() {
        let s = Settings::default();
        assert_eq!(s.validate(), Ok(()));
        assert!(s.checks("Deployment") && s.checks("InferenceService"));
        assert!(!s.checks("Job") && !s.checks("PyTorchJob") && !s.checks("ConfigMap"));
        assert!(s.is_exempt("JobSet"));
    }

    #[test]
    fn overlapping_or_malformed_kinds_are_rejected() {
        let overlap = Settings {
            exempt_kinds: vec!["Deployment".into()],
            ..Settings::default()
        };
        assert!(
            overlap
                .validate()
                .expect_err("overlap")
                .contains("\"Deployment\" is in both")
        );
        let lower = Settings {
            long_running_kinds: vec!["deployment".into()],
            ..Settings::default()
        };
        assert!(
            lower
                .validate()
                .expect_err("lower")
                .starts_with("long_running_kinds:")
        );
    }

    #[test]
    fn partial_settings_keep_the_other_default() {
        let s: Settings = serde_json::from_str(r#"{"long_running_kinds": ["RayCluster"]}"#).expect("valid");
        assert!(s.checks("RayCluster") && !s.checks("Deployment"));
        assert!(s.is_exempt("Job"));
    }
}
