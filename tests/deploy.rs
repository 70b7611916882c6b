//! `deploy/` as a cluster receives it: every overlay (and the optional audit) rendered by
//! `kubectl kustomize`, every object parsed into its Kubernetes API type with no field left
//! over, and the properties the webhook's safety depends on checked on the rendered objects:
//! fail closed, the routes the server really serves, rules for exactly the kinds the policies
//! see, least privilege, a key the non-root user can read, a grace period longer than the
//! shutdown, flags whose memory bound fits the container's limit, and a ConfigMap that is the
//! built-in policy set. Our own workloads must pass our own default policies, judged by the
//! engine itself (`check::judge`) and by the real server started with the rendered ConfigMap.
//!
//! kubectl is required, not optional: without it every test here fails saying so (scripts/test
//! installs Debian's `kubernetes-client` when it is missing).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, RuleWithOperations, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use portcullis::config::Config;
use portcullis::policy::spec::{PolicyKind, PolicySpec};
use serde::Deserialize as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// The namespace everything of Portcullis lives in, excluded from its own webhooks.
const NAMESPACE: &str = "portcullis";

/// The names the API server dials the Service by, as `portcullis certs` is told in deploy/README.md.
const SERVICE_HOSTS: [&str; 2] = [
    "portcullis.portcullis.svc",
    "portcullis.portcullis.svc.cluster.local",
];

/// One kustomization as `kubectl kustomize` printed it.
struct Rendered {
    /// The directory under `deploy/`, e.g. `overlays/dev`.
    name: String,
    /// Its objects, in output order.
    objects: Vec<Value>,
}

impl Rendered {
    /// Every object of type `T`, parsed.
    fn all<T: k8s_openapi::Resource + DeserializeOwned + Serialize>(&self) -> Vec<T> {
        self.objects
            .iter()
            .filter(|o| o["apiVersion"] == T::API_VERSION && o["kind"] == T::KIND)
            .map(|o| typed(o))
            .collect()
    }

    /// The one object of type `T`.
    fn one<T: k8s_openapi::Resource + DeserializeOwned + Serialize>(&self) -> T {
        let mut all = self.all::<T>();
        assert_eq!(all.len(), 1, "{}: one {} expected", self.name, T::KIND);
        all.remove(0)
    }

    /// The objects of a kind no API type covers (cert-manager's), by `kind`.
    fn custom(&self, api_version: &str, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| o["apiVersion"] == api_version && o["kind"] == kind)
            .collect()
    }
}

/// Every rendering, made once per test process.
struct Renders {
    /// Each directory of `deploy/overlays/`, by name order.
    overlays: Vec<Rendered>,
    /// `deploy/audit`.
    audit: Rendered,
    /// The CA of the certificates the dev overlay was rendered with.
    dev_ca_pem: String,
    /// The copy of `deploy/` they were rendered from.
    _dir: tempfile::TempDir,
}

fn renders() -> &'static Renders {
    static RENDERS: OnceLock<Renders> = OnceLock::new();
    RENDERS.get_or_init(|| {
        // A copy, so the certificates the dev overlay needs are made for the test alone and an
        // operator's own deploy/overlays/dev/certs is neither read nor overwritten.
        let dir = tempfile::tempdir().expect("temp dir");
        let deploy = dir.path().join("deploy");
        copy_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"), &deploy);
        let hosts: Vec<String> = SERVICE_HOSTS.map(str::to_owned).to_vec();
        let bundle = portcullis::certs::generate(&hosts).expect("certificates");
        bundle
            .write(&deploy.join("overlays/dev/certs"))
            .expect("write the dev overlay's certificates");
        let mut names: Vec<String> = std::fs::read_dir(deploy.join("overlays"))
            .expect("deploy/overlays")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let overlays = names
            .iter()
            .map(|name| kustomize(&deploy, &format!("overlays/{name}")))
            .collect();
        Renders {
            overlays,
            audit: kustomize(&deploy, "audit"),
            dev_ca_pem: bundle.ca_pem,
            _dir: dir,
        }
    })
}

/// The overlay `name`.
fn overlay(name: &str) -> &'static Rendered {
    renders()
        .overlays
        .iter()
        .find(|r| r.name == format!("overlays/{name}"))
        .unwrap_or_else(|| panic!("no overlay {name}"))
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            // An operator's own certificates stay where they are.
            if entry.path().ends_with("overlays/dev/certs") {
                continue;
            }
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// `kubectl kustomize <deploy>/<name>`, each document as JSON with its base64 normalised.
fn kustomize(deploy: &Path, name: &str) -> Rendered {
    let dir = deploy.join(name);
    let output = match std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl is not installed, and tests/deploy.rs renders deploy/ with `kubectl kustomize`: \
             install it (Debian: `apt-get install kubernetes-client`, as scripts/test does)"
        ),
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize deploy/{name} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 output");
    let objects = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("deploy/{name}: {e}")))
        .filter(|v| !v.is_null())
        .map(normalise_base64)
        .collect();
    Rendered {
        name: name.to_owned(),
        objects,
    }
}

/// kustomize v5 folds long base64 values (Secret data, caBundle) into lines; the API server
/// decodes `[]byte` fields with Go's encoding/base64, which ignores `\r` and `\n`
/// (src/encoding/base64/base64.go, `Decode`), so the folded form is what a cluster accepts.
/// The Rust API types decode strict base64: drop those characters as Go does.
fn normalise_base64(mut object: Value) -> Value {
    let strip = |v: &mut Value| {
        if let Some(s) = v.as_str() {
            *v = Value::String(s.replace(['\n', '\r'], ""));
        }
    };
    if object["kind"] == "Secret"
        && let Some(data) = object.get_mut("data").and_then(Value::as_object_mut)
    {
        data.values_mut().for_each(strip);
    }
    if let Some(hooks) = object.get_mut("webhooks").and_then(Value::as_array_mut) {
        for hook in hooks {
            if let Some(bundle) = hook.pointer_mut("/clientConfig/caBundle") {
                strip(bundle);
            }
        }
    }
    object
}

