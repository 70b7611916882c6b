//! Policies as Portcullis sees them: their specs, which requests they match, the set that is
//! live, how a review is evaluated against it and how each verdict is settled.
//!
//! Pure logic over the engine: nothing here does I/O, and nothing here knows HTTP.

pub mod bounded;
pub mod evaluate;
pub mod existing;
pub mod frozen;
pub mod matching;
pub mod set;
pub mod spec;
pub mod verdict;

pub use evaluate::{Decision, PolicyRun, Target};
pub use set::{LoadedPolicy, PolicySet, PolicySetError};
