"""Reliability numbers for BENCHMARKS.md "Reliability": cases tried / handled / lost (lost must be 0).

Three parts, each on tiny synthetic runs built here (CPU, seconds each):

* fuzz: the corruption fuzzer of tests/test_run_fuzz.py with many more seeded bit flips, every case through
  all four entry points (loader, ``hqgnn check`` in-process, ``HQGNN.load``, the service's /admin/reload);
* crash: kill -9 at seeded durability events of train / overwrite / resume / save (tests/test_crash.py's
  harness), then the directory must be the old run or the new one and finishing it must give the
  uninterrupted result;
* serve: N mixed requests (ordinary, huge, chunked, malformed, slow, deep JSON, huge k, unknown ids) at C
  concurrent against a real ``hqgnn serve`` (uvicorn), /health timed by a separate process, RSS sampled.

    PYTHONPATH=src python benchmarks/reliability.py --flips 60 --crash-trials 80 --requests 5000 \\
        --concurrency 32 --out benchmarks/results/reliability.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def fuzz(root: Path, flips: int) -> dict:
    import test_run_fuzz as tf
    from reliability_helpers import build_cases

    runs = tf.Runs(root / "fuzz")
    cases = build_cases(tf.BASES, n_flips=flips, seed=2024)
    outcomes: Counter[str] = Counter()
    per_checker: dict[str, Counter[str]] = {c: Counter() for c in tf.CHECKERS}
    lost = []
    t0 = time.perf_counter()
    for case in cases:
        for checker in tf.CHECKERS:
            got = tf.outcome(runs, case, checker)
            outcomes[got] += 1
            per_checker[checker][got] += 1
            if got not in ("error", "correct"):
                lost.append(f"{case.name} via {checker}: {got}")
    runs.client.close()
    tried = sum(outcomes.values())
    return {"cases": len(cases), "checks": tried, "refused_one_line": outcomes["error"],
            "correct_answer": outcomes["correct"], "lost": tried - outcomes["error"] - outcomes["correct"],
            "lost_examples": lost[:20], "by_checker": {k: dict(v) for k, v in per_checker.items()},
            "seconds": round(time.perf_counter() - t0, 1)}


def crash(root: Path, trials: int) -> dict:
    import test_crash as tc

    world = tc.World(root / "crash")
    counts: Counter[str] = Counter()
    lost = []
    t0 = time.perf_counter()
    for trial in range(trials):
        op = tc.OPS[trial % len(tc.OPS)]
        rng = random.Random(5000 + trial)
        kill_at = rng.randint(1, world.events[op])
        d = world.fresh(op, f"t{trial}")
        world.spawn(op, d, kill_at=kill_at)
        after = tc.state_of(d) if d.exists() else None
        old, new = tc.before_state(world, op), world.want[op]
        if after not in (old, new):
            lost.append(f"{op} killed at {kill_at}: a mix")
            continue
        counts["old run" if after == old and old is not None else "new run" if after == new else "no run"] += 1
        if after != new:
            world.spawn("finish-new" if op == "new" and (d / "checkpoint.safetensors").exists() else op, d)
        if tc.state_of(d) != new:
            lost.append(f"{op} killed at {kill_at}: finishing differs from the uninterrupted run")
    return {"trials": trials, "events_per_op": world.events, "left_after_kill": dict(counts),
            "finished_equal_to_uninterrupted": trials - len(lost), "lost": len(lost), "lost_examples": lost[:20],
            "seconds": round(time.perf_counter() - t0, 1)}


def serve(root: Path, requests: int, concurrency: int) -> dict:
    from reliability_helpers import abuse, start_server, tiny_config

    from hqgnn.run import load_run
    from hqgnn.train.pipeline import run_training

    d = root / "serve"
    run_training(tiny_config(bits=1), d, progress=False)
    run = load_run(d)
    proc, url = start_server(d, root / "serve.log")
    try:
        stats = abuse(url, proc.pid, n=requests, concurrency=concurrency, users=run.user_ids.tolist(),
                      items=run.item_ids.tolist(), seed=24)
    finally:
        proc.terminate()
        proc.wait(30)
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flips", type=int, default=60, help="seeded single-bit flips per run file and base run")
    ap.add_argument("--crash-trials", type=int, default=80)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "reliability.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hqgnn-reliability-") as tmp:
        root = Path(tmp)
        result = {
            "command": "PYTHONPATH=src python benchmarks/reliability.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()}, {len(__import__('os').sched_getaffinity(0))} cores",
            "fuzz": fuzz(root, args.flips),
            "crash": crash(root, args.crash_trials),
            "serve": serve(root, args.requests, args.concurrency),
        }
    result["lost_total"] = result["fuzz"]["lost"] + result["crash"]["lost"] + result["serve"]["lost"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: (v if not isinstance(v, dict) else {kk: vv for kk, vv in v.items() if kk in (
        "cases", "checks", "trials", "requests", "lost", "server_5xx", "health_p99_ms", "rss_max_mb")})
        for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