/// `object` as the API type `T`, which must hold every field written: serialising it back gives
/// the same JSON, so a misspelt or misplaced field (which the API server would reject or, worse,
/// drop) fails here.
fn typed<T: DeserializeOwned + Serialize>(object: &Value) -> T {
    let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
    let parsed: T = serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&parsed).expect("serialise");
    let mut lost = Vec::new();
    differences(object, &back, "", &mut lost);
    assert!(
        lost.is_empty(),
        "{what}: the API type does not hold {lost:?} as written"
    );
    parsed
}

/// JSON pointers where `written` has something `kept` does not hold the same way.
fn differences(written: &Value, kept: &Value, at: &str, out: &mut Vec<String>) {
    match (written, kept) {
        (Value::Object(w), Value::Object(k)) => {
            for (key, value) in w {
                let here = format!("{at}/{key}");
                match k.get(key) {
                    Some(other) => differences(value, other, &here, out),
                    None => out.push(here),
                }
            }
        }
        (Value::Array(w), Value::Array(k)) if w.len() == k.len() => {
            for (i, (a, b)) in w.iter().zip(k).enumerate() {
                differences(a, b, &format!("{at}/{i}"), out);
            }
        }
        (a, b) if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

/// Checks that `object` is a `T` holding every field written ([`typed`]).
fn drop_typed<T: DeserializeOwned + Serialize>(object: &Value) {
    typed::<T>(object);
}

/// The pod spec of the server's Deployment in `rendered`.
fn server_pod(rendered: &Rendered) -> PodSpec {
    rendered.one::<Deployment>().spec.template.spec.expect("pod spec")
}

/// The container's `--flag=value`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().find_map(|a| a.strip_prefix(&format!("--{name}=")))
}

/// The policy configuration in the rendered ConfigMap, loaded as the server loads its --config,
/// from a directory with no module in it.
fn deployed_config(rendered: &Rendered) -> Config {
    let map: ConfigMap = rendered.one();
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get("policies.yaml"))
        .expect("policies.yaml in the ConfigMap");
    let empty = tempfile::tempdir().expect("temp dir");
    Config::from_yaml(
        text,
        "ConfigMap portcullis-policies",
        &portcullis::config::ModuleStore::Dir(empty.path().to_path_buf()),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", rendered.name))
}

#[test]
fn every_rendered_object_is_a_known_api_type_in_the_webhooks_own_namespace() {
    let r = renders();
    let names: Vec<&str> = r.overlays.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        ["overlays/cert-manager", "overlays/dev", "overlays/monitor"]
    );
    for rendered in r.overlays.iter().chain([&r.audit]) {
        for object in &rendered.objects {
            let api_version = object["apiVersion"].as_str().expect("apiVersion");
            let kind = object["kind"].as_str().expect("kind");
            match (api_version, kind) {
                ("v1", "Namespace") => drop_typed::<Namespace>(object),
                ("v1", "ServiceAccount") => drop_typed::<ServiceAccount>(object),
                ("v1", "ConfigMap") => drop_typed::<ConfigMap>(object),
                ("v1", "Secret") => drop_typed::<Secret>(object),
                ("v1", "Service") => drop_typed::<Service>(object),
                ("apps/v1", "Deployment") => drop_typed::<Deployment>(object),
                ("batch/v1", "CronJob") => drop_typed::<CronJob>(object),
                ("policy/v1", "PodDisruptionBudget") => drop_typed::<PodDisruptionBudget>(object),
                ("networking.k8s.io/v1", "NetworkPolicy") => drop_typed::<NetworkPolicy>(object),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => drop_typed::<ClusterRole>(object),
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    drop_typed::<ClusterRoleBinding>(object);
                }
                ("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration") => {
                    drop_typed::<ValidatingWebhookConfiguration>(object);
                }
                ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") => {
                    drop_typed::<MutatingWebhookConfiguration>(object);
                }
                // Checked field by field in the cert-manager test.
                ("cert-manager.io/v1", "Issuer" | "Certificate") => {}
                other => panic!("{}: no API type for {other:?}", rendered.name),
            }
            let cluster_scoped = matches!(
                kind,
                "Namespace"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "ValidatingWebhookConfiguration"
                    | "MutatingWebhookConfiguration"
            );
            // Only the webhook configurations carry the label an install leaves out of its first
            // step (`-l app.kubernetes.io/component!=webhook`, deploy/README.md).
            let component = object
                .pointer("/metadata/labels/app.kubernetes.io~1component")
                .and_then(Value::as_str);
            assert_eq!(
                component == Some("webhook"),
                kind.ends_with("WebhookConfiguration"),
                "{}: {kind}",
                rendered.name
            );
            let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
            if cluster_scoped {
                assert_eq!(namespace, None, "{}: {kind}", rendered.name);
            } else {
                assert_eq!(namespace, Some(NAMESPACE), "{}: {kind}", rendered.name);
            }
        }
    }
    for rendered in &r.overlays {
        let namespace: Namespace = rendered.one();
        assert_eq!(namespace.metadata.name.as_deref(), Some(NAMESPACE));
        // The restricted Pod Security level: the server needs no privilege, so the namespace
        // admits none.
        let labels = namespace.metadata.labels.expect("labels");
        assert_eq!(
            labels
                .get("pod-security.kubernetes.io/enforce")
                .map(String::as_str),
            Some("restricted")
        );
    }
}

/// The fields both webhook types share, out of `$hook` (a `ValidatingWebhook` or a
/// `MutatingWebhook`: two types with the same field names).
macro_rules! webhook_fields {
    ($hook:expr, $kind:expr, $annotations:expr) => {{
        let hook = $hook;
        WebhookFields {
            kind: $kind,
            annotations: $annotations,
            failure_policy: hook.failure_policy,
            side_effects: hook.side_effects,
            versions: hook.admission_review_versions,
            timeout: hook.timeout_seconds,
            match_policy: hook.match_policy,
            client: hook.client_config,
            excluded: excluded_namespaces(hook.namespace_selector.as_ref()),
            rules: hook.rules.unwrap_or_default(),
        }
    }};
}

