//! The manifests in `deploy/` parse into the real Kubernetes API types and keep the
//! properties the webhook's safety depends on: fail closed, least privilege, the routes the
//! server actually serves, a key the non-root user can read, a grace period longer than the
//! shutdown, and flags whose memory bound fits the container's limit. The shipped example
//! configuration loads too.

mod common;

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
    // `kubectl debug` adds containers only through this subresource; a rule for `pods` alone
    // never sends it (webhook/predicates/rules/rules.go matches `resource/subresource`).
    assert!(
        resources.contains(&"pods/ephemeralcontainers"),
        "rules must send kubectl debug"
    );
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
    // The pod must outlive the shutdown delay and the drain, or SIGKILL cuts reviews short.
    let seconds = |flag: &str| -> i64 {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{flag}=")))
            .unwrap_or_else(|| panic!("--{flag}"))
            .parse()
            .expect("a number")
    };
    let (delay, drain) = (seconds("shutdown-delay-secs"), seconds("drain-timeout-secs"));
    assert!(delay > 0, "endpoints need time to drop the pod");
    assert!(pod.termination_grace_period_seconds.expect("grace period") > delay + drain);
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
fn the_non_root_container_can_read_its_key() {
    let deployments: Vec<Deployment> = docs("deployment.yaml", "Deployment");
    let pod = deployments[0].spec.template.spec.as_ref().expect("pod spec");
    let security = pod.security_context.as_ref().expect("pod securityContext");
    // The kubelet gives a Secret volume's files the pod's fsGroup and ORs 0440 into their mode
    // (SetVolumeOwnership in pkg/volume/volume_linux.go); without an fsGroup they stay
    // root's, mode defaultMode, and a 0400 key is unreadable to user 65532.
    assert_eq!(security.run_as_user, Some(65532));
    assert_eq!(
        security.fs_group, security.run_as_group,
        "the key's group is the user's group"
    );
    assert_eq!(security.fs_group, Some(65532));
    let tls = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "tls")
        .and_then(|v| v.secret.as_ref())
        .expect("the tls Secret volume");
    assert_eq!(tls.secret_name.as_deref(), Some("portcullis-tls"));
    let mode = tls.default_mode.expect("defaultMode");
    assert_eq!(mode, 0o440, "owner and group read, nothing else");
    // YAML 1.1 (what kubectl reads) takes `0440` as octal, YAML 1.2 as decimal 440: only a
    // decimal without a leading zero means the same to both.
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/deployment.yaml"))
        .expect("read manifest");
    let written: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("defaultMode:"))
        .map(|v| v.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(written, ["288"]);
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "tls")
        .expect("tls mount");
    assert_eq!(mount.read_only, Some(true));
    let args = pod.containers[0].args.as_ref().expect("args");
    assert!(
        args.iter()
            .any(|a| a == &format!("--key={}/tls.key", mount.mount_path))
    );
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
    let deployments: Vec<Deployment> = docs("deployment.yaml", "Deployment");
    let pod = deployments[0].spec.template.spec.as_ref().expect("pod spec");
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
    let ws = common::Workspace::new(None, &[]);
    options.tls = portcullis::app::TlsSource::Files {
        cert: ws.cert.clone(),
        key: ws.key.clone(),
    };
    if let Err(e) = portcullis::app::prepare(&options) {
        panic!(
            "deploy/deployment.yaml's flags do not fit its memory limit of {}:\n{e}",
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
