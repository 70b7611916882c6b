//! Placeholder for the `pinned-images` policy (being written).
use portcullis_policy_sdk::{ValidationRequest, ValidationResponse, export_policy};

/// No settings yet.
#[derive(serde::Deserialize, Default)]
pub struct Settings {}
impl portcullis_policy_sdk::Settings for Settings {}

/// Accepts everything.
pub fn validate(_: &ValidationRequest<Settings>) -> ValidationResponse {
    ValidationResponse::accept()
}

export_policy!(Settings, validate);
