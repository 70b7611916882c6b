//! Where pod specs and containers live inside Kubernetes objects.
//!
//! Workload policies care about containers, but containers hide at kind-specific depths: a Pod at
//! `/spec`, a Deployment at `/spec/template/spec`, a CronJob two templates down, a PyTorchJob once
//! per replica role, a RayCluster once per worker group. This module is the single map from kind
//! to pod-spec locations (as RFC 6901 pointers, so mutating policies can patch in place) and the
//! single way to list a pod spec's containers and describe them in messages.
//!
//! Kinds are matched by `kind` alone, whatever the group or version, because the same CRD kind is
//! served under several versions (kubeflow.org/v1, ray.io/v1alpha1 and v1, ...) and Portcullis
//! only needs the shape. Missing paths and unknown kinds yield nothing.

use std::fmt;

use serde_json::Value;

/// A pod spec found in an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpecLocation {
    /// RFC 6901 pointer to the pod spec object, e.g. `/spec/template/spec`.
    pub pointer: String,
    /// Which part of a multi-pod object this is (`predictor`, `replica Worker`, `worker group
    /// small-group`, `replicated job trainers`); `None` when the object has one pod spec.
    pub context: Option<String>,
}

/// KServe predictor keys that hold a single model-server container (the "model framework" form),
/// which KServe runs as a container named [`KSERVE_CONTAINER`].
pub const KSERVE_MODEL_FRAMEWORKS: &[&str] = &[
    "model",
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "lightgbm",
    "pmml",
    "paddle",
];

/// The name KServe gives the container it builds from a model-framework spec.
pub const KSERVE_CONTAINER: &str = "kserve-container";

/// Which container list of a pod spec a container belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerList {
    /// `containers`: the workload itself.
    Containers,
    /// `initContainers`: run to completion before the workload (or, with
    /// `restartPolicy: Always`, as sidecars).
    InitContainers,
    /// `ephemeralContainers`: debugging containers added by `kubectl debug`.
    EphemeralContainers,
    /// A KServe model-framework key (`sklearn`, `model`, `triton`, ...) of an InferenceService
    /// component: a single container object (not a list) that KServe runs as
    /// `kserve-container`. Its `index` is always 0 and it counts as a regular container.
    ModelFramework(&'static str),
}

impl ContainerList {
    /// The three Kubernetes lists, in the order [`containers`] reports them.
    pub const LISTS: [ContainerList; 3] = [
        ContainerList::Containers,
        ContainerList::InitContainers,
        ContainerList::EphemeralContainers,
    ];

    /// The pod-spec field holding this list (or, for a model framework, the single container).
    pub fn field(&self) -> &'static str {
        match self {
            ContainerList::Containers => "containers",
            ContainerList::InitContainers => "initContainers",
            ContainerList::EphemeralContainers => "ephemeralContainers",
            ContainerList::ModelFramework(key) => key,
        }
    }

    /// True for containers that serve the workload: `containers` and KServe model containers.
    pub fn is_regular(&self) -> bool {
        matches!(self, ContainerList::Containers | ContainerList::ModelFramework(_))
    }

    /// RFC 6901 pointer to container `index`, relative to its pod spec: `/containers/2`, or
    /// `/sklearn` for a model framework (which is not a list). Append it to
    /// [`PodSpecLocation::pointer`] to address the container in the object.
    pub fn pointer(&self, index: usize) -> String {
        match self {
            ContainerList::ModelFramework(key) => format!("/{key}"),
            list => format!("/{}/{index}", list.field()),
        }
    }
}

impl fmt::Display for ContainerList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerList::Containers => f.write_str("container"),
            ContainerList::InitContainers => f.write_str("init container"),
            ContainerList::EphemeralContainers => f.write_str("ephemeral container"),
            ContainerList::ModelFramework("model") => f.write_str("model container"),
            ContainerList::ModelFramework(key) => write!(f, "{key} model container"),
        }
    }
}

/// A container found in a pod spec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContainerRef<'a> {
    /// Which list it is in.
    pub list: ContainerList,
    /// Its position in that list (0 for a model framework).
    pub index: usize,
    /// Its `name`, `kserve-container` for a model framework, or `<unnamed>`.
    pub name: &'a str,
    /// The container object.
    pub container: &'a Value,
}

