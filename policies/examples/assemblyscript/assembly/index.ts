// team-and-registry in AssemblyScript: ABI v1 exported directly, on the stub runtime (a bump
// allocator that never frees: every evaluation gets a fresh instance).
//
// The policy: workloads (Pod; Deployment, ReplicaSet, StatefulSet, DaemonSet and Job through
// spec.template.spec) must carry the label `team` (non-empty) in their own metadata.labels, and no
// container or init container may use an image from a registry listed in the settings'
// `denied_registries`. The exact rules and messages are in ../README.md.

import { Kind, Value, parse, quote } from "./json";

/** Replaces the `env.abort` import: a failed assertion traps, which the webhook reports. */
function trap(message: string | null, file: string | null, line: u32, column: u32): void {
  unreachable();
}

/** ABI v1: room for the host's input. */
export function allocate(len: i32): i32 {
  return <i32>heap.alloc(<usize>len);
}

/** Encodes `text` as UTF-8 and packs its location: pointer << 32 | length. */
function respond(text: string): i64 {
  const out = String.UTF8.encode(text);
  return (<i64>changetype<usize>(out) << 32) | <i64>out.byteLength;
}

function received(ptr: i32, len: i32): string {
  return String.UTF8.decodeUnsafe(<usize>ptr, <usize>len);
}

function str(v: Value | null): string | null {
  return v != null && v.kind == Kind.String ? v.str : null;
}

function field(v: Value | null, key: string): Value | null {
  return v == null ? null : v.get(key);
}

/** The registry host of an image reference: the part before the first '/' when it contains '.'
 *  or ':' or is "localhost", else docker.io. */
function registry(image: string): string {
  const slash = image.indexOf("/");
  if (slash < 0) return "docker.io";
  const first = image.substring(0, slash);
  return first.includes(".") || first.includes(":") || first == "localhost" ? first : "docker.io";
}

const TEMPLATED = ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"];

export function validate(ptr: i32, len: i32): i64 {
  const input = parse(received(ptr, len));
  if (input == null || input.kind != Kind.Object) {
    return respond('{"accepted":false,"message":"policy input was malformed: not a JSON object"}');
  }
  const request = input.get("request");
  const object = field(request, "object");
  const k = str(field(field(request, "kind"), "kind"));
  if (object == null || object.kind != Kind.Object || k == null) return respond('{"accepted":true}');
  const kind = k;
  const pod = kind == "Pod";
  if (!pod && !TEMPLATED.includes(kind)) return respond('{"accepted":true}');

  const denied = new Set<string>();
  const list = field(input.get("settings"), "denied_registries");
  if (list != null && list.kind == Kind.Array) {
    for (let i = 0; i < list.items.length; i++) {
      const r = str(list.items[i]);
      if (r != null) denied.add(r);
    }
  }

  const metadata = object.get("metadata");
  const n = str(field(metadata, "name"));
  const name = n != null ? n : "<unnamed>";
  const violations: string[] = [];
  const team = str(field(field(metadata, "labels"), "team"));
  if (team == null || team.length == 0) {
    violations.push(kind + " " + name + ': missing required label "team"');
  }
  let spec = object.get("spec");
  if (!pod) spec = field(field(spec, "template"), "spec");
  const lists = ["containers", "initContainers"];
  const nouns = ["container", "init container"];
  for (let l = 0; l < 2; l++) {
    const containers = field(spec, lists[l]);
    if (containers == null || containers.kind != Kind.Array) continue;
    for (let i = 0; i < containers.items.length; i++) {
      const c = containers.items[i];
      const image = str(c.get("image"));
      if (image == null) continue;
      const host = registry(image);
      if (!denied.has(host)) continue;
      const cname = str(c.get("name"));
      violations.push(
        kind + " " + name + ", " + nouns[l] + ' "' + (cname != null ? cname : "") + '": image "' +
          image + '" is from denied registry "' + host + '"',
      );
    }
  }
  if (violations.length == 0) return respond('{"accepted":true}');
  return respond('{"accepted":false,"message":' + quote(violations.join("; ")) + "}");
}

function invalid(problem: string): i64 {
  return respond('{"valid":false,"message":' + quote(problem) + "}");
}

/** Settings: null, or an object whose only key is denied_registries, a list of registry hosts
 *  (non-empty, no '/'). The first problem in document order is reported. */
export function validate_settings(ptr: i32, len: i32): i64 {
  const settings = parse(received(ptr, len));
  if (settings == null) return invalid("settings are not valid JSON");
  if (settings.kind == Kind.Null) return respond('{"valid":true}');
  if (settings.kind != Kind.Object) return invalid("settings must be an object");
  for (let k = 0; k < settings.keys.length; k++) {
    if (settings.keys[k] != "denied_registries") {
      return invalid('unknown setting "' + settings.keys[k] + '"');
    }
    const list = settings.items[k];
    if (list.kind != Kind.Array) return invalid("denied_registries must be a list of strings");
    for (let i = 0; i < list.items.length; i++) {
      const host = str(list.items[i]);
      if (host == null) return invalid("denied_registries must be a list of strings");
      if (host.length == 0 || host.includes("/")) {
        return invalid('denied_registries: "' + host + '" is not a registry host');
      }
    }
  }
  return respond('{"valid":true}');
}
