// Package policy is team-and-registry's logic, shared by the reactor (../main.go, the core
// transport) and the WASI command (../command, the wasi transport).
//
// Workloads (Pod; Deployment, ReplicaSet, StatefulSet, DaemonSet and Job through
// spec.template.spec) must carry the label `team` (non-empty) in their own metadata.labels, and no
// container or init container may use an image from a registry listed in the settings'
// `denied_registries`. The exact rules and messages are in ../../fixtures/README.md.
//
// JSON is decoded with encoding/json into plain maps and slices, and every field is looked up by
// type: a field that is missing or of another type counts as absent, as in the other languages.
package policy

import (
	"bytes"
	"encoding/json"
	"strings"
)

func marshal(v any) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		return []byte(`{"accepted":false,"message":"policy output could not be encoded"}`)
	}
	return out
}

// field is v[key] when v is an object, else nil.
func field(v any, key string) any {
	if m, ok := v.(map[string]any); ok {
		return m[key]
	}
	return nil
}

// Workload kinds whose pod spec is at spec.template.spec; a Pod's is at spec.
var templated = map[string]bool{
	"Deployment": true, "ReplicaSet": true, "StatefulSet": true, "DaemonSet": true, "Job": true,
}

// registry is the registry host of an image reference: the part before the first '/' when it
// contains '.' or ':' or is "localhost", else docker.io.
func registry(image string) string {
	first, _, found := strings.Cut(image, "/")
	if found && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return first
	}
	return "docker.io"
}

// maxDepth bounds nesting, as in the other languages: encoding/json recurses once per level, and
// deep enough input (a few thousand levels) exhausts the Wasm call stack, a trap instead of an
// answer.
const maxDepth = 128

// tooDeep reports whether arrays and objects in data nest deeper than maxDepth.
func tooDeep(data []byte) bool {
	depth, inString, escaped := 0, false, false
	for _, b := range data {
		switch {
		case escaped:
			escaped = false
		case inString:
			escaped = b == '\\'
			inString = b != '"'
		case b == '"':
			inString = true
		case b == '{' || b == '[':
			depth++
			if depth > maxDepth {
				return true
			}
		case b == '}' || b == ']':
			depth--
		}
	}
	return false
}

// Judge answers ABI v1 validate input with ABI v1 validate output.
func Judge(data []byte) []byte {
	if tooDeep(data) {
		return []byte(`{"accepted":false,"message":"policy input was malformed: nested deeper than 128 levels"}`)
	}
	var in map[string]any
	if err := json.Unmarshal(data, &in); err != nil {
		return marshal(map[string]any{"accepted": false, "message": "policy input was malformed: " + err.Error()})
	}
	request := in["request"]
	object, isObject := field(request, "object").(map[string]any)
	kind, _ := field(field(request, "kind"), "kind").(string)
	if !isObject || (kind != "Pod" && !templated[kind]) {
		return []byte(`{"accepted":true}`)
	}
	denied := map[string]bool{}
	if list, ok := field(in["settings"], "denied_registries").([]any); ok {
		for _, r := range list {
			if s, ok := r.(string); ok {
				denied[s] = true
			}
		}
	}
	metadata := object["metadata"]
	name, ok := field(metadata, "name").(string)
	if !ok {
		name = "<unnamed>"
	}
	var violations []string
	if team, _ := field(field(metadata, "labels"), "team").(string); team == "" {
		violations = append(violations, kind+" "+name+`: missing required label "team"`)
	}
	spec := object["spec"]
	if kind != "Pod" {
		spec = field(field(spec, "template"), "spec")
	}
	for _, list := range []struct{ key, noun string }{
		{"containers", "container"}, {"initContainers", "init container"},
	} {
		containers, _ := field(spec, list.key).([]any)
		for _, c := range containers {
			image, ok := field(c, "image").(string)
			if !ok || !denied[registry(image)] {
				continue
			}
			cname, _ := field(c, "name").(string)
			violations = append(violations, kind+" "+name+", "+list.noun+` "`+cname+`": image "`+
				image+`" is from denied registry "`+registry(image)+`"`)
		}
	}
	if len(violations) == 0 {
		return []byte(`{"accepted":true}`)
	}
	return marshal(map[string]any{"accepted": false, "message": strings.Join(violations, "; ")})
}

// CheckSettings returns the first problem with the settings in document order, or "". Settings
// are null or an object whose only key is denied_registries, a list of registry hosts (non-empty
// strings without '/'). The object is read token by token to keep its keys in order.
func CheckSettings(data []byte) string {
	if !json.Valid(data) || tooDeep(data) {
		return "settings are not valid JSON"
	}
	if string(bytes.TrimSpace(data)) == "null" {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return "settings must be an object"
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "settings are not valid JSON"
		}
		if key, _ := tok.(string); key != "denied_registries" {
			return `unknown setting "` + key + `"`
		}
		var value any
		if err := dec.Decode(&value); err != nil {
			return "settings are not valid JSON"
		}
		list, ok := value.([]any)
		if !ok {
			return "denied_registries must be a list of strings"
		}
		for _, r := range list {
			host, ok := r.(string)
			if !ok {
				return "denied_registries must be a list of strings"
			}
			if host == "" || strings.Contains(host, "/") {
				return `denied_registries: "` + host + `" is not a registry host`
			}
		}
	}
	return ""
}

// SettingsVerdict answers validate_settings: {"valid":true} or {"valid":false,"message":...}.
func SettingsVerdict(data []byte) []byte {
	if problem := CheckSettings(data); problem != "" {
		return marshal(map[string]any{"valid": false, "message": problem})
	}
	return []byte(`{"valid":true}`)
}
