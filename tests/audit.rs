//! `portcullis audit`, the real binary with the real kube client, against a fake API server: a
//! TLS server on 127.0.0.1:0 (its CA in the kubeconfig the test writes) that answers with
//! responses in the exact shape kube-apiserver sends (`tests/fixtures/audit/README.md`). That
//! server is the only part faked. It keeps the reports written to it, like a cluster would, and
//! records every request, so the tests check what the audit asked and wrote: pagination, a
//! forbidden kind or namespace (reported, not fatal), PolicyReport and OpenReports bodies valid
//! against their CRDs' schemas, and a second audit writing nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The bearer token the kubeconfig carries and the fake API server demands.
const TOKEN: &str = "audit-test-token";

fn fixture(name: &str) -> Value {
    let path = common::fixture_path("audit").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// How the fake cluster is set up.
#[derive(Clone, Default)]
struct Setup {
    /// (resource, namespace or none for cluster scope) → the 403 Status fixture for listing it.
    forbidden: Vec<(&'static str, Option<&'static str>, &'static str)>,
    /// A resource whose listing fails with a 500.
    broken: Option<&'static str>,
    /// Whether the PolicyReport and OpenReports CRDs are installed.
    report_crds: bool,
    /// Reports stored before the audit runs.
    stored: Vec<Value>,
}

/// One request the fake API server received.
#[derive(Clone, Debug)]
struct Recorded {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    body: Option<Value>,
}

struct State {
    setup: Setup,
    requests: Vec<Recorded>,
    /// Reports by (group, namespace, name).
    stored: BTreeMap<(String, String, String), Value>,
    next_version: u64,
}

/// The fake API server: TLS on 127.0.0.1:0, on a thread and runtime of its own.
struct FakeApiServer {
    state: Arc<Mutex<State>>,
    shutdown: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl FakeApiServer {
    fn start(setup: Setup) -> Self {
        let bundle = portcullis::certs::generate(&["127.0.0.1".into()]).expect("certificates");
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes()).expect("key PEM");
        let mut tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("serving certificate");
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let mut stored = BTreeMap::new();
        for report in &setup.stored {
            stored.insert(report_key(report), report.clone());
        }
        let state = Arc::new(Mutex::new(State {
            setup,
            requests: Vec::new(),
            stored,
            next_version: 9000,
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (tcp, _) = tokio::select! {
                        accepted = listener.accept() => accepted.expect("accept"),
                        _ = &mut stop => return,
                    };
                    let acceptor = acceptor.clone();
                    let state = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = hyper::service::service_fn(move |request| {
                            let state = Arc::clone(&state);
                            async move { Ok::<_, hyper::Error>(handle(&state, request).await) }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });

        let dir = tempfile::tempdir().expect("temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        let ca = base64::engine::general_purpose::STANDARD.encode(&bundle.ca_pem);
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: https://{addr}\n    certificate-authority-data: {ca}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: auditor\n    namespace: team-a\nusers:\n- name: auditor\n  user:\n    token: {TOKEN}\n"
            ),
        )
        .expect("write kubeconfig");
        Self {
            state,
            shutdown: Some(shutdown),
            _dir: dir,
            kubeconfig,
        }
    }

    /// Runs `portcullis audit --kubeconfig <this server> <args>`.
    fn audit(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("audit")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env(common::CACHE_DIR_ENV, common::artifact_cache_dir())
            .env("NO_COLOR", "1")
            .env_remove("KUBECONFIG")
            .output()
            .expect("run portcullis audit")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the requests recorded so far.
    fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.lock().requests)
    }

    /// A stored report.
    fn stored(&self, group: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .stored
            .get(&(group.to_owned(), namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn report_key(report: &Value) -> (String, String, String) {
    let text = |p: &str| report.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
    let group = text("/apiVersion").split('/').next().unwrap_or("").to_owned();
    (group, text("/metadata/namespace"), text("/metadata/name"))
}

/// A `Status` failure as the API server's `apierrors` builds it
/// (`staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go`).
fn status(code: u16, reason: &str, message: String, details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "details": details, "code": code})
}

fn reply(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    response
}

async fn handle(state: &Mutex<State>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Option<Value> = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).expect("JSON body"));
    let query: BTreeMap<String, String> = parts
        .uri
        .query()
        .map(|q| url_pairs(q).into_iter().collect::<BTreeMap<String, String>>())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
    state.requests.push(Recorded {
        method: parts.method.clone(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    let authorised =
        parts.headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"));
    if !authorised {
        let unauthorised = status(401, "Unauthorized", "Unauthorized".into(), json!({}));
        return reply(StatusCode::UNAUTHORIZED, &unauthorised);
    }
    let (code, body) = route(&mut state, &parts.method, &path, &query, body);
    reply(code, &body)
}

/// `application/x-www-form-urlencoded` pairs, as the client encodes its query.
fn url_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("utf-8");
                out.push(u8::from_str_radix(hex, 16).expect("percent escape"));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).expect("utf-8")
}

/// Which workload fixtures list which resource, cluster-wide.
fn workload_items(resource: &str) -> Option<Vec<Value>> {
    let files: &[&str] = match resource {
        "pods" => &["pods-page-1.json", "pods-page-2.json", "pods-page-3.json"],
        "deployments" => &["deployments.json"],
        "replicasets" => &["replicasets.json"],
        "inferenceservices" => &["inferenceservices.json"],
        _ => return None,
    };
    Some(
        files
            .iter()
            .flat_map(|f| fixture(f)["items"].as_array().cloned().unwrap_or_default())
            .collect(),
    )
}

fn list_kind(resource: &str) -> &'static str {
    match resource {
        "pods" => "PodList",
        "podtemplates" => "PodTemplateList",
        "replicationcontrollers" => "ReplicationControllerList",
        "deployments" => "DeploymentList",
        "replicasets" => "ReplicaSetList",
        "statefulsets" => "StatefulSetList",
        "daemonsets" => "DaemonSetList",
        "jobs" => "JobList",
        "cronjobs" => "CronJobList",
        "inferenceservices" => "InferenceServiceList",
        "rayclusters" => "RayClusterList",
        "rayjobs" => "RayJobList",
        "rayservices" => "RayServiceList",
        "policyreports" => "PolicyReportList",
        "reports" => "ReportList",
        other => panic!("the audit listed {other}, which it should not"),
    }
}

fn route(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let report_groups = ["wgpolicyk8s.io", "openreports.io"];
    // Discovery documents.
    match segments.as_slice() {
        ["api"] => return (StatusCode::OK, fixture("discovery-api.json")),
        ["api", "v1"] => return (StatusCode::OK, fixture("discovery-api-v1.json")),
        ["apis"] => {
            let mut groups = fixture("discovery-apis.json");
            if !state.setup.report_crds
                && let Some(list) = groups["groups"].as_array_mut()
            {
                list.retain(|g| !report_groups.contains(&g["name"].as_str().unwrap_or("")));
            }
            return (StatusCode::OK, groups);
        }
        ["apis", "metrics.k8s.io", _] => {
            let message = "the server is currently unable to handle the request".to_owned();
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                status(503, "ServiceUnavailable", message, json!({})),
            );
        }
        ["apis", group, version] => {
            let path = common::fixture_path("audit").join(format!("discovery-apis-{group}-{version}.json"));
            let installed = state.setup.report_crds || !report_groups.contains(group);
            if installed && path.exists() {
                return (
                    StatusCode::OK,
                    fixture(&format!("discovery-apis-{group}-{version}.json")),
                );
            }
            return not_found(path.display().to_string());
        }
        _ => {}
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return not_found(path.to_owned()),
    };
    let (namespace, resource, name) = match rest {
        [resource] => (None, *resource, None),
        ["namespaces", ns, resource] => (Some(*ns), *resource, None),
        ["namespaces", ns, resource, name] => (Some(*ns), *resource, Some(*name)),
        _ => return not_found(path.to_owned()),
    };
    let api_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    if report_groups.contains(&group) {
        return reports(
            state,
            method,
            &api_version,
            group,
            namespace,
            resource,
            name,
            query,
            body,
        );
    }
    assert_eq!(
        method,
        Method::GET,
        "the audit only reads workloads: {method} {path}"
    );
    assert!(name.is_none(), "the audit only lists workloads: {path}");
    if let Some((_, _, file)) = state
        .setup
        .forbidden
        .iter()
        .find(|(r, ns, _)| *r == resource && *ns == namespace)
    {
        return (StatusCode::FORBIDDEN, fixture(file));
    }
    if state.setup.broken == Some(resource) {
        let message = "etcdserver: request timed out".to_owned();
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            status(500, "InternalError", message, json!({})),
        );
    }
    let kind = list_kind(resource);
    // The cluster-wide Pod listing is the recorded one, in three pages.
    if resource == "pods" && namespace.is_none() {
        let page1 = fixture("pods-page-1.json");
        let page2 = fixture("pods-page-2.json");
        let token = query.get("continue").map(String::as_str);
        let page = match token {
            None => page1,
            Some(t) if Some(t) == page1["metadata"]["continue"].as_str() => page2,
            Some(t) if Some(t) == page2["metadata"]["continue"].as_str() => fixture("pods-page-3.json"),
            Some(t) => panic!("unknown continue token {t}"),
        };
        return (StatusCode::OK, page);
    }
    let items: Vec<Value> = workload_items(resource)
        .unwrap_or_default()
        .into_iter()
        .filter(|item| namespace.is_none_or(|ns| item["metadata"]["namespace"] == ns))
        .collect();
    let list = json!({"kind": kind, "apiVersion": api_version,
                      "metadata": {"resourceVersion": "5678"}, "items": items});
    (StatusCode::OK, list)
}

fn not_found(what: String) -> (StatusCode, Value) {
    let message = "the server could not find the requested resource".to_owned();
    (
        StatusCode::NOT_FOUND,
        status(
            404,
            "NotFound",
            message,
            json!({"causes": [{"reason": "UnexpectedServerResponse", "message": what}]}),
        ),
    )
}

#[allow(clippy::too_many_arguments, reason = "one request's parts, unpacked once")]
fn reports(
    state: &mut State,
    method: &Method,
    api_version: &str,
    group: &str,
    namespace: Option<&str>,
    resource: &str,
    name: Option<&str>,
    query: &BTreeMap<String, String>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let qualified = format!("{resource}.{group}");
    let missing = |name: &str| {
        status(
            404,
            "NotFound",
            format!("{qualified} \"{name}\" not found"),
            json!({"name": name, "group": group, "kind": resource}),
        )
    };
    match (method.clone(), name) {
        (Method::GET, None) => {
            assert_eq!(
                query.get("labelSelector").map(String::as_str),
                Some("app.kubernetes.io/managed-by=portcullis"),
                "reports are listed by their label"
            );
            let items: Vec<Value> = state
                .stored
                .iter()
                .filter(|((g, ns, _), _)| g == group && namespace.is_none_or(|n| n == ns))
                .map(|(_, report)| report.clone())
                .collect();
            let list = json!({"apiVersion": api_version, "kind": list_kind(resource),
                              "metadata": {"continue": "", "resourceVersion": "9999"}, "items": items});
            (StatusCode::OK, list)
        }
        (Method::GET, Some(name)) => {
            let key = (
                group.to_owned(),
                namespace.unwrap_or("").to_owned(),
                name.to_owned(),
            );
            match state.stored.get(&key) {
                Some(report) => (StatusCode::OK, report.clone()),
                None => (StatusCode::NOT_FOUND, missing(name)),
            }
        }
        (Method::POST, None) => {
            let mut report = body.expect("a POST carries the report");
            let key = report_key(&report);
            assert_eq!(Some(key.1.as_str()), namespace, "POSTed to its own namespace");
            if state.stored.contains_key(&key) {
                let message = format!("{qualified} \"{}\" already exists", key.2);
                let details = json!({"name": key.2, "group": group, "kind": resource});
                return (
                    StatusCode::CONFLICT,
                    status(409, "AlreadyExists", message, details),
                );
            }
            state.next_version += 1;
            report["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", state.next_version));
            report["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
            report["metadata"]["creationTimestamp"] = json!("2025-06-01T03:00:00Z");
            report["metadata"]["generation"] = json!(1);
            state.stored.insert(key, report.clone());
            (StatusCode::CREATED, report)
        }
        (Method::PUT, Some(name)) => {
            let mut report = body.expect("a PUT carries the report");
            let key = (
                group.to_owned(),
                namespace.unwrap_or("").to_owned(),
                name.to_owned(),
            );
            let Some(current) = state.stored.get(&key) else {
                return (StatusCode::NOT_FOUND, missing(name));
            };
            if report["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                let message = format!(
                    "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                );
                let details = json!({"name": name, "group": group, "kind": resource});
                return (StatusCode::CONFLICT, status(409, "Conflict", message, details));
            }
            state.next_version += 1;
            report["metadata"]["uid"] = current["metadata"]["uid"].clone();
            report["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
            state.stored.insert(key, report.clone());
            (StatusCode::OK, report)
        }
        (method, _) => panic!("the audit sent {method} to {resource}"),
    }
}

/// The vendored CRD schema `file` (`tests/fixtures/audit/`), as JSON.
fn crd_schema(file: &str) -> Value {
    let path = common::fixture_path("audit").join(file);
    let text = std::fs::read_to_string(&path).expect("schema file");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("schema YAML");
    serde_json::to_value(yaml).expect("schema as JSON")
}

/// Validates `value` against a structural OpenAPI v3 schema as the API server does for a
/// custom resource (`staging/src/k8s.io/apiextensions-apiserver/pkg/apiserver/validation`):
/// types, `enum`, `required`, int32/int64 ranges, and fields the schema does not know, which
/// the API server would prune silently (`.../pkg/apiserver/schema/pruning/algorithm.go`) and are
/// errors here, since the data would be lost. `metadata` (an object without properties) is the
/// API server's own to validate.
fn validate(schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let Some(fields) = value.as_object() else {
                return errors.push(format!("{at}: expected an object, got {value}"));
            };
            for required in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let required = required.as_str().unwrap_or("");
                if !fields.contains_key(required) {
                    errors.push(format!("{at}: missing required field {required}"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, field) in fields {
                let here = format!("{at}.{key}");
                match (properties.and_then(|p| p.get(key)), additional) {
                    (Some(sub), _) | (None, Some(sub)) => validate(sub, field, &here, errors),
                    (None, None) if properties.is_none() => {}
                    (None, None) => {
                        errors.push(format!("{here}: unknown field, the API server would prune it"))
                    }
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    validate(&schema["items"], item, &format!("{at}[{i}]"), errors);
                }
            }
            None => errors.push(format!("{at}: expected an array, got {value}")),
        },
        Some("string") if !value.is_string() => errors.push(format!("{at}: expected a string, got {value}")),
        Some("boolean") if !value.is_boolean() => {
            errors.push(format!("{at}: expected a boolean, got {value}"))
        }
        Some("integer") => {
            let fits = match schema.get("format").and_then(Value::as_str) {
                Some("int32") => value.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
                _ => value.as_i64().is_some(),
            };
            if !fits {
                errors.push(format!("{at}: expected an integer of {schema}, got {value}"));
            }
        }
        _ => {}
    }
}

/// Validates a report body against its CRD's schema, panicking with every error.
fn assert_valid(report: &Value) {
    let file = match report["apiVersion"].as_str() {
        Some("wgpolicyk8s.io/v1alpha2") => "wgpolicyk8s.io_policyreports.schema.yaml",
        Some("openreports.io/v1alpha1") => "openreports.io_reports.schema.yaml",
        other => panic!("a report of unknown apiVersion {other:?}"),
    };
    let crd = crd_schema(file);
    assert_eq!(report["kind"], crd["kind"], "{report}");
    let mut errors = Vec::new();
    validate(&crd["openAPIV3Schema"], report, "", &mut errors);
    // The API server validates metadata itself: a DNS-1123 subdomain name in the namespace.
    let name = report["metadata"]["name"].as_str().unwrap_or("");
    let dns = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !dns {
        errors.push(format!("metadata.name {name:?} is not a DNS-1123 subdomain"));
    }
    assert!(errors.is_empty(), "{file}:\n{}\n{report:#}", errors.join("\n"));
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(o), stderr(o)))
}

