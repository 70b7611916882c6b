//! How a [`Report`] is shown: a table for people (coloured only on a terminal), JSON for
//! scripts, JUnit XML for CI systems, and, on request, each mutation as a diff of the object.

use std::fmt::Write as _;

use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};

use super::{ObjectResult, Outcome, Report};

/// The output formats of `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per object, the policies that had something to say beneath it.
    Table,
    /// The whole report as one JSON document.
    Json,
    /// JUnit XML: one test case per object, failed when denied, errored when unreadable.
    Junit,
}

/// Why a report could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// JSON serialisation failed.
    #[error("cannot write the JSON report")]
    Json(#[source] serde_json::Error),
    /// JUnit serialisation failed.
    #[error("cannot write the JUnit report")]
    Junit(#[source] quick_junit::SerializeError),
}

/// How to render.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// The format.
    pub format: Format,
    /// ANSI colours (the table only, and only on a terminal).
    pub colour: bool,
    /// Show each mutation as a diff (the table only).
    pub show_patches: bool,
}

/// Renders `report` in `style`.
pub fn render(report: &Report, style: Style) -> Result<String, RenderError> {
    match style.format {
        Format::Table => Ok(table(report, style)),
        Format::Json => json(report),
        Format::Junit => junit(report),
    }
}

/// Pretty JSON: a report is read by people and scripts once, not sent per request.
#[allow(
    clippy::disallowed_methods,
    reason = "an offline report, not a response or a policy input"
)]
pub(crate) fn json<T: serde::Serialize>(report: &T) -> Result<String, RenderError> {
    serde_json::to_string_pretty(report)
        .map(|s| s + "\n")
        .map_err(RenderError::Json)
}

fn word(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Allowed => "allowed",
        Outcome::Patched => "patched",
        Outcome::Warning => "warning",
        Outcome::Denied => "denied",
    }
}

/// `text` in the colour of `outcome`, when `colour` is on.
pub(crate) fn paint(text: &str, outcome: Outcome, colour: bool) -> String {
    if !colour {
        return text.to_owned();
    }
    let code = match outcome {
        Outcome::Allowed => "32",
        Outcome::Patched => "36",
        Outcome::Warning => "33",
        Outcome::Denied => "1;31",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn label(o: &ObjectResult) -> String {
    let ns = if o.namespace.is_empty() {
        String::new()
    } else {
        format!("{}/", o.namespace)
    };
    format!("{} {ns}{}", o.kind, o.name)
}

fn table(report: &Report, style: Style) -> String {
    let mut out = String::new();
    let width = report.objects.iter().map(|o| label(o).len()).max().unwrap_or(0);
    for o in &report.objects {
        let outcome = paint(&format!("{:<7}", word(o.outcome)), o.outcome, style.colour);
        let _ = writeln!(out, "{outcome}  {:<width$}  {}", label(o), o.source);
        for p in o.policies.iter().filter(|p| p.outcome != Outcome::Allowed) {
            let what = paint(word(p.outcome), p.outcome, style.colour);
            match &p.message {
                Some(m) => {
                    let _ = writeln!(out, "         {what} by {}: {m}", p.policy);
                }
                None => {
                    let _ = writeln!(out, "         {what} by {}", p.policy);
                }
            }
        }
        for w in &o.warnings {
            let _ = writeln!(out, "         warning: {w}");
        }
        if style.show_patches
            && let Some((before, after)) = &o.before_after
        {
            out.push_str(&diff(before, after, style.colour));
        }
    }
    for e in &report.errors {
        let _ = writeln!(
            out,
            "{}  {}: {}",
            paint("error  ", Outcome::Denied, style.colour),
            e.source,
            e.problem
        );
    }
    let count = |wanted: Outcome| report.objects.iter().filter(|o| o.outcome == wanted).count();
    let _ = writeln!(
        out,
        "\n{} objects: {} denied, {} warned, {} patched, {} allowed; {} unreadable documents",
        report.objects.len(),
        count(Outcome::Denied),
        count(Outcome::Warning),
        count(Outcome::Patched),
        count(Outcome::Allowed),
        report.errors.len()
    );
    out
}

/// A unified diff of the object as YAML, before and after the mutating policies.
pub fn diff(before: &serde_json::Value, after: &serde_json::Value, colour: bool) -> String {
    let yaml = |v: &serde_json::Value| serde_yaml_ng::to_string(v).unwrap_or_default();
    let (a, b) = (yaml(before), yaml(after));
    let text = similar::TextDiff::from_lines(&a, &b);
    let mut out = String::new();
    for hunk in text.unified_diff().context_radius(2).iter_hunks() {
        for line in hunk.to_string().lines() {
            let painted = match line.chars().next() {
                Some('+') if colour => format!("\x1b[32m{line}\x1b[0m"),
                Some('-') if colour => format!("\x1b[31m{line}\x1b[0m"),
                _ => line.to_owned(),
            };
            let _ = writeln!(out, "           {painted}");
        }
    }
    out
}

fn junit(report: &Report) -> Result<String, RenderError> {
    let mut suite = TestSuite::new("portcullis check");
    for o in &report.objects {
        let status = match o.outcome {
            Outcome::Denied => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let reasons: Vec<String> = o
                    .policies
                    .iter()
                    .filter(|p| p.outcome == Outcome::Denied)
                    .map(|p| format!("{}: {}", p.policy, p.message.as_deref().unwrap_or("denied")))
                    .collect();
                status.set_message(reasons.join("; "));
                status.set_type("denied");
                status
            }
            _ => TestCaseStatus::success(),
        };
        let mut case = TestCase::new(format!("{} ({})", label(o), o.source), status);
        case.set_classname(o.source.file.clone());
        if !o.warnings.is_empty() {
            case.set_system_out(o.warnings.join("\n"));
        }
        suite.add_test_case(case);
    }
    for e in &report.errors {
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
        status.set_message(e.problem.clone());
        let mut case = TestCase::new(format!("unreadable document ({})", e.source), status);
        case.set_classname(e.source.file.clone());
        suite.add_test_case(case);
    }
    let mut junit = quick_junit::Report::new("portcullis");
    junit.add_test_suite(suite);
    junit.to_string().map_err(RenderError::Junit)
}
