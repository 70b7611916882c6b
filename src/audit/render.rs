//! How an [`Audit`] is shown: a table of what fails (coloured only on a terminal), or the whole
//! audit as JSON for scripts. The rendering helpers are `check`'s, so both commands read alike.

use std::fmt::Write as _;

use crate::check::Outcome;
use crate::check::report::{RenderError, json, paint};

use super::Audit;
use super::judge::{Audited, Status};

/// The output formats of `audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The objects that fail or error, each with its findings, then a summary.
    Table,
    /// The whole audit as one JSON document: every object with every finding.
    Json,
}

/// Renders `audit` as `format`, with ANSI colours when `colour` is on (the table only).
pub fn render(audit: &Audit, format: Format, colour: bool) -> Result<String, RenderError> {
    match format {
        Format::Table => Ok(table(audit, colour)),
        Format::Json => json(audit),
    }
}

fn shade(status: Status) -> Outcome {
    match status {
        Status::Fail => Outcome::Denied,
        Status::Error => Outcome::Warning,
        Status::Pass | Status::Skip => Outcome::Allowed,
    }
}

fn word(status: Status) -> &'static str {
    match status {
        Status::Fail => "fail",
        Status::Error => "error",
        Status::Pass => "pass",
        Status::Skip => "skip",
    }
}

fn label(audited: &Audited) -> String {
    let o = &audited.object;
    format!("{} {}/{}", o.kind, o.namespace, o.name)
}

fn table(audit: &Audit, colour: bool) -> String {
    let mut out = String::new();
    let shown = audit
        .objects
        .iter()
        .filter(|o| matches!(o.result, Status::Fail | Status::Error));
    for audited in shown {
        let status = paint(
            &format!("{:<6}", word(audited.result)),
            shade(audited.result),
            colour,
        );
        let _ = writeln!(out, "{status} {}", label(audited));
        for finding in audited
            .findings
            .iter()
            .filter(|f| matches!(f.result, Status::Fail | Status::Error))
        {
            let what = paint(word(finding.result), shade(finding.result), colour);
            let _ = write!(
                out,
                "         {what} ({}) {}",
                finding.mode_word(),
                finding.policy
            );
            match &finding.message {
                Some(message) => {
                    let _ = writeln!(out, ": {message}");
                }
                None => out.push('\n'),
            }
        }
    }
    for unjudged in &audit.unjudged {
        let o = &unjudged.object;
        let tag = paint("error ", Outcome::Denied, colour);
        let _ = writeln!(
            out,
            "{tag} {} {}/{}: not judged: {}",
            o.kind, o.namespace, o.name, unjudged.problem
        );
    }
    for forbidden in &audit.forbidden {
        let place = match &forbidden.namespace {
            Some(ns) => format!("in namespace {ns}"),
            None => "in all namespaces".to_owned(),
        };
        let tag = paint("forbidden", Outcome::Denied, colour);
        let _ = writeln!(out, "{tag} {} {place}: {}", forbidden.kind, forbidden.message);
    }
    let _ = write!(
        out,
        "\n{} objects audited: {} failing, {} with policy errors, {} passing, {} not judged by any policy",
        audit.objects.len(),
        audit.count(Status::Fail),
        audit.count(Status::Error),
        audit.count(Status::Pass),
        audit.count(Status::Skip),
    );
    if !audit.unjudged.is_empty() {
        let _ = write!(out, "; {} could not be judged", audit.unjudged.len());
    }
    if !audit.forbidden.is_empty() {
        let _ = write!(out, "; {} listings forbidden", audit.forbidden.len());
    }
    out.push('\n');
    if !audit.not_installed.is_empty() {
        let _ = writeln!(out, "not installed: {}", audit.not_installed.join(", "));
    }
    out
}