/// Every pod spec in `object`, given its `kind`. Only locations holding a JSON object are
/// returned, in a stable order (replica roles sorted by name, groups by index).
pub fn pod_spec_pointers(kind: &str, object: &Value) -> Vec<PodSpecLocation> {
    let mut found = Vec::new();
    let mut at = |pointer: String, context: Option<String>| {
        if object.pointer(&pointer).is_some_and(Value::is_object) {
            found.push(PodSpecLocation { pointer, context });
        }
    };
    match kind {
        "Pod" => at("/spec".into(), None),
        "PodTemplate" => at("/template/spec".into(), None),
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ReplicationController" | "Job" => {
            at("/spec/template/spec".into(), None)
        }
        "CronJob" => at("/spec/jobTemplate/spec/template/spec".into(), None),
        "InferenceService" => {
            at("/spec/predictor".into(), Some("predictor".into()));
            // Multi-node serving (KServe >= 0.13): the predictor's worker pods.
            at(
                "/spec/predictor/workerSpec".into(),
                Some("predictor workers".into()),
            );
            for component in ["transformer", "explainer"] {
                at(format!("/spec/{component}"), Some(component.into()));
            }
        }
        "PyTorchJob" => replica_specs(object, "pytorchReplicaSpecs", &mut at),
        "TFJob" => replica_specs(object, "tfReplicaSpecs", &mut at),
        "MPIJob" => replica_specs(object, "mpiReplicaSpecs", &mut at),
        "XGBoostJob" => replica_specs(object, "xgbReplicaSpecs", &mut at),
        "RayCluster" => ray_cluster(object, "/spec", &mut at),
        "RayJob" => ray_cluster(object, "/spec/rayClusterSpec", &mut at),
        "RayService" => ray_cluster(object, "/spec/rayClusterConfig", &mut at),
        "JobSet" => {
            let jobs = object.pointer("/spec/replicatedJobs").and_then(Value::as_array);
            for (i, job) in jobs.into_iter().flatten().enumerate() {
                let label = match job.get("name").and_then(Value::as_str) {
                    Some(name) => format!("replicated job {name}"),
                    None => format!("replicated job #{i}"),
                };
                at(
                    format!("/spec/replicatedJobs/{i}/template/spec/template/spec"),
                    Some(label),
                );
            }
        }
        _ => {}
    }
    found
}

/// Kubeflow training operators: one pod template per replica role (`Master`, `Worker`, ...).
fn replica_specs(object: &Value, field: &str, at: &mut impl FnMut(String, Option<String>)) {
    let roles = object
        .get("spec")
        .and_then(|s| s.get(field))
        .and_then(Value::as_object);
    for role in roles.into_iter().flat_map(|r| r.keys()) {
        at(
            format!("/spec/{field}/{}/template/spec", escape_pointer_token(role)),
            Some(format!("replica {role}")),
        );
    }
}

/// KubeRay cluster spec under `base`: the head group and every worker group.
fn ray_cluster(object: &Value, base: &str, at: &mut impl FnMut(String, Option<String>)) {
    at(
        format!("{base}/headGroupSpec/template/spec"),
        Some("head group".into()),
    );
    let groups = object
        .pointer(&format!("{base}/workerGroupSpecs"))
        .and_then(Value::as_array);
    for (i, group) in groups.into_iter().flatten().enumerate() {
        let label = match group.get("groupName").and_then(Value::as_str) {
            Some(name) => format!("worker group {name}"),
            None => format!("worker group #{i}"),
        };
        at(format!("{base}/workerGroupSpecs/{i}/template/spec"), Some(label));
    }
}

/// Escapes one RFC 6901 reference token (`~` → `~0`, `/` → `~1`).
pub fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Every pod spec in `object` together with the spec itself.
pub fn pod_specs<'a>(kind: &str, object: &'a Value) -> Vec<(PodSpecLocation, &'a Value)> {
    pod_spec_pointers(kind, object)
        .into_iter()
        .filter_map(|loc| object.pointer(&loc.pointer).map(|spec| (loc, spec)))
        .collect()
}