/// Every webhook of both configurations in `rendered`, as (route, reinvocation, common fields).
fn webhooks(rendered: &Rendered) -> Vec<(String, Option<String>, WebhookFields)> {
    let validating: ValidatingWebhookConfiguration = rendered.one();
    let mutating: MutatingWebhookConfiguration = rendered.one();
    let mut all = Vec::new();
    for hook in validating.webhooks.into_iter().flatten() {
        let fields = webhook_fields!(
            hook,
            PolicyKind::Validating,
            validating.metadata.annotations.clone()
        );
        all.push(("/validate".to_owned(), None, fields));
    }
    for hook in mutating.webhooks.into_iter().flatten() {
        let reinvocation = hook.reinvocation_policy.clone();
        let fields = webhook_fields!(hook, PolicyKind::Mutating, mutating.metadata.annotations.clone());
        all.push(("/mutate".to_owned(), reinvocation, fields));
    }
    all
}

/// The fields validating and mutating webhooks share.
struct WebhookFields {
    kind: PolicyKind,
    annotations: Option<std::collections::BTreeMap<String, String>>,
    failure_policy: Option<String>,
    side_effects: String,
    versions: Vec<String>,
    timeout: Option<i32>,
    match_policy: Option<String>,
    client: WebhookClientConfig,
    excluded: Vec<String>,
    rules: Vec<RuleWithOperations>,
}

/// The namespaces a selector keeps out by `kubernetes.io/metadata.name NotIn`, its only term.
fn excluded_namespaces(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
) -> Vec<String> {
    let selector = selector.expect("namespaceSelector");
    assert!(selector.match_labels.is_none());
    let expressions = selector.match_expressions.as_ref().expect("matchExpressions");
    assert_eq!(expressions.len(), 1);
    // The API server labels every namespace with its name (kubernetes.io/metadata.name, the
    // NamespaceDefaultLabelName feature, GA in 1.22), so this selects by name.
    assert_eq!(expressions[0].key, "kubernetes.io/metadata.name");
    assert_eq!(expressions[0].operator, "NotIn");
    expressions[0].values.clone().expect("values")
}

#[test]
fn webhooks_fail_closed_and_call_the_served_routes() {
    for rendered in &renders().overlays {
        let hooks = webhooks(rendered);
        let routes: Vec<&str> = hooks.iter().map(|(route, ..)| route.as_str()).collect();
        assert_eq!(routes, ["/validate", "/mutate"], "{}", rendered.name);
        let service: Service = rendered.one();
        let ports = service.spec.and_then(|s| s.ports).expect("ports");
        let config = deployed_config(rendered);
        for (route, reinvocation, hook) in hooks {
            let at = format!("{} {route}", rendered.name);
            assert_eq!(
                hook.failure_policy.as_deref(),
                Some("Fail"),
                "{at} must fail closed"
            );
            assert_eq!(hook.side_effects, "None", "{at}");
            assert_eq!(hook.versions, ["v1"], "{at}");
            assert_eq!(hook.match_policy.as_deref(), Some("Equivalent"), "{at}");
            match hook.kind {
                // A later mutating webhook may change what ours defaulted: run ours again.
                PolicyKind::Mutating => assert_eq!(reinvocation.as_deref(), Some("IfNeeded"), "{at}"),
                PolicyKind::Validating => assert_eq!(reinvocation, None),
            }
            // 1 to 30 s (pkg/apis/admissionregistration/validation/validation.go,
            // validateWebhookTimeout), and room for every policy of the route to run to its own
            // deadline one after the other.
            let timeout = hook.timeout.expect("timeoutSeconds");
            assert!((1..=30).contains(&timeout), "{at}: {timeout}");
            let worst: u128 = config
                .policies
                .iter()
                .filter(|p| p.kind == hook.kind)
                .map(|p| p.timeout.duration().as_millis())
                .sum();
            assert!(
                worst < u128::from(timeout.unsigned_abs()) * 1000,
                "{at}: {worst} ms of policy deadlines in a {timeout} s webhook timeout"
            );
            // Never its own namespace (a broken rollout stays repairable) nor kube-system.
            assert_eq!(hook.excluded, ["kube-system", NAMESPACE], "{at}");
            let svc = hook.client.service.as_ref().expect("service");
            assert_eq!(
                (svc.name.as_str(), svc.namespace.as_str()),
                (
                    service.metadata.name.as_deref().expect("name"),
                    service.metadata.namespace.as_deref().expect("namespace")
                ),
                "{at}"
            );
            assert_eq!(svc.path.as_deref(), Some(route.as_str()), "{at}");
            let port = svc.port.expect("port");
            assert!(ports.iter().any(|p| p.port == port), "{at}: port {port}");
            assert!(hook.client.url.is_none(), "{at}");
        }
    }
}

#[test]
fn the_dev_overlay_carries_what_portcullis_certs_wrote() {
    let dev = overlay("dev");
    let secret: Secret = dev.one();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.expect("data");
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let ca_pem = renders().dev_ca_pem.as_bytes();
    assert_eq!(data["ca.crt"].0, ca_pem);
    // The Deployment mounts this Secret, under its generated (hash-suffixed) name.
    let tls = server_pod(dev)
        .volumes
        .into_iter()
        .flatten()
        .find(|v| v.name == "tls")
        .and_then(|v| v.secret)
        .expect("the tls Secret volume");
    assert_eq!(tls.secret_name, secret.metadata.name);
    // Each webhook trusts exactly that CA (kustomize vars copied it).
    for (route, _, hook) in webhooks(dev) {
        let bundle = hook.client.ca_bundle.expect("caBundle");
        assert_eq!(bundle.0, ca_pem, "{route}");
        assert!(hook.annotations.is_none(), "{route}");
    }
}

