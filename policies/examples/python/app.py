"""team-and-registry in Python: a component of the portcullis:policy world (policies/wit), built
with componentize-py.

Workloads (Pod; Deployment, ReplicaSet, StatefulSet, DaemonSet and Job through
spec.template.spec) must carry the label `team` (non-empty) in their own metadata.labels, and no
container or init container may use an image from a registry listed in the settings'
`denied_registries`. The exact rules and messages are in ../fixtures/README.md.

Every field is looked up by type: a field that is missing or of another type counts as absent, as
in the other languages. Nothing here keeps state between calls: the webhook calls each export in a
fresh instance.
"""

import json

import wit_world

# Workload kinds whose pod spec is at spec.template.spec; a Pod's is at spec.
TEMPLATED = {"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job"}

# Nesting bound, as in the other languages: a reader that recurses once per level would otherwise
# exhaust its stack on deep enough input, a fault instead of an answer.
MAX_DEPTH = 128


def field(value, key):
    """value[key] when value is an object, else None."""
    return value.get(key) if isinstance(value, dict) else None


def text(value):
    """value when it is a string, else None."""
    return value if isinstance(value, str) else None


def too_deep(data):
    """Whether arrays and objects in data nest deeper than MAX_DEPTH."""
    depth, in_string, escaped = 0, False, False
    for c in data:
        if escaped:
            escaped = False
        elif in_string:
            escaped = c == "\\"
            in_string = c != '"'
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif c in "}]":
            depth -= 1
    return False


def registry(image):
    """The registry host of an image reference: the part before the first '/' when it contains
    '.' or ':' or is "localhost", else docker.io."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def respond(accepted, message=None):
    out = {"accepted": accepted}
    if message is not None:
        out["message"] = message
    return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def judge(data):
    if too_deep(data):
        return respond(False, "policy input was malformed: nested deeper than 128 levels")
    try:
        document = json.loads(data)
    except ValueError as e:
        return respond(False, f"policy input was malformed: {e}")
    if not isinstance(document, dict):
        return respond(False, "policy input was malformed: not a JSON object")
    request = document.get("request")
    obj = field(request, "object")
    kind = text(field(field(request, "kind"), "kind"))
    if not isinstance(obj, dict) or (kind != "Pod" and kind not in TEMPLATED):
        return respond(True)
    listed = field(document.get("settings"), "denied_registries")
    denied = {r for r in listed if isinstance(r, str)} if isinstance(listed, list) else set()
    metadata = obj.get("metadata")
    name = text(field(metadata, "name"))
    if name is None:
        name = "<unnamed>"
    violations = []
    if not text(field(field(metadata, "labels"), "team")):
        violations.append(f'{kind} {name}: missing required label "team"')
    spec = obj.get("spec")
    if kind != "Pod":
        spec = field(field(spec, "template"), "spec")
    for key, noun in (("containers", "container"), ("initContainers", "init container")):
        containers = field(spec, key)
        for container in containers if isinstance(containers, list) else []:
            image = text(field(container, "image"))
            if image is None or registry(image) not in denied:
                continue
            cname = text(field(container, "name")) or ""
            violations.append(
                f'{kind} {name}, {noun} "{cname}": image "{image}" '
                f'is from denied registry "{registry(image)}"'
            )
    if not violations:
        return respond(True)
    return respond(False, "; ".join(violations))


class Pairs(list):
    """A JSON object as the list of its (key, value) pairs, in document order."""


def settings_problem(data):
    """The first problem with the settings in document order, or None. Settings are null or an
    object whose only key is denied_registries, a list of registry hosts (non-empty strings
    without '/')."""
    if too_deep(data):
        return "settings are not valid JSON"
    try:
        # Pairs, not a dict: the first problem in document order counts, duplicates included.
        document = json.loads(data, object_pairs_hook=Pairs)
    except ValueError:
        return "settings are not valid JSON"
    if document is None:
        return None
    if not isinstance(document, Pairs):
        return "settings must be an object"
    for key, value in document:
        if key != "denied_registries":
            return f'unknown setting "{key}"'
        if not isinstance(value, list) or any(not isinstance(r, str) for r in value):
            return "denied_registries must be a list of strings"
        for host in value:
            if host == "" or "/" in host:
                return f'denied_registries: "{host}" is not a registry host'
    return None


class WitWorld(wit_world.WitWorld):
    """The exports of the portcullis:policy world."""

    def validate(self, request: str) -> str:
        return judge(request)

    def validate_settings(self, settings: str) -> str:
        problem = settings_problem(settings)
        if problem is None:
            return '{"valid":true}'
        return json.dumps({"valid": False, "message": problem}, ensure_ascii=False)
