//! The audit as PolicyReports: one small report per audited object, in every report format
//! whose CRD the cluster serves (`wgpolicyk8s.io/v1alpha2` PolicyReport, `openreports.io/v1alpha1`
//! Report), created or brought up to date.
//!
//! One report per object rather than per namespace, as Kyverno and Kubewarden moved to once
//! namespace-wide reports outgrew etcd's object size. Each report is owned by its object (an
//! ownerReference), so the garbage collector removes it with the object, and is labelled
//! `app.kubernetes.io/managed-by: portcullis`, so one listing finds them all. A report whose
//! findings have not changed is not written again: a periodic audit of an unchanged cluster
//! writes nothing. The shapes follow the CRDs exactly (`tests/fixtures/audit/` holds their
//! schemas, which the tests validate every written body against).

use std::collections::HashMap;

use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, Error};
use serde_json::{Value, json};

use super::judge::{Audited, Finding, ObjectRef, Status};
use super::kinds::ReportFormat;
use super::list::{ChunkSize, Scope};

/// The label every report Portcullis writes carries, and its value.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "portcullis");

/// The `source` of every result: the engine that produced it.
pub const SOURCE: &str = "portcullis";

/// Writes in flight at once: enough to hide round trips, few enough not to crowd the API
/// server's priority levels.
const CONCURRENT_WRITES: usize = 4;

/// The longest report name: a DNS label, so it also fits where names become label values.
const NAME_LIMIT: usize = 63;

/// When the findings were made, as a `metav1.Timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Timestamp {
    /// Now.
    pub fn now() -> Self {
        let now = time::OffsetDateTime::now_utc();
        Self {
            seconds: now.unix_timestamp(),
            nanos: now.nanosecond(),
        }
    }
}

/// What writing did, per format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// New reports.
    pub created: usize,
    /// Reports whose findings changed.
    pub updated: usize,
    /// Reports already up to date, left alone.
    pub unchanged: usize,
}

/// Why writing reports stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The existing reports could not be listed.
    #[error("cannot list the existing {format} reports")]
    List {
        /// `<plural>.<group>/<version>`.
        format: String,
        /// The client's error.
        #[source]
        source: Error,
    },
    /// A report could not be created, read or replaced.
    #[error("cannot write {format} {report}")]
    Write {
        /// `<plural>.<group>/<version>`.
        format: String,
        /// The report, as `namespace/name`.
        report: String,
        /// The client's error.
        #[source]
        source: Error,
    },
    /// A report is not a valid object (cannot happen for the shapes built here).
    #[error("cannot encode the report for {name}")]
    Encode {
        /// The report's name.
        name: String,
        /// The serialisation error.
        #[source]
        source: serde_json::Error,
    },
}

/// The name of `object`'s report: `portcullis-<kind>-<name>`, or, when that is longer than a
/// DNS label, its start and a hash of the whole reference, so that it stays unique and stable.
pub fn report_name(object: &ObjectRef) -> String {
    let plain = format!("portcullis-{}-{}", object.kind.to_ascii_lowercase(), object.name);
    if plain.len() <= NAME_LIMIT {
        return plain;
    }
    let hash = fnv1a(&format!(
        "{}/{}/{}/{}",
        object.group(),
        object.kind,
        object.namespace,
        object.name
    ));
    let keep = NAME_LIMIT - 17;
    let start = plain[..keep].trim_end_matches(['-', '.']);
    format!("{start}-{hash:016x}")
}

/// FNV-1a, 64 bits: a stable hash (std's hasher may change between releases; a name must not).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The report on `audited` in `format`.
pub fn build(format: ReportFormat, audited: &Audited, at: Timestamp) -> Value {
    let (group, version, kind) = format.gvk();
    let object = &audited.object;
    let mut scope = json!({
        "apiVersion": object.api_version,
        "kind": object.kind,
        "namespace": object.namespace,
        "name": object.name,
    });
    let mut metadata = json!({
        "name": report_name(object),
        "namespace": object.namespace,
        "labels": {MANAGED_BY.0: MANAGED_BY.1},
    });
    if let Some(uid) = &object.uid {
        scope["uid"] = json!(uid);
        metadata["ownerReferences"] = json!([{
            "apiVersion": object.api_version,
            "kind": object.kind,
            "name": object.name,
            "uid": uid,
        }]);
    }
    let results: Vec<Value> = audited.findings.iter().map(|f| result(f, at)).collect();
    let mut report = json!({
        "apiVersion": format!("{group}/{version}"),
        "kind": kind,
        "metadata": metadata,
        "scope": scope,
        "summary": summary(&audited.findings),
        "results": results,
    });
    if format == ReportFormat::OpenReports {
        report["source"] = json!(SOURCE);
    }
    report
}