#[test]
fn the_cert_manager_overlay_issues_and_injects_the_serving_certificate() {
    let cm = overlay("cert-manager");
    assert!(cm.all::<Secret>().is_empty(), "cert-manager writes the Secret");
    let issuers = cm.custom("cert-manager.io/v1", "Issuer");
    let certificates = cm.custom("cert-manager.io/v1", "Certificate");
    let named = |list: &[&Value], name: &str| -> Value {
        (*list
            .iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {name}")))
        .clone()
    };
    let tls = server_pod(cm)
        .volumes
        .into_iter()
        .flatten()
        .find(|v| v.name == "tls")
        .and_then(|v| v.secret)
        .and_then(|s| s.secret_name)
        .expect("the tls Secret volume");
    // The serving certificate: the Service's names, in the Secret the Deployment mounts.
    let serving: Vec<&Value> = certificates
        .iter()
        .copied()
        .filter(|c| c["spec"]["secretName"] == tls.as_str())
        .collect();
    assert_eq!(serving.len(), 1, "one Certificate writes {tls}");
    let serving = serving[0].clone();
    assert_eq!(serving["spec"]["dnsNames"], serde_json::json!(SERVICE_HOSTS));
    assert_eq!(serving["spec"]["isCA"], Value::Null);
    // The server reads PKCS#8 and SEC1 keys; cert-manager's default encoding is PKCS#1.
    assert_eq!(serving["spec"]["privateKey"]["encoding"], "PKCS8");
    assert_eq!(serving["spec"]["privateKey"]["rotationPolicy"], "Always");
    assert_eq!(
        serving["spec"]["usages"],
        serde_json::json!(["server auth", "digital signature"])
    );
    let renew = |field: &str| -> u64 {
        let text = serving["spec"][field].as_str().expect(field);
        text.strip_suffix('h')
            .and_then(|h| h.parse().ok())
            .expect("hours")
    };
    assert!(renew("renewBefore") < renew("duration"));
    // Its issuer signs with a CA whose certificate a self-signed issuer made.
    let issuer_ref = &serving["spec"]["issuerRef"];
    assert_eq!(
        (issuer_ref["kind"].as_str(), issuer_ref["group"].as_str()),
        (Some("Issuer"), Some("cert-manager.io"))
    );
    let ca_issuer = named(&issuers, issuer_ref["name"].as_str().expect("issuer name"));
    let ca_secret = ca_issuer["spec"]["ca"]["secretName"]
        .as_str()
        .expect("a CA issuer");
    let ca: Vec<&Value> = certificates
        .iter()
        .copied()
        .filter(|c| c["spec"]["secretName"] == ca_secret)
        .collect();
    assert_eq!(ca.len(), 1);
    assert_eq!(ca[0]["spec"]["isCA"], true);
    let root = named(
        &issuers,
        ca[0]["spec"]["issuerRef"]["name"].as_str().expect("name"),
    );
    assert_eq!(root["spec"]["selfSigned"], serde_json::json!({}));
    for object in issuers.iter().chain(&certificates) {
        assert_eq!(object["metadata"]["namespace"], NAMESPACE);
    }
    // The cainjector fills both caBundles from the serving certificate's Secret.
    let source = format!(
        "{NAMESPACE}/{}",
        serving["metadata"]["name"].as_str().expect("name")
    );
    for (route, _, hook) in webhooks(cm) {
        let annotations = hook.annotations.expect("annotations");
        assert_eq!(
            annotations.get("cert-manager.io/inject-ca-from"),
            Some(&source),
            "{route}"
        );
        assert!(hook.client.ca_bundle.is_none(), "{route}: left to the cainjector");
    }
}

/// `(group, resource)` of each kind the policies of `config` of `kind` see, and the subresources
/// they see.
fn seen_by(config: &Config, kind: PolicyKind) -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut resources = BTreeSet::new();
    let mut subresources = BTreeSet::new();
    for policy in config.policies.iter().filter(|p| p.kind == kind) {
        assert!(
            !policy.matcher.kinds.is_empty(),
            "{}: a policy of every kind needs a rule for every resource",
            policy.name.as_str()
        );
        for object_kind in &policy.matcher.kinds {
            let group = portcullis::audit::kinds::WORKLOADS
                .iter()
                .find(|(_, kinds)| kinds.contains(&object_kind.as_str()))
                .map(|(group, _)| *group)
                .unwrap_or_else(|| panic!("no API group known for {object_kind}"));
            resources.insert((
                group.to_owned(),
                portcullis::review::synthetic::resource_name(object_kind),
            ));
        }
        subresources.extend(policy.matcher.subresources.iter().cloned());
    }
    (resources, subresources)
}

#[test]
fn webhook_rules_send_exactly_what_the_policies_see() {
    for rendered in &renders().overlays {
        let config = deployed_config(rendered);
        for (route, _, hook) in webhooks(rendered) {
            let at = format!("{} {route}", rendered.name);
            let (expected, expected_subresources) = seen_by(&config, hook.kind);
            let operations: BTreeSet<String> = config
                .policies
                .iter()
                .filter(|p| p.kind == hook.kind)
                .flat_map(|p| {
                    p.matcher
                        .operations
                        .iter()
                        .map(|o| format!("{o:?}").to_uppercase())
                })
                .collect();
            let mut sent = BTreeSet::new();
            let mut sent_subresources = BTreeSet::new();
            for rule in &hook.rules {
                assert_eq!(rule.api_versions.as_deref(), Some(&["*".to_owned()][..]), "{at}");
                assert_eq!(rule.scope.as_deref(), Some("*"), "{at}");
                let ops: BTreeSet<String> = rule.operations.iter().flatten().cloned().collect();
                assert_eq!(ops, operations, "{at}");
                for group in rule.api_groups.iter().flatten() {
                    for resource in rule.resources.iter().flatten() {
                        match resource.split_once('/') {
                            // `kubectl debug` adds containers only through
                            // pods/ephemeralcontainers; a rule for `pods` alone never sends it
                            // (webhook/predicates/rules/rules.go matches `resource/subresource`).
                            Some((main, sub)) => {
                                assert!(
                                    expected.contains(&(group.clone(), main.to_owned())),
                                    "{at}: {resource} of a kind no policy sees"
                                );
                                sent_subresources.insert(sub.to_owned());
                            }
                            None => {
                                sent.insert((group.clone(), resource.clone()));
                            }
                        }
                    }
                }
            }
            assert_eq!(sent, expected, "{at}: resources");
            assert_eq!(sent_subresources, expected_subresources, "{at}: subresources");
        }
        // The validating webhook sends `kubectl debug`; no mutating policy asks for it.
        let (_, validating_subresources) = seen_by(&config, PolicyKind::Validating);
        assert_eq!(
            validating_subresources.into_iter().collect::<Vec<_>>(),
            ["ephemeralcontainers"]
        );
    }
}

