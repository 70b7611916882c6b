//! The manifests in `deploy/` parse into the real Kubernetes API types and keep the
//! properties the webhook's safety depends on: fail closed, least privilege, the routes the
//! server actually serves. The shipped example configuration loads too.

use std::path::Path;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use serde::Deserialize as _;
use serde::de::DeserializeOwned;

/// Every document of `kind` in `deploy/<file>`, with the caBundle placeholder replaced the way
/// deploy/README.md tells the operator to.
fn docs<T: DeserializeOwned>(file: &str, kind: &str) -> Vec<T> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file);
    let text = std::fs::read_to_string(&path).expect("read manifest");
    let bundle = portcullis::certs::generate(&["portcullis.portcullis.svc".into()]).expect("certs");
    let text = text.replace("CA_BUNDLE", &bundle.ca_bundle());
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).expect("yaml"))
        .filter(|v| v.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|v| serde_yaml_ng::from_value(v).unwrap_or_else(|e| panic!("{file}: {kind}: {e}")))
        .collect()
}

#[test]
fn webhooks_fail_closed_and_call_the_served_routes() {
    let validating: Vec<ValidatingWebhookConfiguration> =
        docs("webhooks.yaml", "ValidatingWebhookConfiguration");
    let mutating: Vec<MutatingWebhookConfiguration> = docs("webhooks.yaml", "MutatingWebhookConfiguration");
    assert_eq!((validating.len(), mutating.len()), (1, 1));
    let v = &validating[0].webhooks.as_ref().expect("webhooks")[0];
    let m = &mutating[0].webhooks.as_ref().expect("webhooks")[0];
    let hooks = [
        (
            "/validate",
            &v.failure_policy,
            &v.side_effects,
            &v.admission_review_versions,
            &v.client_config,
            &v.namespace_selector,
        ),
        (
            "/mutate",
            &m.failure_policy,
            &m.side_effects,
            &m.admission_review_versions,
            &m.client_config,
            &m.namespace_selector,
        ),
    ];
    for (route, failure, side_effects, versions, client, namespaces) in hooks {
        assert_eq!(failure.as_deref(), Some("Fail"), "{route} must fail closed");
        assert_eq!(side_effects, "None");
        assert_eq!(versions, &["v1"]);
        let svc = client.service.as_ref().expect("service");
        assert_eq!(
            (svc.name.as_str(), svc.namespace.as_str()),
            ("portcullis", "portcullis")
        );
        assert_eq!(svc.path.as_deref(), Some(route));
        assert!(
            client
                .ca_bundle
                .as_ref()
                .is_some_and(|b| b.0.starts_with(b"-----BEGIN CERTIFICATE"))
        );
        let selector = namespaces.as_ref().expect("namespaceSelector");
        let excluded = &selector.match_expressions.as_ref().expect("matchExpressions")[0];
        assert_eq!(excluded.operator, "NotIn");
        let values = excluded.values.as_ref().expect("values");
        assert!(values.iter().any(|n| n == "kube-system") && values.iter().any(|n| n == "portcullis"));
    }
    let resources: Vec<&str> = v
        .rules
        .iter()
        .flatten()
        .flat_map(|r| r.resources.iter().flatten())
        .map(String::as_str)
        .collect();
    for resource in [
        "pods",
        "deployments",
        "cronjobs",
        "inferenceservices",
        "pytorchjobs",
        "rayclusters",
        "jobsets",
    ] {
        assert!(resources.contains(&resource), "rules must send {resource}");
    }
}

#[test]
fn the_server_runs_with_least_privilege() {
    let deployments: Vec<Deployment> = docs("deployment.yaml", "Deployment");
    let pod = deployments[0].spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.automount_service_account_token, Some(false));
    let pod_security = pod.security_context.as_ref().expect("pod securityContext");
    assert_eq!(pod_security.run_as_non_root, Some(true));
    let container = &pod.containers[0];
    let security = container
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(
        security.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_owned()])
    );
    let readiness = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref());
    assert_eq!(readiness.and_then(|h| h.path.as_deref()), Some("/readyz"));
    let args = container.args.as_ref().expect("args");
    assert_eq!(args[0], "serve");
    // The pod must outlive the drain, or SIGKILL cuts in-flight reviews short.
    let drain: i64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--drain-timeout-secs="))
        .expect("--drain-timeout-secs")
        .parse()
        .expect("a number");
    assert!(pod.termination_grace_period_seconds.expect("grace period") > drain);
    let accounts: Vec<ServiceAccount> = docs("serviceaccount.yaml", "ServiceAccount");
    assert_eq!(accounts[0].automount_service_account_token, Some(false));
    let services: Vec<Service> = docs("service.yaml", "Service");
    let ports = services[0]
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .expect("ports");
    assert_eq!(ports[0].port, 443);
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

/// The optional audit (`deploy/audit/`): a CronJob that runs what the CLI accepts, with the
/// server's pod hardening, bound to a ClusterRole that reads exactly the kinds the audit lists
/// and writes only its reports.
#[test]
fn the_audit_reads_only_workloads_and_writes_only_reports() {
    use std::collections::BTreeSet;

    use clap::Parser as _;
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

    let roles: Vec<ClusterRole> = docs("audit/rbac.yaml", "ClusterRole");
    let rules = roles[0].rules.as_ref().expect("rules");
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

    let bindings: Vec<ClusterRoleBinding> = docs("audit/rbac.yaml", "ClusterRoleBinding");
    assert_eq!(bindings[0].role_ref.name, "portcullis-audit");
    let subject = &bindings[0].subjects.as_ref().expect("subjects")[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "portcullis-audit", Some("portcullis"))
    );
    let accounts: Vec<ServiceAccount> = docs("audit/serviceaccount.yaml", "ServiceAccount");
    assert_eq!(accounts[0].automount_service_account_token, Some(false));

    let cronjobs: Vec<CronJob> = docs("audit/cronjob.yaml", "CronJob");
    let spec = &cronjobs[0].spec;
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
    let portcullis::cli::Command::Audit(audit) = cli.command else {
        panic!("the CronJob runs `audit`");
    };
    assert!(audit.all_namespaces && audit.write_reports);

    let policies: Vec<NetworkPolicy> = docs("audit/networkpolicy.yaml", "NetworkPolicy");
    let policy = policies[0].spec.as_ref().expect("spec");
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
    let ports: Vec<i32> = policy
        .egress
        .iter()
        .flatten()
        .flat_map(|rule| rule.ports.iter().flatten())
        .filter_map(|p| match p.port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(ports, [443, 6443]);
}