fn result(finding: &Finding, at: Timestamp) -> Value {
    let mut result = json!({
        "source": SOURCE,
        "policy": finding.policy,
        "result": finding.result,
        "scored": true,
        "timestamp": {"seconds": at.seconds, "nanos": at.nanos},
        "properties": {"mode": finding.mode_word()},
    });
    if let Some(severity) = finding.severity {
        result["severity"] = json!(severity);
    }
    if let Some(message) = &finding.message {
        result["message"] = json!(message);
    }
    result
}

fn summary(findings: &[Finding]) -> Value {
    let count = |status: Status| findings.iter().filter(|f| f.result == status).count();
    json!({
        "pass": count(Status::Pass),
        "fail": count(Status::Fail),
        "warn": 0,
        "error": count(Status::Error),
        "skip": count(Status::Skip),
    })
}

/// What two reports say, leaving out metadata and when it was found.
fn content(report: &Value) -> Value {
    let mut content = json!({
        "scope": report.get("scope"),
        "summary": report.get("summary"),
        "source": report.get("source"),
        "results": report.get("results"),
    });
    if let Some(results) = content["results"].as_array_mut() {
        for result in results {
            if let Some(fields) = result.as_object_mut() {
                fields.remove("timestamp");
            }
        }
    }
    content
}

/// Writes a report for every audited object with findings, and empties the existing report of
/// an audited object that no longer has any, in each format of `targets`.
pub async fn write(
    client: &Client,
    targets: &[(ReportFormat, ApiResource)],
    scope: &Scope,
    chunk: ChunkSize,
    audited: &[Audited],
) -> Result<Vec<(ReportFormat, Written)>, ReportError> {
    let at = Timestamp::now();
    let mut written = Vec::new();
    for (format, resource) in targets {
        let existing = existing(client, *format, resource, scope, chunk).await?;
        let mut counts = Written::default();
        let jobs = audited.iter().filter_map(|a| {
            let desired = build(*format, a, at);
            let key = (a.object.namespace.clone(), report_name(&a.object));
            let old = existing.get(&key);
            match old {
                None if a.findings.is_empty() => None,
                Some(old) if content(old) == content(&desired) => {
                    counts.unchanged += 1;
                    None
                }
                _ => Some((desired, old.map(|o| o["metadata"]["resourceVersion"].clone()))),
            }
        });
        let jobs: Vec<_> = jobs.collect();
        let outcomes: Vec<Change> = futures::stream::iter(jobs)
            .map(|(desired, version)| put(client, *format, resource, desired, version))
            .buffer_unordered(CONCURRENT_WRITES)
            .try_collect()
            .await?;
        for change in outcomes {
            match change {
                Change::Created => counts.created += 1,
                Change::Updated => counts.updated += 1,
            }
        }
        tracing::info!(format = %format.describe(), created = counts.created, updated = counts.updated, unchanged = counts.unchanged, "reports written");
        written.push((*format, counts));
    }
    Ok(written)
}