/// What makes a policy what it is, for comparing two configurations.
fn identity(spec: &PolicySpec) -> String {
    format!(
        "{} {} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {}",
        spec.name.as_str(),
        spec.module.origin,
        spec.kind,
        spec.mode,
        spec.failure,
        spec.existing_violations,
        spec.timeout,
        spec.memory,
        spec.matcher,
        spec.settings.json()
    )
}

#[test]
fn the_configmap_is_the_builtin_policy_set_and_the_server_reads_it() {
    let builtin = Config::builtin().expect("built-in set");
    let engine =
        portcullis::engine::Engine::new(portcullis::engine::EngineOptions::default()).expect("engine");
    for rendered in &renders().overlays {
        let deployed = deployed_config(rendered);
        let ours: Vec<String> = deployed.policies.iter().map(identity).collect();
        let theirs: Vec<String> = builtin.policies.iter().map(identity).collect();
        assert_eq!(ours, theirs, "{}", rendered.name);
        for (a, b) in deployed.policies.iter().zip(&builtin.policies) {
            assert_eq!(a.module.bytes, b.module.bytes);
        }
        // Every policy accepts its settings: the set loads as the server would load it.
        let set = portcullis::policy::PolicySet::load(&engine, &deployed.origin, &deployed.policies)
            .expect("the ConfigMap's policy set loads");
        assert_eq!(set.len(), builtin.policies.len());
        let map: ConfigMap = rendered.one();
        let pod = server_pod(rendered);
        assert_config_mounted(&pod, &map, &rendered.name);
    }
    let cronjob: CronJob = renders().audit.one();
    let pod = cronjob
        .spec
        .job_template
        .spec
        .and_then(|j| j.template.spec)
        .expect("pod spec");
    // The audit mounts the ConfigMap the base makes, by its fixed name.
    assert_config_mounted(&pod, &overlay("dev").one(), "audit");
}

/// The pod's container reads `--config` from the mounted `map`.
fn assert_config_mounted(pod: &PodSpec, map: &ConfigMap, at: &str) {
    let container = &pod.containers[0];
    let args = container.args.as_deref().expect("args");
    let path = Path::new(flag(args, "config").unwrap_or_else(|| panic!("{at}: --config")));
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.config_map.as_ref().map(|c| &c.name) == map.metadata.name.as_ref())
        .unwrap_or_else(|| panic!("{at}: no volume of the ConfigMap"));
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == volume.name)
        .unwrap_or_else(|| panic!("{at}: the ConfigMap is not mounted"));
    assert_eq!(mount.read_only, Some(true), "{at}");
    // A subPath mount never sees the ConfigMap change; the directory does.
    assert_eq!(mount.sub_path, None, "{at}");
    assert_eq!(path.parent(), Some(Path::new(&mount.mount_path)), "{at}");
    let key = path.file_name().and_then(|n| n.to_str()).expect("file name");
    assert!(
        map.data.as_ref().is_some_and(|d| d.contains_key(key)),
        "{at}: {key}"
    );
}

#[test]
fn our_workloads_pass_our_own_default_policies() {
    let (_engine, set, _) =
        portcullis::app::load_policies(None, false, Default::default()).expect("the built-in policy set");
    let builtin = Config::builtin().expect("built-in set");
    let r = renders();
    let mut judged = 0;
    for rendered in r.overlays.iter().chain([&r.audit]) {
        for object in &rendered.objects {
            let kind = object["kind"].as_str().expect("kind");
            let is_workload = portcullis::audit::kinds::WORKLOADS
                .iter()
                .any(|(_, kinds)| kinds.contains(&kind));
            if !is_workload {
                continue;
            }
            let at = format!("{}: {kind}", rendered.name);
            let judgement = portcullis::check::judge(
                &set,
                object,
                NAMESPACE,
                "deploy-test",
                portcullis::review::synthetic::Submitter::User,
            )
            .unwrap_or_else(|e| panic!("{at}: {e}"));
            // Every policy that sees the kind ran (none skipped our own namespace) and accepted it
            // as it is: nothing denied, nothing to warn about, nothing to default.
            let ran: Vec<&str> = judgement.runs().map(|run| run.name.as_str()).collect();
            let mut expected: Vec<&str> = builtin
                .policies
                .iter()
                .filter(|p| p.matcher.kinds.iter().any(|k| k == kind))
                .map(|p| p.name.as_str())
                .collect();
            let mut ran_sorted = ran.clone();
            ran_sorted.sort_unstable();
            expected.sort_unstable();
            assert!(!expected.is_empty(), "{at}: no policy sees it");
            assert_eq!(ran_sorted, expected, "{at}");
            for run in judgement.runs() {
                assert_eq!(
                    run.verdict,
                    portcullis::policy::verdict::Label::Accepted,
                    "{at}: {} said {:?}",
                    run.name,
                    run.message
                );
            }
            assert!(judgement.patched.is_none(), "{at}: {:?}", judgement.patched);
            let warnings = judgement.warnings();
            assert!(warnings.is_empty(), "{at}: {warnings:?}");
            judged += 1;
        }
    }
    // A Deployment per overlay and the audit's CronJob.
    assert_eq!(judged, r.overlays.len() + 1);
}