/// Every container of a pod spec: `containers`, then KServe model-framework containers, then
/// `initContainers`, then `ephemeralContainers`. Entries that are not objects are skipped.
pub fn containers(pod_spec: &Value) -> Vec<ContainerRef<'_>> {
    container_pointers(pod_spec)
        .into_iter()
        .filter_map(|(list, index)| {
            let container = match list {
                ContainerList::ModelFramework(key) => pod_spec.get(key)?,
                _ => pod_spec.get(list.field())?.get(index)?,
            };
            let name = match list {
                ContainerList::ModelFramework(_) => KSERVE_CONTAINER,
                _ => container
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("<unnamed>"),
            };
            Some(ContainerRef {
                list,
                index,
                name,
                container,
            })
        })
        .collect()
}

/// The (list, index) of every container of a pod spec, in the order of [`containers`]; address
/// one with `pod_spec[list.field()][index]`, or `pod_spec[list.field()]` for a model framework
/// (see [`ContainerList::pointer`]).
pub fn container_pointers(pod_spec: &Value) -> Vec<(ContainerList, usize)> {
    let mut out = Vec::new();
    let list_len = |list: ContainerList| {
        pod_spec
            .get(list.field())
            .and_then(Value::as_array)
            .map(|items| items.iter().enumerate().filter(|(_, c)| c.is_object()))
    };
    for (i, _) in list_len(ContainerList::Containers).into_iter().flatten() {
        out.push((ContainerList::Containers, i));
    }
    for key in KSERVE_MODEL_FRAMEWORKS {
        if pod_spec.get(key).is_some_and(Value::is_object) {
            out.push((ContainerList::ModelFramework(key), 0));
        }
    }
    for list in [ContainerList::InitContainers, ContainerList::EphemeralContainers] {
        for (i, _) in list_len(list).into_iter().flatten() {
            out.push((list, i));
        }
    }
    out
}