/// The audited object `namespace/name` of `kind` in a JSON audit.
fn object<'a>(audit: &'a Value, kind: &str, namespace: &str, name: &str) -> &'a Value {
    audit["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .find(|o| o["kind"] == kind && o["namespace"] == namespace && o["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {namespace}/{name} not audited: {audit:#}"))
}

/// `policy → (result, mode)` of an audited object's findings.
fn findings(object: &Value) -> BTreeMap<String, (String, String)> {
    object["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap_or("").to_owned();
            (text("policy"), (text("result"), text("mode")))
        })
        .collect()
}

fn every_namespace_setup() -> Setup {
    Setup {
        forbidden: vec![("cronjobs", None, "forbidden-cronjobs-cluster-scope.json")],
        report_crds: true,
        stored: vec![fixture("policyreport-stale.json")],
        ..Setup::default()
    }
}

#[test]
fn every_page_of_every_kind_is_judged_as_a_create() {
    let server = FakeApiServer::start(every_namespace_setup());
    let out = server.audit(&["--all-namespaces", "-o", "json", "--chunk-size", "2"]);
    assert_eq!(out.status.code(), Some(1), "violations found: {}", stderr(&out));
    let audit = json_out(&out);

    // Pagination: the Pod listing was followed through its three pages, with the limit asked
    // for, and every Pod of every page was judged exactly once, in listing order.
    let requests = server.take_requests();
    let pod_lists: Vec<&Recorded> = requests.iter().filter(|r| r.path == "/api/v1/pods").collect();
    let tokens: Vec<Option<&str>> = pod_lists
        .iter()
        .map(|r| r.query.get("continue").map(String::as_str))
        .collect();
    assert_eq!(
        tokens,
        [
            None,
            fixture("pods-page-1.json")["metadata"]["continue"].as_str(),
            fixture("pods-page-2.json")["metadata"]["continue"].as_str()
        ]
    );
    assert!(
        pod_lists
            .iter()
            .all(|r| r.query.get("limit").map(String::as_str) == Some("2"))
    );
    let pods: Vec<(&str, &str)> = audit["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["kind"] == "Pod")
        .map(|o| {
            (
                o["namespace"].as_str().unwrap_or(""),
                o["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        pods,
        [
            ("kube-system", "coredns-5d78c9869d-8xk2p"),
            ("ml", "fraud-model-7d9f8b6c5-x2k4q"),
            ("ml", "train-0"),
            ("team-a", "eval-batch-28471230-kq7zt"),
            ("team-a", "notebook-0"),
        ]
    );
    let kinds: BTreeSet<&str> = audit["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter_map(|o| o["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["Pod", "Deployment", "ReplicaSet", "InferenceService"])
    );
    assert_eq!(audit["objects"].as_array().map(Vec::len), Some(9));

    // Discovery asked only for the groups the audit needs: the unavailable metrics API and
    // RBAC were never touched, and the ML CRDs that are not installed are named.
    assert!(
        !requests
            .iter()
            .any(|r| r.path.starts_with("/apis/metrics.k8s.io") || r.path.starts_with("/apis/rbac")),
        "{:?}",
        requests.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    let not_installed: Vec<&str> = audit["not_installed"]
        .as_array()
        .expect("not_installed")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        not_installed,
        [
            "PyTorchJob.kubeflow.org",
            "TFJob.kubeflow.org",
            "MPIJob.kubeflow.org",
            "XGBoostJob.kubeflow.org",
            "JobSet.jobset.x-k8s.io"
        ]
    );
    assert!(requests.iter().any(|r| r.path == "/apis/ray.io/v1/rayclusters"));
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/apis/serving.kserve.io/v1beta1/inferenceservices")
    );

    // A forbidden kind is a line of the audit, with the API server's own message.
    assert_eq!(
        audit["forbidden"],
        json!([{"kind": "CronJob.batch",
                "message": fixture("forbidden-cronjobs-cluster-scope.json")["message"]}])
    );

    // Each object judged as if submitted today: violations in enforce and monitor mode alike.
    let train = object(&audit, "Pod", "ml", "train-0");
    assert_eq!(train["result"], "fail");
    let train_findings = findings(train);
    assert_eq!(train_findings["pinned-images"], ("fail".into(), "enforce".into()));
    assert_eq!(
        train_findings["gpu-node-isolation"],
        ("fail".into(), "monitor".into())
    );
    let severities: BTreeMap<&str, &str> = train["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| Some((f["policy"].as_str()?, f["severity"].as_str()?)))
        .collect();
    assert_eq!(
        severities,
        BTreeMap::from([("gpu-node-isolation", "medium"), ("pinned-images", "high")])
    );
    let deployment = object(&audit, "Deployment", "ml", "fraud-model");
    assert_eq!(deployment["result"], "fail");
    assert_eq!(deployment["apiVersion"], "apps/v1");
    let deployment_findings = findings(deployment);
    for policy in ["pinned-images", "readiness-probe"] {
        assert_eq!(
            deployment_findings[policy],
            ("fail".into(), "enforce".into()),
            "{policy}"
        );
    }
    assert_eq!(deployment_findings["no-plaintext-secrets"].0, "pass");

    // The controller manager's copies are skipped by the validating policies, as when the
    // webhook serves them: the Deployment was judged instead. Its ReplicaSet is not mutated.
    let copy = object(&audit, "Pod", "ml", "fraud-model-7d9f8b6c5-x2k4q");
    let copy_findings = findings(copy);
    assert_eq!(copy_findings["pinned-images"].0, "skip");
    assert_eq!(copy_findings["readiness-probe"].0, "skip");
    assert_eq!(copy["result"], "pass", "{copy:#}");
    let replicaset = object(&audit, "ReplicaSet", "ml", "fraud-model-7d9f8b6c5");
    assert!(
        findings(replicaset).values().all(|(result, _)| result == "skip"),
        "{replicaset:#}"
    );
    // kube-system is excluded by every policy of the default set.
    let coredns = object(&audit, "Pod", "kube-system", "coredns-5d78c9869d-8xk2p");
    assert_eq!(
        (
            coredns["result"].as_str(),
            coredns["findings"].as_array().map(Vec::len)
        ),
        (Some("skip"), Some(0))
    );
    // A CRD's items keep their own apiVersion. The mutating policies run first, as on
    // admission (gpu-tolerations patches the GPU model), then the validating ones judge the result.
    let isvc = object(&audit, "InferenceService", "ml", "recommender");
    assert_eq!(isvc["apiVersion"], "serving.kserve.io/v1beta1");
    let isvc_findings = findings(isvc);
    assert_eq!(
        isvc_findings["gpu-request-limit"],
        ("fail".into(), "enforce".into()),
        "{isvc:#}"
    );
    assert_eq!(isvc_findings["gpu-tolerations"].0, "pass");
    assert_eq!(isvc_findings["pinned-images"].0, "pass");

    // Nothing was written without --write-reports.
    assert!(
        !requests
            .iter()
            .any(|r| r.path.contains("wgpolicyk8s.io") && r.path.contains("policyreports"))
    );

    // The table shows what fails, with the forbidden kind and the summary.
    let table = server.audit(&["--all-namespaces"]);
    assert_eq!(table.status.code(), Some(1));
    let text = stdout(&table);
    assert!(text.contains("fail   Pod ml/train-0\n"), "{text}");
    assert!(
        text.contains("         fail (monitor) gpu-node-isolation: "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "forbidden CronJob.batch in all namespaces: {}",
            fixture("forbidden-cronjobs-cluster-scope.json")["message"]
                .as_str()
                .expect("message")
        )),
        "{text}"
    );
    assert!(
        text.contains("\n9 objects audited: 3 failing, 0 with policy errors, 4 passing, 2 not judged by any policy; 1 listings forbidden\n"),
        "{text}"
    );
    assert!(
        !text.contains("notebook"),
        "passing objects are not listed: {text}"
    );
}

#[test]
fn reports_are_written_valid_and_only_when_they_change() {
    let server = FakeApiServer::start(every_namespace_setup());
    let out = server.audit(&["-A", "-o", "json", "--write-reports"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let audit = json_out(&out);
    let requests = server.take_requests();
    let writes: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.method == Method::POST || r.method == Method::PUT)
        .collect();
    // One report per object with findings (coredns has none), in both formats; the stale one
    // was replaced at the version it was read at.
    let judged = audit["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|o| o["findings"].as_array().is_some_and(|f| !f.is_empty()))
        .count();
    assert_eq!(judged, 8);
    let count = |method: &Method, group: &str| {
        writes
            .iter()
            .filter(|r| r.method == *method && r.path.starts_with(&format!("/apis/{group}/")))
            .count()
    };
    assert_eq!(count(&Method::POST, "wgpolicyk8s.io"), 7);
    assert_eq!(count(&Method::PUT, "wgpolicyk8s.io"), 1);
    assert_eq!(count(&Method::POST, "openreports.io"), 8);
    assert_eq!(count(&Method::PUT, "openreports.io"), 0);
    let put = writes.iter().find(|r| r.method == Method::PUT).expect("a PUT");
    assert_eq!(
        put.path,
        "/apis/wgpolicyk8s.io/v1alpha2/namespaces/ml/policyreports/portcullis-deployment-fraud-model"
    );
    assert_eq!(
        put.body.as_ref().expect("body")["metadata"]["resourceVersion"],
        "4711"
    );
    assert!(
        writes
            .iter()
            .all(|w| w.query.get("fieldManager").map(String::as_str) == Some("portcullis"))
    );

    // Every body is valid against its CRD's schema, with nothing the API server would prune.
    for write in &writes {
        assert_valid(write.body.as_ref().expect("body"));
    }

    // The content: scope, one result per finding, the summary, ownership and the label.
    let report = server
        .stored("wgpolicyk8s.io", "ml", "portcullis-pod-train-0")
        .expect("the report of ml/train-0");
    let train = object(&audit, "Pod", "ml", "train-0");
    assert_eq!(
        report["scope"],
        json!({"apiVersion": "v1", "kind": "Pod", "namespace": "ml", "name": "train-0",
               "uid": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"})
    );
    assert_eq!(
        report["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "train-0",
                "uid": "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"}])
    );
    assert_eq!(
        report["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "portcullis"
    );
    let results: BTreeMap<String, (String, String)> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            assert_eq!(r["source"], "portcullis");
            assert!(
                r["timestamp"]["seconds"]
                    .as_i64()
                    .is_some_and(|s| s > 1_700_000_000)
            );
            let text = |k: &str| r[k].as_str().unwrap_or("").to_owned();
            (
                text("policy"),
                (
                    text("result"),
                    r["properties"]["mode"].as_str().unwrap_or("").to_owned(),
                ),
            )
        })
        .collect();
    assert_eq!(results, findings(train));
    let pinned = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["policy"] == "pinned-images")
        .expect("pinned-images");
    assert_eq!(pinned["severity"], "high");
    assert!(
        pinned["message"].as_str().is_some_and(|m| m.contains(":latest")),
        "{pinned}"
    );
    let fails = results.values().filter(|(r, _)| r == "fail").count();
    let passes = results.values().filter(|(r, _)| r == "pass").count();
    assert_eq!(
        report["summary"],
        json!({"pass": passes, "fail": fails, "warn": 0, "error": 0, "skip": 0})
    );
    assert_eq!(fails, 2);
    let open = server
        .stored("openreports.io", "ml", "portcullis-pod-train-0")
        .expect("the OpenReports Report of ml/train-0");
    assert_eq!(open["source"], "portcullis");
    assert_eq!(
        (open["scope"].clone(), open["results"].as_array().map(Vec::len)),
        (report["scope"].clone(), Some(results.len()))
    );
    let stale = server
        .stored("wgpolicyk8s.io", "ml", "portcullis-deployment-fraud-model")
        .expect("replaced");
    assert_eq!(stale["summary"]["fail"], 2, "{stale:#}");
    assert_eq!(
        stderr(&out)
            .lines()
            .filter(|l| l.starts_with("policyreports") || l.starts_with("reports"))
            .collect::<Vec<_>>(),
        [
            "policyreports.wgpolicyk8s.io/v1alpha2: 7 created, 1 updated, 0 unchanged",
            "reports.openreports.io/v1alpha1: 8 created, 0 updated, 0 unchanged"
        ]
    );

    // A second audit of the unchanged cluster writes nothing.
    let again = server.audit(&["-A", "--write-reports"]);
    assert_eq!(again.status.code(), Some(1));
    let requests = server.take_requests();
    assert!(
        !requests.iter().any(|r| r.method != Method::GET),
        "{:?}",
        requests.iter().map(|r| (&r.method, &r.path)).collect::<Vec<_>>()
    );
    assert!(
        stderr(&again).contains("policyreports.wgpolicyk8s.io/v1alpha2: 0 created, 0 updated, 8 unchanged\n"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn a_forbidden_namespace_is_reported_and_the_others_still_audited() {
    let server = FakeApiServer::start(Setup {
        forbidden: vec![("pods", Some("team-b"), "forbidden-pods-team-b.json")],
        report_crds: true,
        ..Setup::default()
    });
    // team-a alone: nothing fails, exit 0.
    let alone = server.audit(&["-n", "team-a", "-o", "json"]);
    assert_eq!(
        alone.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&alone),
        stderr(&alone)
    );
    let team_a = json_out(&alone);
    assert_eq!(team_a["objects"].as_array().map(Vec::len), Some(3), "{team_a:#}");
    let requests = server.take_requests();
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/api/v1/namespaces/team-a/pods")
    );
    assert!(
        !requests.iter().any(|r| r.path == "/api/v1/pods"),
        "no cluster-wide listing"
    );

    // team-a and the forbidden team-b: team-a is audited all the same, team-b is a line of
    // the audit, and the exit code says the audit is incomplete.
    let both = server.audit(&["-n", "team-a", "-n", "team-b", "-o", "json"]);
    assert_eq!(both.status.code(), Some(1), "{}", stderr(&both));
    let audit = json_out(&both);
    assert_eq!(audit["objects"], team_a["objects"]);
    assert_eq!(
        audit["forbidden"],
        json!([{"kind": "Pod", "namespace": "team-b",
                "message": fixture("forbidden-pods-team-b.json")["message"]}])
    );
    // Without -n, the context's namespace (team-a).
    let default = server.audit(&["-o", "json"]);
    assert_eq!(default.status.code(), Some(0));
    assert_eq!(json_out(&default)["objects"], team_a["objects"]);

    let table = server.audit(&["-n", "team-a", "-n", "team-b"]);
    assert_eq!(table.status.code(), Some(1));
    let text = stdout(&table);
    assert!(
        text.starts_with(
            "forbidden Pod in namespace team-b: pods is forbidden: User \"system:serviceaccount:portcullis:portcullis-audit\" cannot list resource \"pods\" in API group \"\" in the namespace \"team-b\"\n"
        ),
        "{text}"
    );
    assert!(text.contains("3 objects audited: 0 failing"), "{text}");
}

#[test]
fn errors_name_what_failed_and_exit_2() {
    // A listing that fails other than by a 403 stops the audit, naming kind and namespace.
    let server = FakeApiServer::start(Setup {
        broken: Some("deployments"),
        report_crds: true,
        ..Setup::default()
    });
    let out = server.audit(&["-A"]);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(
        text.contains("error: cannot list Deployment.apps in all namespaces\n  caused by: "),
        "{text}"
    );
    assert!(text.contains("etcdserver: request timed out"), "{text}");

    // Usage and configuration errors.
    let out = server.audit(&["-A", "-n", "team-a"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot be used with"), "{}", stderr(&out));
    let out = server.audit(&["-A", "--config", "/nonexistent/policies.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent/policies.yaml"),
        "{}",
        stderr(&out)
    );

    // --write-reports without a report CRD fails before anything is listed.
    let server = FakeApiServer::start(Setup::default());
    let out = server.audit(&["-A", "--write-reports"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(
            "error: --write-reports: the cluster serves neither policyreports.wgpolicyk8s.io/v1alpha2 nor reports.openreports.io/v1alpha1; install one of the CRDs"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!server.take_requests().iter().any(|r| r.path.ends_with("/pods")));

    // An API server nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed = listener.local_addr().expect("address");
    drop(listener);
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: https://{closed}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n"),
    )
    .expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "-A", "--kubeconfig"])
        .arg(&kubeconfig)
        .env(common::CACHE_DIR_ENV, common::artifact_cache_dir())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("error: cannot read the API server's discovery documents"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_schema_check_catches_what_the_api_server_would_refuse_or_prune() {
    let good = json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": "portcullis-pod-p", "namespace": "ml"},
        "results": [{"policy": "p", "result": "fail", "timestamp": {"seconds": 1, "nanos": 0}}]});
    assert_valid(&good);
    let schema = crd_schema("wgpolicyk8s.io_policyreports.schema.yaml");
    let errors = |report: &Value| {
        let mut errors = Vec::new();
        validate(&schema["openAPIV3Schema"], report, "", &mut errors);
        errors
    };
    let mut bad = good.clone();
    bad["results"][0]["result"] = json!("denied");
    bad["results"][0]["timestamp"] = json!({"seconds": 1});
    bad["results"][0]["verdict"] = json!("x");
    bad["summary"] = json!({"fail": "1"});
    assert_eq!(
        errors(&bad),
        [
            ".results[0].result: \"denied\" is not one of [String(\"pass\"), String(\"fail\"), String(\"warn\"), String(\"error\"), String(\"skip\")]",
            ".results[0].timestamp: missing required field nanos",
            ".results[0].verdict: unknown field, the API server would prune it",
            ".summary.fail: expected an integer of {\"type\":\"integer\"}, got \"1\"",
        ]
    );
}