/// The server started with the rendered ConfigMap answers the Deployment's probes and both
/// webhooks' paths, and admits the rendered Deployment unchanged.
#[tokio::test]
async fn the_server_runs_with_the_rendered_configuration_and_admits_itself() {
    let dev = overlay("dev");
    let map: ConfigMap = dev.one();
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get("policies.yaml"))
        .expect("config");
    let server = common::TestServer::start(text, &[]).await;
    let pod = server_pod(dev);
    let container = &pod.containers[0];
    for (probe, kind) in [
        (&container.readiness_probe, "readiness"),
        (&container.liveness_probe, "liveness"),
    ] {
        let http = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("a {kind} httpGet probe"));
        assert_eq!(http.scheme.as_deref(), Some("HTTPS"), "{kind}");
        assert_eq!(http.port, IntOrString::String("https".into()), "{kind}");
        let path = http.path.as_deref().expect("path");
        let reply = server.h1().await.get(path).await;
        assert_eq!(reply.status, hyper::StatusCode::OK, "{kind} probe {path}");
    }
    let deployment = dev
        .objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment")
        .clone();
    let review = common::review("Deployment", deployment, "CREATE", NAMESPACE, "self", false);
    for (route, ..) in webhooks(dev) {
        let response = server.review(&route, &review).await;
        assert_eq!(response["allowed"], true, "{route}: {response}");
        assert_eq!(response.get("patch"), None, "{route}: {response}");
        assert_eq!(response.get("warnings"), None, "{route}: {response}");
    }
    server.shutdown().await;
}

#[test]
fn the_server_runs_with_least_privilege_and_stays_available() {
    for rendered in &renders().overlays {
        let at = rendered.name.as_str();
        let deployment: Deployment = rendered.one();
        let spec = &deployment.spec;
        assert!(spec.replicas.expect("replicas") >= 2, "{at}");
        let rolling = spec
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .expect("rollingUpdate");
        // A rollout starts a new pod before stopping an old one.
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)), "{at}");
        let labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .expect("pod labels");
        assert_eq!(spec.selector.match_labels.as_ref(), Some(&labels), "{at}");
        let pod = spec.template.spec.as_ref().expect("pod spec");
        // Replicas spread over nodes where there are several.
        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())
            .expect("preferred pod anti-affinity");
        let term = &anti[0].pod_affinity_term;
        assert_eq!(term.topology_key, "kubernetes.io/hostname", "{at}");
        assert_eq!(
            term.label_selector.as_ref().and_then(|s| s.match_labels.as_ref()),
            Some(&labels),
            "{at}"
        );
        let budget: PodDisruptionBudget = rendered.one();
        let budget = budget.spec.expect("spec");
        assert_eq!(budget.min_available, Some(IntOrString::Int(1)), "{at}");
        assert_eq!(
            budget.selector.and_then(|s| s.match_labels),
            Some(labels.clone()),
            "{at}"
        );

        assert_eq!(pod.automount_service_account_token, Some(false), "{at}");
        let account: ServiceAccount = rendered.one();
        assert_eq!(account.automount_service_account_token, Some(false), "{at}");
        assert_eq!(pod.service_account_name, account.metadata.name, "{at}");
        let pod_security = pod.security_context.as_ref().expect("pod securityContext");
        assert_eq!(pod_security.run_as_non_root, Some(true), "{at}");
        assert_eq!(
            pod_security.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{at}"
        );
        let container = &pod.containers[0];
        let security = container
            .security_context
            .as_ref()
            .expect("container securityContext");
        assert_eq!(security.allow_privilege_escalation, Some(false), "{at}");
        assert_eq!(security.read_only_root_filesystem, Some(true), "{at}");
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()]),
            "{at}"
        );
        let resources = container.resources.as_ref().expect("resources");
        for key in ["cpu", "memory"] {
            assert!(
                resources.requests.as_ref().is_some_and(|r| r.contains_key(key)),
                "{at}: {key} request"
            );
        }
        assert!(
            resources
                .limits
                .as_ref()
                .is_some_and(|l| l.contains_key("memory")),
            "{at}: memory limit"
        );

        let args = container.args.as_ref().expect("args");
        assert_eq!(args[0], "serve");
        // Enforcing, but where a rollout starts in monitor mode on purpose.
        assert_eq!(
            args.iter().any(|a| a == "--dry-run"),
            at == "overlays/monitor",
            "{at}"
        );
        // The pod must outlive the shutdown delay and the drain, or SIGKILL cuts reviews short.
        let seconds = |name: &str| -> i64 {
            flag(args, name)
                .unwrap_or_else(|| panic!("--{name}"))
                .parse()
                .expect("a number")
        };
        let (delay, drain) = (seconds("shutdown-delay-secs"), seconds("drain-timeout-secs"));
        assert!(delay > 0, "endpoints need time to drop the pod");
        assert!(pod.termination_grace_period_seconds.expect("grace period") > delay + drain);

        // Ports: HTTPS for the API server, plain-HTTP metrics; the Service sends 443 to HTTPS,
        // and the NetworkPolicy lets exactly these in and nothing out.
        let ports: Vec<(Option<&str>, i32)> = container
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect();
        assert_eq!(ports, [(Some("https"), 8443), (Some("metrics"), 9090)], "{at}");
        let annotations = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .expect("pod annotations");
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "9090");
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        let service: Service = rendered.one();
        let service = service.spec.expect("spec");
        assert_eq!(service.selector.as_ref(), Some(&labels), "{at}");
        let https = &service.ports.as_ref().expect("ports")[0];
        assert_eq!(
            (https.port, https.target_port.clone()),
            (443, Some(IntOrString::String("https".into()))),
            "{at}"
        );
        let policy: NetworkPolicy = rendered.one();
        let policy = policy.spec.expect("spec");
        assert_eq!(
            policy.pod_selector.as_ref().and_then(|s| s.match_labels.as_ref()),
            Some(&labels),
            "{at}"
        );
        assert_eq!(
            policy.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
        assert!(policy.egress.is_none(), "{at}: nothing out");
        let open = numbered(policy.ingress.iter().flatten().map(|rule| &rule.ports));
        assert_eq!(open, [8443, 9090], "{at}");
    }
}

/// The numeric ports of a NetworkPolicy's rules, in order.
fn numbered<'a>(
    ports: impl Iterator<Item = &'a Option<Vec<k8s_openapi::api::networking::v1::NetworkPolicyPort>>>,
) -> Vec<i32> {
    ports
        .flatten()
        .flatten()
        .filter_map(|p| match p.port {
            Some(IntOrString::Int(n)) => Some(n),
            _ => None,
        })
        .collect()
}