/// The object's name for messages: `metadata.name`, else `metadata.generateName` followed by `*`,
/// else `<unnamed>`.
pub fn object_name(object: &Value) -> String {
    let meta = |field: &str| {
        object
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    match (meta("name"), meta("generateName")) {
        (Some(name), _) => name.to_string(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => "<unnamed>".to_string(),
    }
}

/// The prefix every message uses to point at a container, e.g. `Deployment fraud-model,
/// container "model"` or `PyTorchJob bert-ft (replica Worker), init container "fetch"`.
pub fn describe(kind: &str, object: &Value, loc: &PodSpecLocation, c: &ContainerRef) -> String {
    format!(
        "{}, {} \"{}\"",
        describe_pod_spec(kind, object, loc),
        c.list,
        c.name
    )
}

/// The prefix for messages about a whole pod spec (tolerations, node selectors, ...), e.g.
/// `Deployment fraud-model` or `RayCluster embed (worker group gpu)`.
pub fn describe_pod_spec(kind: &str, object: &Value, loc: &PodSpecLocation) -> String {
    let name = object_name(object);
    match &loc.context {
        Some(context) => format!("{kind} {name} ({context})"),
        None => format!("{kind} {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(image: &str) -> Value {
        json!({"spec": {"containers": [{"name": "main", "image": image}]}})
    }

    fn pointers(kind: &str, object: &Value) -> Vec<(String, Option<String>)> {
        pod_spec_pointers(kind, object)
            .into_iter()
            .map(|l| (l.pointer, l.context))
            .collect()
    }

    fn one(p: &str) -> Vec<(String, Option<String>)> {
        vec![(p.to_string(), None)]
    }

    #[test]
    fn core_and_apps_kinds() {
        let pod = json!({"spec": {"containers": []}});
        assert_eq!(pointers("Pod", &pod), one("/spec"));
        let pt = json!({"template": template("a")});
        assert_eq!(pointers("PodTemplate", &pt), one("/template/spec"));
        let workload = json!({"spec": {"template": template("a")}});
        for kind in [
            "Deployment",
            "ReplicaSet",
            "StatefulSet",
            "DaemonSet",
            "ReplicationController",
            "Job",
        ] {
            assert_eq!(pointers(kind, &workload), one("/spec/template/spec"), "{kind}");
        }
        let cron = json!({"spec": {"jobTemplate": {"spec": {"template": template("a")}}}});
        assert_eq!(
            pointers("CronJob", &cron),
            one("/spec/jobTemplate/spec/template/spec")
        );
    }

    #[test]
    fn missing_paths_and_unknown_kinds_yield_nothing() {
        assert!(pointers("Deployment", &json!({"spec": {}})).is_empty());
        assert!(pointers("Deployment", &json!({"spec": {"template": {"spec": "x"}}})).is_empty());
        assert!(pointers("Pod", &Value::Null).is_empty());
        assert!(pointers("ConfigMap", &json!({"spec": {"containers": []}})).is_empty());
        assert!(pointers("CronJob", &json!({"spec": {"template": template("a")}})).is_empty());
        assert!(pointers("RayCluster", &json!({"spec": {"workerGroupSpecs": "x"}})).is_empty());
    }

    #[test]
    fn inference_service_components_and_model_frameworks() {
        let isvc = json!({"spec": {
            "predictor": {"sklearn": {"storageUri": "gs://m", "image": "x"},
                          "containers": [{"name": "agent"}]},
            "explainer": {"containers": [{"name": "alibi"}]}
        }});
        assert_eq!(
            pointers("InferenceService", &isvc),
            vec![
                ("/spec/predictor".to_string(), Some("predictor".to_string())),
                ("/spec/explainer".to_string(), Some("explainer".to_string())),
            ]
        );
        let multi_node = json!({"spec": {"predictor": {
            "model": {"modelFormat": {"name": "huggingface"}},
            "workerSpec": {"tensorParallelSize": 2, "containers": [{"name": "worker-container"}]}}}});
        assert_eq!(
            pointers("InferenceService", &multi_node),
            vec![
                ("/spec/predictor".to_string(), Some("predictor".to_string())),
                (
                    "/spec/predictor/workerSpec".to_string(),
                    Some("predictor workers".to_string())
                ),
            ]
        );
        let predictor = &isvc["spec"]["predictor"];
        let found = containers(predictor);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "agent");
        assert_eq!(found[1].list, ContainerList::ModelFramework("sklearn"));
        assert_eq!(found[1].name, KSERVE_CONTAINER);
        assert_eq!(found[1].container["storageUri"], "gs://m");
        assert!(found[1].list.is_regular());
        assert_eq!(found[1].list.pointer(0), "/sklearn");
        let (loc, _) = pod_specs("InferenceService", &isvc).remove(0);
        assert_eq!(
            describe(
                "InferenceService",
                &json!({"metadata": {"name": "fraud"}}),
                &loc,
                &found[1]
            ),
            "InferenceService fraud (predictor), sklearn model container \"kserve-container\""
        );
    }

    #[test]
    fn kubeflow_replica_roles_are_escaped_and_sorted() {
        let job = |field: &str| {
            json!({"spec": {field: {
                "Worker": {"replicas": 4, "template": template("w")},
                "Master": {"replicas": 1, "template": template("m")},
                "a/b~c": {"template": template("odd")},
                "Broken": {"replicas": 1}
            }}})
        };
        for (kind, field) in [
            ("PyTorchJob", "pytorchReplicaSpecs"),
            ("TFJob", "tfReplicaSpecs"),
            ("MPIJob", "mpiReplicaSpecs"),
            ("XGBoostJob", "xgbReplicaSpecs"),
        ] {
            let object = job(field);
            let found = pointers(kind, &object);
            assert_eq!(
                found,
                vec![
                    (
                        format!("/spec/{field}/Master/template/spec"),
                        Some("replica Master".into())
                    ),
                    (
                        format!("/spec/{field}/Worker/template/spec"),
                        Some("replica Worker".into())
                    ),
                    (
                        format!("/spec/{field}/a~1b~0c/template/spec"),
                        Some("replica a/b~c".into())
                    ),
                ],
                "{kind}"
            );
            for (pointer, _) in found {
                assert!(object.pointer(&pointer).is_some(), "{pointer} resolves");
            }
        }
    }

    #[test]
    fn ray_kinds_cover_head_and_every_worker_group() {
        let cluster = json!({
            "headGroupSpec": {"template": template("head")},
            "workerGroupSpecs": [
                {"groupName": "small-group", "template": template("w")},
                {"template": template("w2")}
            ]
        });
        for (kind, wrapped, base) in [
            ("RayCluster", json!({"spec": cluster.clone()}), "/spec"),
            (
                "RayJob",
                json!({"spec": {"rayClusterSpec": cluster.clone()}}),
                "/spec/rayClusterSpec",
            ),
            (
                "RayService",
                json!({"spec": {"rayClusterConfig": cluster.clone()}}),
                "/spec/rayClusterConfig",
            ),
        ] {
            assert_eq!(
                pointers(kind, &wrapped),
                vec![
                    (
                        format!("{base}/headGroupSpec/template/spec"),
                        Some("head group".into())
                    ),
                    (
                        format!("{base}/workerGroupSpecs/0/template/spec"),
                        Some("worker group small-group".into())
                    ),
                    (
                        format!("{base}/workerGroupSpecs/1/template/spec"),
                        Some("worker group #1".into())
                    ),
                ],
                "{kind}"
            );
        }
    }

    #[test]
    fn jobset_replicated_jobs() {
        let js = json!({"spec": {"replicatedJobs": [
            {"name": "driver", "template": {"spec": {"template": template("d")}}},
            {"name": "trainers", "template": {"spec": {"template": template("t")}}}
        ]}});
        assert_eq!(
            pointers("JobSet", &js),
            vec![
                (
                    "/spec/replicatedJobs/0/template/spec/template/spec".into(),
                    Some("replicated job driver".into())
                ),
                (
                    "/spec/replicatedJobs/1/template/spec/template/spec".into(),
                    Some("replicated job trainers".into())
                ),
            ]
        );
    }

    #[test]
    fn containers_lists_all_three_in_order() {
        let spec = json!({
            "ephemeralContainers": [{"name": "debugger"}],
            "initContainers": [{"name": "fetch"}, {"name": "log-shipper", "restartPolicy": "Always"}],
            "containers": [{"name": "model"}, "garbage", {"image": "x"}]
        });
        let found: Vec<(ContainerList, usize, &str)> = containers(&spec)
            .iter()
            .map(|c| (c.list, c.index, c.name))
            .collect();
        assert_eq!(
            found,
            vec![
                (ContainerList::Containers, 0, "model"),
                (ContainerList::Containers, 2, "<unnamed>"),
                (ContainerList::InitContainers, 0, "fetch"),
                (ContainerList::InitContainers, 1, "log-shipper"),
                (ContainerList::EphemeralContainers, 0, "debugger"),
            ]
        );
        let ptrs = container_pointers(&spec);
        assert_eq!(ptrs.len(), 5);
        for (list, index) in ptrs {
            assert!(spec.pointer(&list.pointer(index)).is_some_and(Value::is_object));
            assert!(spec[list.field()][index].is_object());
        }
        assert!(containers(&json!({})).is_empty());
    }

    #[test]
    fn names_and_descriptions() {
        assert_eq!(
            object_name(&json!({"metadata": {"name": "fraud-model"}})),
            "fraud-model"
        );
        assert_eq!(
            object_name(&json!({"metadata": {"generateName": "train-"}})),
            "train-*"
        );
        assert_eq!(
            object_name(&json!({"metadata": {"name": "", "generateName": "t-"}})),
            "t-*"
        );
        assert_eq!(object_name(&json!({})), "<unnamed>");
        let job = json!({"metadata": {"name": "bert-ft"}, "spec": {"pytorchReplicaSpecs": {
            "Worker": {"template": {"spec": {"initContainers": [{"name": "fetch"}]}}}}}});
        let (loc, spec) = pod_specs("PyTorchJob", &job).remove(0);
        let c = containers(spec).remove(0);
        assert_eq!(
            describe("PyTorchJob", &job, &loc, &c),
            "PyTorchJob bert-ft (replica Worker), init container \"fetch\""
        );
        let dep = json!({"metadata": {"name": "fraud-model"}, "spec": {"template": template("m")}});
        let (loc, spec) = pod_specs("Deployment", &dep).remove(0);
        assert_eq!(
            describe("Deployment", &dep, &loc, &containers(spec)[0]),
            "Deployment fraud-model, container \"main\""
        );
        assert_eq!(
            describe_pod_spec("Deployment", &dep, &loc),
            "Deployment fraud-model"
        );
    }

    #[test]
    fn display_of_lists() {
        assert_eq!(ContainerList::Containers.to_string(), "container");
        assert_eq!(ContainerList::InitContainers.to_string(), "init container");
        assert_eq!(
            ContainerList::EphemeralContainers.to_string(),
            "ephemeral container"
        );
        assert_eq!(ContainerList::InitContainers.field(), "initContainers");
        assert_eq!(
            ContainerList::EphemeralContainers.pointer(3),
            "/ephemeralContainers/3"
        );
    }
}
