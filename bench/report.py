"""Summarise bench/load.sh's oha runs: a table, the default/empty ratios, the targets.

Usage: python3 bench/report.py OUT_DIR   (the directory of <config>-<route>-<proto>-c<N>.json)

Exits 1 when any response was not a 200 or any request failed; missed latency targets are
reported, not failed, because a noisy two-core machine is not a verdict on the code.
"""

import json
import pathlib
import sys

# Targets from the brief: the full set answers under 1 ms at p99 with one client, and costs at
# most 1.5x the empty set's p50.
P99_TARGET_MS = 1.0
P50_RATIO_TARGET = 1.5


def load(path):
    data = json.loads(path.read_text())
    config, route, proto, c = path.stem.split("-")
    summary = data["summary"]
    percentiles = data["latencyPercentiles"]
    return {
        "config": config,
        "route": route,
        "proto": proto,
        "c": int(c.removeprefix("c")),
        "rps": summary["requestsPerSec"],
        "p50": percentiles["p50"] * 1e3,
        "p99": percentiles["p99"] * 1e3,
        "statuses": data.get("statusCodeDistribution", {}),
        "errors": data.get("errorDistribution", {}),
    }


def main(out_dir):
    runs = [load(p) for p in sorted(pathlib.Path(out_dir).glob("*-*-*-c*.json"))]
    if not runs:
        sys.exit(f"no oha results in {out_dir}")
    key = lambda r: (r["route"], r["proto"], r["c"])
    runs.sort(key=lambda r: (key(r), r["config"]))

    failed = False
    print(f"{'config':<8} {'route':<9} {'proto':<7} {'c':>3} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  responses")
    for r in runs:
        total = sum(r["statuses"].values())
        bad = {s: n for s, n in r["statuses"].items() if s != "200"}
        ok = total > 0 and not bad and not r["errors"]
        failed |= not ok
        note = f"{total} x 200" if ok else f"statuses {r['statuses']} errors {r['errors']}"
        print(
            f"{r['config']:<8} {r['route']:<9} {r['proto']:<7} {r['c']:>3} "
            f"{r['rps']:>9.0f} {r['p50']:>8.3f} {r['p99']:>8.3f}  {note}"
        )

    print()
    print("default / empty (same route, protocol and concurrency, one run):")
    print(f"{'route':<9} {'proto':<7} {'c':>3} {'p50 ratio':>10} {'rps ratio':>10} {'p50 +ms':>8}  p50 within {P50_RATIO_TARGET}x")
    by_key = {(r["config"],) + key(r): r for r in runs}
    for r in runs:
        if r["config"] != "default" or ("empty",) + key(r) not in by_key:
            continue
        e = by_key[("empty",) + key(r)]
        ratio = r["p50"] / e["p50"]
        verdict = "yes" if ratio <= P50_RATIO_TARGET else "NO"
        print(
            f"{r['route']:<9} {r['proto']:<7} {r['c']:>3} {ratio:>10.2f} "
            f"{r['rps'] / e['rps']:>10.2f} {r['p50'] - e['p50']:>8.3f}  {verdict}"
        )

    print()
    for r in runs:
        if r["config"] == "default" and r["c"] == 1:
            verdict = "met" if r["p99"] < P99_TARGET_MS else "MISSED"
            print(
                f"target p99 < {P99_TARGET_MS} ms at c=1, default set, "
                f"{r['route']} {r['proto']}: {r['p99']:.3f} ms, {verdict}"
            )
    if failed:
        sys.exit("some responses were not 200 or some requests failed")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