#[test]
fn the_non_root_container_can_read_its_key() {
    for rendered in &renders().overlays {
        let at = rendered.name.as_str();
        let pod = server_pod(rendered);
        let security = pod.security_context.as_ref().expect("pod securityContext");
        // The kubelet gives a Secret volume's files the pod's fsGroup and ORs 0440 into their
        // mode (SetVolumeOwnership in pkg/volume/volume_linux.go); without an fsGroup they stay
        // root's, mode defaultMode, and a 0400 key is unreadable to user 65532.
        assert_eq!(security.run_as_user, Some(65532), "{at}");
        assert_eq!(
            security.fs_group, security.run_as_group,
            "the key's group is the user's group"
        );
        assert_eq!(security.fs_group, Some(65532), "{at}");
        let tls = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "tls")
            .and_then(|v| v.secret.as_ref())
            .expect("the tls Secret volume");
        let mode = tls.default_mode.expect("defaultMode");
        assert_eq!(mode, 0o440, "owner and group read, nothing else");
        let mount = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "tls")
            .expect("tls mount");
        assert_eq!(mount.read_only, Some(true), "{at}");
        let args = pod.containers[0].args.as_ref().expect("args");
        assert_eq!(
            flag(args, "key"),
            Some(format!("{}/tls.key", mount.mount_path).as_str())
        );
        assert_eq!(
            flag(args, "cert"),
            Some(format!("{}/tls.crt", mount.mount_path).as_str())
        );
    }
    // YAML 1.1 (what kubectl reads) takes `0440` as octal, YAML 1.2 as decimal 440: only a
    // decimal without a leading zero means the same to both.
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/deployment.yaml"))
            .expect("read manifest");
    let written: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("defaultMode:"))
        .map(|v| v.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(written, ["288"]);
}

/// The Dockerfile is never built here (no container engine), so what the Deployment relies on is
/// read from it: bases pinned by digest, the pod's user, the container's ports.
#[test]
fn the_image_runs_as_the_pods_user_from_pinned_bases() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"))
        .expect("read Dockerfile");
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let bases: Vec<&str> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(bases.len(), 2, "a build stage and a runtime stage: {bases:?}");
    for base in &bases {
        let image = base.split_whitespace().next().expect("image");
        let digest = image.split_once("@sha256:").map(|(_, d)| d).unwrap_or("");
        assert!(
            digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
            "{image} is not pinned by digest"
        );
    }
    let pod = server_pod(overlay("dev"));
    let security = pod.security_context.as_ref().expect("pod securityContext");
    let user = format!(
        "USER {}:{}",
        security.run_as_user.expect("runAsUser"),
        security.run_as_group.expect("runAsGroup")
    );
    let last_stage = instructions
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a stage");
    assert!(instructions[last_stage..].contains(&user.as_str()), "{user}");
    let exposed: Vec<i32> = instructions
        .iter()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .map(|p| p.parse().expect("a port"))
        .collect();
    let ports: Vec<i32> = pod.containers[0]
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(exposed, ports);
}

/// `1Gi`, `768Mi` and the like, in MiB.
fn mib(quantity: &str) -> u64 {
    let (number, unit) = quantity.split_at(
        quantity
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(quantity.len()),
    );
    let n: u64 = number.parse().expect("a number");
    match unit {
        "Gi" => n * 1024,
        "Mi" => n,
        other => panic!("unexpected unit {other:?} in {quantity}"),
    }
}

#[test]
fn the_flags_memory_bound_fits_the_containers_limit() {
    use clap::Parser as _;
    let dev = overlay("dev");
    let pod = server_pod(dev);
    let container = &pod.containers[0];
    let limit = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .expect("a memory limit");
    let args = std::iter::once("portcullis".to_owned()).chain(container.args.iter().flatten().cloned());
    let cli = portcullis::cli::Cli::try_parse_from(args).expect("the container's args parse");
    let portcullis::cli::Command::Serve(serve) = cli.command else {
        panic!("the container runs `serve`");
    };
    let mut options = serve.options();
    // In the pod the budget is the cgroup's limit, which is the container's memory limit.
    assert_eq!(
        options.memory_budget,
        portcullis::server::memory::MemoryBudget::FromCgroup
    );
    options.memory_budget = portcullis::server::memory::MemoryBudget::Mib(mib(&limit.0));
    // The configuration the pod reads from its ConfigMap, at a path of this machine.
    let map: ConfigMap = dev.one();
    let ws = common::Workspace::new(
        map.data
            .as_ref()
            .and_then(|d| d.get("policies.yaml"))
            .map(String::as_str),
        &[],
    );
    options.config = ws.config.clone();
    options.tls = portcullis::app::TlsSource::Files {
        cert: ws.cert.clone(),
        key: ws.key.clone(),
    };
    if let Err(e) = portcullis::app::prepare(&options) {
        panic!(
            "the Deployment's flags do not fit its memory limit of {}:\n{e}",
            limit.0
        );
    }
}

#[test]
fn the_example_configuration_loads_with_its_settings_accepted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/policies.yaml");
    let config = portcullis::config::Config::from_file(&path).expect("examples/policies.yaml is valid");
    let engine =
        portcullis::engine::Engine::new(portcullis::engine::EngineOptions::default()).expect("engine");
    let set = portcullis::policy::PolicySet::load(&engine, &config.origin, &config.policies)
        .expect("every policy accepts its settings");
    let names: Vec<&str> = set.iter().map(|p| p.spec.name.as_str()).collect();
    assert_eq!(names, ["pinned-images", "readiness-probe", "secret-references"]);
}

