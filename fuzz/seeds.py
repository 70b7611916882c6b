#!/usr/bin/env python3
"""Regenerates fuzz/seeds/ from the repository's fixtures (run by `scripts/fuzz seeds`).

Each fuzz target gets inputs in its own format, taken from the fixtures the tests already use:

  review_decode    the AdmissionReviews in tests/fixtures/ and examples/, the recorded API-server
                   reviews in fuzz/seeds/review_decode/apiserver-*.json (kept as committed), and
                   policy fixtures wrapped into reviews much as the SDK harness builds them
  abi_output       the outputs the policy fixtures expect, as ABI v1 JSON
  config_yaml      policies/default.yaml, examples/*.yaml, and one configuration per policy
                   fixture with settings
  image_reference  every container image named in the fixtures, and `pattern\\nimage` pairs
                   from exempt_images settings
  quantity         every resource quantity in the fixtures, and `a/b` ratio pairs

Generated files are replaced on every run; hand-written seeds (named hand-*) and the recorded
API-server reviews are kept. Nothing here is needed to run the fuzzers.
"""

import glob
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
KEEP = ("hand-", "apiserver-")


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    if name is None:
        name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(SEEDS, target, name), "wb") as f:
        f.write(data)


def clear(target):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    for name in os.listdir(d):
        if not name.startswith(KEEP):
            os.remove(os.path.join(d, name))


def walk(value):
    """Yields every (key, value) pair in a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


def fixtures():
    for path in sorted(glob.glob(os.path.join(ROOT, "policies", "*", "fixtures", "*.json"))):
        with open(path) as f:
            yield path, json.load(f)


def review_of(fixture, uid):
    """The AdmissionReview a policy fixture stands for (see the SDK's request_json_from_fixture)."""
    obj = fixture["object"]
    group, _, version = obj.get("apiVersion", "v1").rpartition("/")
    kind = obj.get("kind", "")
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": kind.lower() + "s"}
    meta = obj.get("metadata", {})
    operation = fixture.get("operation", "CREATE")
    request = {
        "uid": uid,
        "kind": gvk,
        "requestKind": gvk,
        "resource": gvr,
        "requestResource": gvr,
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace", ""),
        "operation": operation,
        "userInfo": {"username": "fuzz", "groups": ["system:authenticated"]},
        "object": None if operation == "DELETE" else obj,
        "oldObject": obj if operation in ("UPDATE", "DELETE") else None,
        "dryRun": False,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def main():
    loaded = list(fixtures())
    for target in ("review_decode", "abi_output", "config_yaml", "image_reference", "quantity"):
        clear(target)

    # review_decode: the repository's reviews as they are, and wrapped fixtures, one per kind
    # and operation (more adds size, not shapes).
    for path in glob.glob(os.path.join(ROOT, "tests", "fixtures", "*.review.json")) + glob.glob(
        os.path.join(ROOT, "examples", "*.json")
    ):
        with open(path, "rb") as f:
            write("review_decode", os.path.basename(path), f.read())
    seen = set()
    for n, (path, fixture) in enumerate(loaded):
        policy = path.split(os.sep)[-3]
        key = (fixture.get("operation", "CREATE"), fixture["object"].get("kind"))
        if key in seen:
            continue
        seen.add(key)
        review = review_of(fixture, "00000000-0000-0000-0000-%012d" % n)
        write("review_decode", f"{policy}-{os.path.basename(path)}", json.dumps(review, indent=1))

    # abi_output: what each fixture expects, written as the policy would.
    for _, fixture in loaded:
        expect = fixture["expect"]
        out = {"accepted": expect["accepted"]}
        if "message_contains" in expect:
            out["message"] = expect["message_contains"]
        if "mutated_object" in expect:
            out["mutated_object"] = expect["mutated_object"]
        if "warnings_contain" in expect:
            out["warnings"] = expect["warnings_contain"]
        write("abi_output", None, json.dumps(out))

    # config_yaml: the shipped configurations, and each fixture's settings in a configuration.
    for path in [os.path.join(ROOT, "policies", "default.yaml")] + sorted(
        glob.glob(os.path.join(ROOT, "examples", "*.yaml"))
    ):
        with open(path, "rb") as f:
            write("config_yaml", os.path.basename(path), f.read())
    for path, fixture in loaded:
        if "settings" in fixture:
            policy = path.split(os.sep)[-3]
            config = {"policies": [{"name": policy, "module": "p.wasm", "settings": fixture["settings"]}]}
            write("config_yaml", None, json.dumps(config))

    # image_reference and quantity: the strings the policies parse.
    documents = [fixture for _, fixture in loaded]
    for path in glob.glob(os.path.join(SEEDS, "review_decode", "apiserver-*.json")):
        with open(path) as f:
            documents.append(json.load(f))
    images, quantities = set(), set()
    for document in documents:
        for key, value in walk(document):
            if key == "image" and isinstance(value, str):
                images.add(value)
            elif key in ("requests", "limits", "default", "default_request", "max", "min") and isinstance(
                value, dict
            ):
                quantities.update(str(v) for v in value.values() if isinstance(v, (str, int, float)))
            elif key == "exempt_images" and isinstance(value, list):
                for pattern in value:
                    for image in sorted(images) or ["busybox"]:
                        if image.split("/")[0] in pattern or "*" in pattern:
                            images.add(f"{pattern}\n{image}")
                            break
    for image in sorted(images):
        write("image_reference", None, image)
    ordered = sorted(quantities)
    for q in ordered:
        write("quantity", None, q)
    for a, b in zip(ordered, ordered[1:] + ordered[:1]):
        write("quantity", None, f"{a}/{b}")

    for target in sorted(os.listdir(SEEDS)):
        files = os.listdir(os.path.join(SEEDS, target))
        size = sum(os.path.getsize(os.path.join(SEEDS, target, f)) for f in files)
        print(f"{target:16} {len(files):4} seeds {size:8} bytes")


if __name__ == "__main__":
    sys.exit(main())