/// Every report Portcullis wrote before in `scope`, by namespace and name, as JSON.
async fn existing(
    client: &Client,
    format: ReportFormat,
    resource: &ApiResource,
    scope: &Scope,
    chunk: ChunkSize,
) -> Result<HashMap<(String, String), Value>, ReportError> {
    let apis: Vec<Api<DynamicObject>> = match scope {
        Scope::AllNamespaces => vec![Api::all_with(client.clone(), resource)],
        Scope::Namespaces(namespaces) => namespaces
            .iter()
            .map(|ns| Api::namespaced_with(client.clone(), ns, resource))
            .collect(),
    };
    let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
    let mut found = HashMap::new();
    for api in apis {
        let mut params = ListParams::default().labels(&selector).limit(chunk.0.get());
        loop {
            let list = api.list(&params).await.map_err(|source| ReportError::List {
                format: format.describe(),
                source,
            })?;
            for report in list.items {
                let key = (
                    report.metadata.namespace.clone().unwrap_or_default(),
                    report.metadata.name.clone().unwrap_or_default(),
                );
                let value = serde_json::to_value(&report).map_err(|source| ReportError::Encode {
                    name: key.1.clone(),
                    source,
                })?;
                found.insert(key, value);
            }
            match list.metadata.continue_.filter(|t| !t.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
    }
    Ok(found)
}

/// What a write did.
enum Change {
    Created,
    Updated,
}

/// Creates `desired`, or replaces the report at `version`. A report created meanwhile (409
/// AlreadyExists) or changed meanwhile (409 Conflict) is read again and replaced once more.
async fn put(
    client: &Client,
    format: ReportFormat,
    resource: &ApiResource,
    desired: Value,
    version: Option<Value>,
) -> Result<Change, ReportError> {
    let namespace = desired["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = desired["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let failed = |source: Error| ReportError::Write {
        format: format.describe(),
        report: format!("{namespace}/{name}"),
        source,
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, resource);
    let params = PostParams {
        dry_run: false,
        field_manager: Some(SOURCE.to_owned()),
    };
    let encode = |mut value: Value, version: Option<&Value>| {
        if let Some(version) = version {
            value["metadata"]["resourceVersion"] = version.clone();
        }
        serde_json::from_value::<DynamicObject>(value).map_err(|source| ReportError::Encode {
            name: name.clone(),
            source,
        })
    };
    let first = match &version {
        None => api
            .create(&params, &encode(desired.clone(), None)?)
            .await
            .map(|_| Change::Created),
        Some(v) => api
            .replace(&name, &params, &encode(desired.clone(), Some(v))?)
            .await
            .map(|_| Change::Updated),
    };
    match first {
        Ok(change) => Ok(change),
        Err(Error::Api(status)) if status.is_already_exists() || status.is_conflict() => {
            let current = api.get(&name).await.map_err(failed)?;
            let version = current.metadata.resource_version.map(Value::String);
            api.replace(&name, &params, &encode(desired, version.as_ref())?)
                .await
                .map(|_| Change::Updated)
                .map_err(failed)
        }
        Err(source) => Err(failed(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::judge::Severity;
    use crate::policy::spec::Mode;

    fn object(kind: &str, name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            namespace: "ml".into(),
            name: name.into(),
            uid: Some("6b1c0d2e".into()),
        }
    }

    #[test]
    fn names_are_readable_unique_and_dns_labels() {
        assert_eq!(
            report_name(&object("Deployment", "fraud-model")),
            "portcullis-deployment-fraud-model"
        );
        let long = "a".repeat(40);
        let one = report_name(&object("Deployment", &format!("{long}.one")));
        let two = report_name(&object("Deployment", &format!("{long}.two")));
        assert_ne!(one, two);
        for name in [&one, &two] {
            assert_eq!(name.len(), NAME_LIMIT, "{name}");
            assert!(name.starts_with("portcullis-deployment-aaaa"), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'),
                "{name}"
            );
        }
        assert_eq!(
            one,
            report_name(&object("Deployment", &format!("{long}.one"))),
            "stable"
        );
    }

    #[test]
    fn unchanged_findings_are_the_same_content_at_another_time() {
        let audited = Audited {
            object: object("Deployment", "d"),
            result: Status::Fail,
            findings: vec![Finding {
                policy: "pinned-images".into(),
                result: Status::Fail,
                mode: Mode::Enforce,
                severity: Some(Severity::High),
                message: Some("uses :latest".into()),
            }],
        };
        let first = build(
            ReportFormat::WgPolicy,
            &audited,
            Timestamp { seconds: 1, nanos: 0 },
        );
        let later = build(
            ReportFormat::WgPolicy,
            &audited,
            Timestamp {
                seconds: 99,
                nanos: 5,
            },
        );
        assert_ne!(first, later);
        assert_eq!(content(&first), content(&later));
        let mut fixed = audited.clone();
        fixed.findings[0].result = Status::Pass;
        assert_ne!(
            content(&first),
            content(&build(
                ReportFormat::WgPolicy,
                &fixed,
                Timestamp { seconds: 1, nanos: 0 }
            ))
        );
    }
}