#[test]
fn the_binary_refuses_to_start_when_its_memory_bound_exceeds_the_budget() {
    let ws = common::Workspace::new(
        Some("policies:\n  - {name: allow-all, module: allow_all.wasm, memory_mib: 128}\n"),
        &[("allow_all.wasm", common::wat_fixture("allow_all"))],
    );
    let output = common::serve_command(&ws)
        .args(["--memory-budget-mib", "512", "--max-concurrent-evaluations", "8"])
        .args(["--body-budget-bytes", "16777216", "--max-connections", "64"])
        .output()
        .expect("run portcullis");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // 8 x 128 MiB alone is 1 GiB: refused, each term named with the flag that sets it.
    let start = stderr
        .find("error: ")
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    let lines: Vec<&str> = stderr[start..].lines().collect();
    assert!(
        lines[0].starts_with("error: the configuration may hold ")
            && lines[0]
                .ends_with(" MiB at once, more than the memory budget of 512 MiB (--memory-budget-mib):"),
        "{stderr}"
    );
    assert!(
        lines[1].ends_with(" MiB  the process after loading its policies (measured)"),
        "{stderr}"
    );
    assert_eq!(
        &lines[2..],
        [
            "    1024 MiB  evaluations: 8 at once (--max-concurrent-evaluations) x 128 MiB (largest memory_mib, policy `allow-all`)",
            "     256 MiB  request bodies: 16 MiB (--body-budget-bytes) x 16 while decoded and evaluated",
            "      29 MiB  connections: 64 (--max-connections) x 464 KiB of buffers",
            "lower one of these, or raise the container's memory limit",
        ],
        "{stderr}"
    );
}

/// The optional audit (`deploy/audit/`): a CronJob that runs what the CLI accepts, with the
/// server's pod hardening, bound to a ClusterRole that reads exactly the kinds the audit lists
/// and writes only its reports.
#[test]
fn the_audit_reads_only_workloads_and_writes_only_reports() {
    use clap::Parser as _;

    let audit = &renders().audit;
    let role: ClusterRole = audit.one();
    let rules = role.rules.as_ref().expect("rules");
    let mut granted: BTreeSet<(String, String)> = BTreeSet::new();
    let mut report_verbs: BTreeSet<String> = BTreeSet::new();
    let report_kinds = [("wgpolicyk8s.io", "policyreports"), ("openreports.io", "reports")];
    for rule in rules {
        let groups = rule.api_groups.as_ref().expect("apiGroups");
        let resources = rule.resources.as_ref().expect("resources");
        for name in groups.iter().chain(resources).chain(&rule.verbs) {
            assert!(!name.contains('*'), "no wildcards: {rule:?}");
        }
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        for group in groups {
            for resource in resources {
                let is_report = report_kinds.contains(&(group.as_str(), resource.as_str()));
                let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
                if is_report {
                    let allowed = BTreeSet::from(["create", "update", "get", "list", "patch"]);
                    assert!(verbs.is_subset(&allowed), "report verbs {verbs:?}");
                    report_verbs.extend(rule.verbs.iter().cloned());
                } else {
                    assert_eq!(
                        verbs,
                        BTreeSet::from(["get", "list", "watch"]),
                        "{group}/{resource}"
                    );
                    granted.insert((group.clone(), resource.clone()));
                }
            }
        }
    }
    // Exactly the kinds the audit lists: RBAC and code cannot drift apart.
    let listed: BTreeSet<(String, String)> = portcullis::audit::kinds::WORKLOADS
        .iter()
        .flat_map(|(group, kinds)| {
            kinds.iter().map(|kind| {
                (
                    (*group).to_owned(),
                    portcullis::review::synthetic::resource_name(kind),
                )
            })
        })
        .collect();
    assert_eq!(granted, listed);
    for verb in ["create", "update", "get", "list"] {
        assert!(
            report_verbs.contains(verb),
            "the audit needs {verb} on its reports"
        );
    }
    let formats: BTreeSet<(String, String)> = portcullis::audit::kinds::ReportFormat::ALL
        .iter()
        .map(|f| {
            let (group, _, kind) = f.gvk();
            (
                group.to_owned(),
                portcullis::review::synthetic::resource_name(kind),
            )
        })
        .collect();
    assert_eq!(
        formats,
        report_kinds
            .iter()
            .map(|(g, r)| ((*g).to_owned(), (*r).to_owned()))
            .collect()
    );

    let binding: ClusterRoleBinding = audit.one();
    assert_eq!(binding.role_ref.name, "portcullis-audit");
    let subject = &binding.subjects.as_ref().expect("subjects")[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "portcullis-audit", Some(NAMESPACE))
    );
    let account: ServiceAccount = audit.one();
    assert_eq!(account.automount_service_account_token, Some(false));

    let cronjob: CronJob = audit.one();
    let spec = &cronjob.spec;
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let job = spec.job_template.spec.as_ref().expect("job spec");
    let pod = job.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.service_account_name.as_deref(), Some("portcullis-audit"));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let pod_security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let container = &pod.containers[0];
    let security = container.security_context.as_ref().expect("securityContext");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    // Exit 1 (something fails) fails the Job at once instead of rerunning the audit.
    let rule = &job.pod_failure_policy.as_ref().expect("podFailurePolicy").rules[0];
    assert_eq!(rule.action, "FailJob");
    let codes = rule.on_exit_codes.as_ref().expect("onExitCodes");
    assert_eq!(
        (codes.operator.as_str(), codes.values.as_slice()),
        ("In", &[1][..])
    );
    assert_eq!(codes.container_name.as_deref(), Some(container.name.as_str()));
    // The arguments are ones the binary accepts.
    let args = container.args.as_ref().expect("args");
    let cli = portcullis::cli::Cli::try_parse_from(
        std::iter::once("portcullis").chain(args.iter().map(String::as_str)),
    )
    .expect("the CronJob's arguments parse");
    let portcullis::cli::Command::Audit(audit_args) = cli.command else {
        panic!("the CronJob runs `audit`");
    };
    assert!(audit_args.all_namespaces && audit_args.write_reports);
    assert_eq!(
        audit_args.config.as_deref(),
        Some(PathBuf::from("/etc/portcullis/policies.yaml").as_path())
    );

    let policy: NetworkPolicy = audit.one();
    let policy = policy.spec.as_ref().expect("spec");
    let labels = job
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("labels");
    assert_eq!(
        policy.pod_selector.as_ref().and_then(|s| s.match_labels.as_ref()),
        Some(&labels)
    );
    assert!(policy.ingress.is_none(), "no connections in");
    let ports = numbered(policy.egress.iter().flatten().map(|rule| &rule.ports));
    assert_eq!(ports, [443, 6443]);
}
