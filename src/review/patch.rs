//! The RFC 6902 JSON Patch from the object as admitted to the object as mutated, encoded as
//! the API server wants it: base64 of the patch's JSON text.

use base64::Engine as _;
use serde_json::Value;

/// The patch turning `original` into `mutated`, or `None` when they are equal.
pub fn diff(original: &Value, mutated: &Value) -> Option<json_patch::Patch> {
    let patch = json_patch::diff(original, mutated);
    (!patch.0.is_empty()).then_some(patch)
}

/// Base64 (standard alphabet, padded) of the patch's JSON, for `response.patch`.
pub fn encode(patch: &json_patch::Patch) -> String {
    // A Patch is plain JSON data; serialising it cannot fail.
    let json = serde_json::to_vec(patch).unwrap_or_default();
    base64::engine::general_purpose::STANDARD.encode(json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_applies_back_to_the_mutated_object() {
        let original = json!({"spec": {"containers": [{"name": "m"}]}, "metadata": {"name": "a/b~c"}});
        let mutated = json!({"spec": {"containers": [{"name": "m"}], "tolerations": [{"key": "nvidia.com/gpu"}]}, "metadata": {"name": "a/b~c", "labels": {"x/y": "1"}}});
        let patch = diff(&original, &mutated).expect("they differ");
        let mut applied = original.clone();
        json_patch::patch(&mut applied, &patch).expect("applies");
        assert_eq!(applied, mutated);
        assert_eq!(diff(&original, &original), None);
    }

    #[test]
    fn encoding_is_base64_of_the_json_text() {
        let patch: json_patch::Patch =
            serde_json::from_value(json!([{"op": "add", "path": "/a", "value": 1}])).expect("patch");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encode(&patch))
            .expect("base64");
        assert_eq!(
            serde_json::from_slice::<Value>(&decoded).expect("json"),
            json!([{"op": "add", "path": "/a", "value": 1}])
        );
    }
}
