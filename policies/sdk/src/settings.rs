//! The settings contract: how a policy's configuration is read and checked.
//!
//! Settings arrive as JSON from the webhook's policy configuration. The webhook calls
//! `validate_settings` once when it loads a policy, so that a typo in the configuration fails the
//! load instead of every admission request; `validate` checks them again (cheaply) because a
//! module may be driven by a host that skipped that step.

use serde::de::DeserializeOwned;

/// A policy's settings. `Default` is the configuration used when none is given.
pub trait Settings: DeserializeOwned + Default {
    /// Checks invariants that deserialisation alone cannot express (well-formed patterns,
    /// non-empty lists, ...). The error is shown to the operator as is, so name the setting.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
