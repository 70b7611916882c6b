// team-and-registry in JavaScript: a component of the portcullis:policy world (policies/wit),
// built with componentize-js.
//
// Workloads (Pod; Deployment, ReplicaSet, StatefulSet, DaemonSet and Job through
// spec.template.spec) must carry the label `team` (non-empty) in their own metadata.labels, and no
// container or init container may use an image from a registry listed in the settings'
// `denied_registries`. The exact rules and messages are in ../fixtures/README.md.
//
// Every field is looked up by type: a field that is missing or of another type counts as absent,
// as in the other languages. Nothing here keeps state between calls: the webhook calls each
// export in a fresh instance.

// Workload kinds whose pod spec is at spec.template.spec; a Pod's is at spec.
const TEMPLATED = new Set(["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"]);

// Nesting bound, as in the other languages: a reader that recurses once per level would
// otherwise exhaust its stack on deep enough input, a fault instead of an answer.
const MAX_DEPTH = 128;

const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

// v[key] when v is an object (own keys only), else undefined.
const field = (v, key) => (isObject(v) && Object.hasOwn(v, key) ? v[key] : undefined);

const text = (v) => (typeof v === "string" ? v : undefined);

// Whether arrays and objects in data nest deeper than MAX_DEPTH.
function tooDeep(data) {
  let depth = 0;
  let inString = false;
  let escaped = false;
  for (const c of data) {
    if (escaped) {
      escaped = false;
    } else if (inString) {
      escaped = c === "\\";
      inString = c !== '"';
    } else if (c === '"') {
      inString = true;
    } else if (c === "{" || c === "[") {
      if (++depth > MAX_DEPTH) return true;
    } else if (c === "}" || c === "]") {
      depth--;
    }
  }
  return false;
}

// The registry host of an image reference: the part before the first '/' when it contains '.'
// or ':' or is "localhost", else docker.io.
function registry(image) {
  const slash = image.indexOf("/");
  if (slash < 0) return "docker.io";
  const first = image.slice(0, slash);
  return first.includes(".") || first.includes(":") || first === "localhost" ? first : "docker.io";
}

function judge(data) {
  if (tooDeep(data)) {
    return { accepted: false, message: "policy input was malformed: nested deeper than 128 levels" };
  }
  let document;
  try {
    document = JSON.parse(data);
  } catch (e) {
    return { accepted: false, message: `policy input was malformed: ${e.message}` };
  }
  if (!isObject(document)) {
    return { accepted: false, message: "policy input was malformed: not a JSON object" };
  }
  const request = field(document, "request");
  const object = field(request, "object");
  const kind = text(field(field(request, "kind"), "kind"));
  if (!isObject(object) || (kind !== "Pod" && !TEMPLATED.has(kind))) {
    return { accepted: true };
  }
  const listed = field(field(document, "settings"), "denied_registries");
  const denied = new Set(Array.isArray(listed) ? listed.filter((r) => typeof r === "string") : []);
  const metadata = field(object, "metadata");
  const name = text(field(metadata, "name")) ?? "<unnamed>";
  const violations = [];
  if (!text(field(field(metadata, "labels"), "team"))) {
    violations.push(`${kind} ${name}: missing required label "team"`);
  }
  let spec = field(object, "spec");
  if (kind !== "Pod") spec = field(field(spec, "template"), "spec");
  for (const [key, noun] of [["containers", "container"], ["initContainers", "init container"]]) {
    const containers = field(spec, key);
    for (const container of Array.isArray(containers) ? containers : []) {
      const image = text(field(container, "image"));
      if (image === undefined || !denied.has(registry(image))) continue;
      const cname = text(field(container, "name")) ?? "";
      violations.push(
        `${kind} ${name}, ${noun} "${cname}": image "${image}" is from denied registry "${registry(image)}"`,
      );
    }
  }
  return violations.length === 0 ? { accepted: true } : { accepted: false, message: violations.join("; ") };
}

// The first problem with the settings in document order, or undefined. Settings are null or an
// object whose only key is denied_registries, a list of registry hosts (non-empty strings
// without '/'). JSON.parse keeps the first occurrence's position for a repeated key but the
// last value, so the order of checks is that of the keys as parsed.
function settingsProblem(data) {
  let settings;
  try {
    if (tooDeep(data)) return "settings are not valid JSON";
    settings = JSON.parse(data);
  } catch {
    return "settings are not valid JSON";
  }
  if (settings === null) return undefined;
  if (!isObject(settings)) return "settings must be an object";
  for (const [key, value] of Object.entries(settings)) {
    if (key !== "denied_registries") return `unknown setting "${key}"`;
    if (!Array.isArray(value) || value.some((r) => typeof r !== "string")) {
      return "denied_registries must be a list of strings";
    }
    for (const host of value) {
      if (host === "" || host.includes("/")) return `denied_registries: "${host}" is not a registry host`;
    }
  }
  return undefined;
}

/** The `validate` export of the portcullis:policy world. */
export function validate(request) {
  return JSON.stringify(judge(request));
}

/** The `validate-settings` export of the portcullis:policy world. */
export function validateSettings(settings) {
  const problem = settingsProblem(settings);
  return JSON.stringify(problem === undefined ? { valid: true } : { valid: false, message: problem });
}
