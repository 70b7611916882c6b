//! One policy's metric handles, made once when its policy set is built, so that recording an
//! evaluation costs a few atomic adds and one histogram update: no label lookup, no
//! allocation.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::Families;
use super::labels::{EvaluationLabels, FaultLabels, PolicyLabels};
use crate::policy::spec::Mode;
use crate::policy::verdict::{FaultKind, Label};

/// Every verdict label, in the order of [`PolicyMeter`]'s outcome counters.
const OUTCOMES: [Label; 5] = [
    Label::Accepted,
    Label::Mutated,
    Label::Rejected,
    Label::Existing,
    Label::Fault,
];

/// A policy's evaluation counters (one per outcome, under its mode), its fault counters (one
/// per kind) and its latency histogram.
#[derive(Clone, Debug)]
pub struct PolicyMeter {
    outcomes: [Counter; OUTCOMES.len()],
    faults: [Counter; FaultKind::ALL.len()],
    latency: Histogram,
}

impl PolicyMeter {
    /// Handles registered nowhere: what `check`, `audit` and tests that do not scrape use.
    pub fn detached() -> Self {
        Self {
            outcomes: Default::default(),
            faults: Default::default(),
            latency: Histogram::new(super::EVALUATION_BUCKETS),
        }
    }

    /// The handles of policy `name` in `mode` within `families`. Every series exists from here
    /// on, at zero, so a rate over them is defined before the first evaluation.
    pub(super) fn registered(families: &Families, name: &str, mode: Mode) -> Self {
        let outcome = |outcome: Label| {
            families.evaluations.get_or_create_owned(&EvaluationLabels {
                policy: name.to_owned(),
                mode,
                outcome,
            })
        };
        let fault = |kind: FaultKind| {
            families.faults.get_or_create_owned(&FaultLabels {
                policy: name.to_owned(),
                kind,
            })
        };
        Self {
            outcomes: OUTCOMES.map(outcome),
            faults: FaultKind::ALL.map(fault),
            latency: families.evaluation_duration.get_or_create_owned(&PolicyLabels {
                policy: name.to_owned(),
            }),
        }
    }

    /// Records one evaluation: its outcome, its fault's kind when it failed, and its wall time.
    pub fn record(&self, outcome: Label, fault: Option<FaultKind>, elapsed: Duration) {
        self.outcomes[outcome_index(outcome)].inc();
        if let Some(kind) = fault {
            self.faults[fault_index(kind)].inc();
        }
        self.latency.observe(elapsed.as_secs_f64());
    }
}

fn outcome_index(label: Label) -> usize {
    match label {
        Label::Accepted => 0,
        Label::Mutated => 1,
        Label::Rejected => 2,
        Label::Existing => 3,
        Label::Fault => 4,
    }
}

fn fault_index(kind: FaultKind) -> usize {
    match kind {
        FaultKind::Timeout => 0,
        FaultKind::Memory => 1,
        FaultKind::Trap => 2,
        FaultKind::Abi => 3,
        FaultKind::Output => 4,
        FaultKind::Instantiate => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_follow_the_label_arrays() {
        for (i, label) in OUTCOMES.iter().enumerate() {
            assert_eq!(outcome_index(*label), i, "{label}");
        }
        for (i, kind) in FaultKind::ALL.iter().enumerate() {
            assert_eq!(fault_index(*kind), i, "{}", kind.as_str());
        }
    }
}
