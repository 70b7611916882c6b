//! team-and-registry, the Portcullis example policy, written against Kubewarden's Rust SDK
//! (`kubewarden-policy-sdk`) exactly as a Kubewarden policy is: waPC functions registered in
//! `wapc_init`, built for `wasm32-wasip1`. Portcullis runs it through its `wapc` transport.
//!
//! Workloads must carry the label `team`, and no image may come from a registry in the
//! settings' `denied_registries`. The rules and the exact messages are in
//! `../fixtures/README.md`. The request is read as plain JSON and every field is looked up by
//! type, as in the other languages: a field that is missing or of another type counts as absent.

use kubewarden_policy_sdk::wapc_guest::{CallResult, register_function};
use kubewarden_policy_sdk::{accept_request, protocol_version_guest, reject_request};
use serde_json::{Value, json};

/// Registers the waPC operations the host calls: `validate`, `validate_settings` and
/// `protocol_version`.
#[unsafe(no_mangle)]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings);
    register_function("protocol_version", protocol_version_guest);
}

/// Kinds whose pod spec is at `spec.template.spec`; a Pod's is at `spec`.
const TEMPLATED: [&str; 5] = ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"];

/// The registry host of an image reference: the part before the first `/` when it contains `.`
/// or `:` or is `localhost`, else `docker.io`.
fn registry(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

fn validate(payload: &[u8]) -> CallResult {
    // serde_json refuses nesting deeper than 128 levels, as the other languages do.
    let input: Value = match serde_json::from_slice(payload) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return malformed("not a JSON object"),
        Err(e) => return malformed(&e.to_string()),
    };
    let request = &input["request"];
    let kind = request["kind"]["kind"].as_str().unwrap_or_default();
    let object = &request["object"];
    if !object.is_object() || (kind != "Pod" && !TEMPLATED.contains(&kind)) {
        return accept_request();
    }
    let denied: Vec<&str> = input["settings"]["denied_registries"]
        .as_array()
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or("<unnamed>");
    let mut violations = Vec::new();
    if object["metadata"]["labels"]["team"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        violations.push(format!("{kind} {name}: missing required label \"team\""));
    }
    let spec = if kind == "Pod" {
        &object["spec"]
    } else {
        &object["spec"]["template"]["spec"]
    };
    for (key, noun) in [("containers", "container"), ("initContainers", "init container")] {
        for container in spec[key].as_array().into_iter().flatten() {
            let Some(image) = container["image"].as_str() else {
                continue;
            };
            let host = registry(image);
            if denied.contains(&host) {
                let cname = container["name"].as_str().unwrap_or_default();
                violations.push(format!(
                    "{kind} {name}, {noun} \"{cname}\": image \"{image}\" is from denied registry \"{host}\""
                ));
            }
        }
    }
    if violations.is_empty() {
        accept_request()
    } else {
        reject_request(Some(violations.join("; ")), None, None, None)
    }
}

fn malformed(why: &str) -> CallResult {
    reject_request(
        Some(format!("policy input was malformed: {why}")),
        None,
        None,
        None,
    )
}

/// Checks the settings document and reports its first problem in document order, with the
/// messages the fixtures require (the SDK's generic `validate_settings` would word them its own
/// way).
fn validate_settings(payload: &[u8]) -> CallResult {
    let verdict = match settings_problem(payload) {
        None => json!({"valid": true}),
        Some(problem) => json!({"valid": false, "message": problem}),
    };
    Ok(serde_json::to_vec(&verdict)?)
}

fn settings_problem(payload: &[u8]) -> Option<String> {
    match serde_json::from_slice::<Value>(payload) {
        Err(_) => return Some("settings are not valid JSON".to_owned()),
        Ok(Value::Null) => return None,
        Ok(Value::Object(_)) => {}
        Ok(_) => return Some("settings must be an object".to_owned()),
    }
    for (key, value) in entries_in_order(payload) {
        if key != "denied_registries" {
            return Some(format!("unknown setting \"{key}\""));
        }
        let Value::Array(list) = value else {
            return Some("denied_registries must be a list of strings".to_owned());
        };
        for host in list {
            let Some(host) = host.as_str() else {
                return Some("denied_registries must be a list of strings".to_owned());
            };
            if host.is_empty() || host.contains('/') {
                return Some(format!("denied_registries: \"{host}\" is not a registry host"));
            }
        }
    }
    None
}

/// The entries of a JSON object in the order written, duplicates included (a `serde_json::Map`
/// keeps neither).
fn entries_in_order(payload: &[u8]) -> Vec<(String, Value)> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<(String, Value)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some(entry) = map.next_entry::<String, Value>()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }
    serde_json::Deserializer::from_slice(payload)
        .deserialize_map(Entries)
        .unwrap_or_default()
}
