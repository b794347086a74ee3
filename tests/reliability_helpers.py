"""Shared by the reliability tests and benchmarks/reliability.py: tiny runs, run-file mutations (the corruption
fuzzer's cases) and the oracle that says whether a damaged run was handled (one error line, or the right answer)."""

from __future__ import annotations

import json
import random
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hqgnn.config import RunConfig

RUN_FILES = ("config.toml", "metrics.json", "model.safetensors", "tables.safetensors", "ids.npz", "seen.npz",
             "curve.png", "manifest.json", "checkpoint.safetensors", "best.safetensors")


def tiny_config(seed: int = 2020, bits: int = 0, data_seed: int = 2020, **quant: Any) -> RunConfig:
    cfg = RunConfig()
    cfg.data.synthetic_users, cfg.data.synthetic_items, cfg.data.seed = 60, 40, data_seed
    cfg.model.dim, cfg.model.layers = 8, 1
    cfg.train.epochs, cfg.train.eval_every, cfg.train.batch_size, cfg.train.lr = 2, 1, 256, 5e-3
    cfg.train.device, cfg.train.seed = "cpu", seed
    if bits:
        cfg.quant.bits, cfg.quant.estimator = bits, "ste"
    for k, v in quant.items():
        setattr(cfg.quant, k, v)
    return cfg.validate()


# -- mutations ------------------------------------------------------------------------------------
@dataclass
class Case:
    """One damaged copy of a base run: ``apply(run_dir, other_dir)`` damages ``run_dir`` in place."""

    name: str
    base: str  # which base run it damages
    apply: Callable[[Path, Path], None]
    old_format: bool = False  # the manifest is removed first (a run written before manifests)


def _truncate(name: str, frac: float) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        p = d / name
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * frac)] if frac < 1 else data[:-1])
    return f


def _flip(name: str, seed: int, n_bits: int) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        p = d / name
        data = bytearray(p.read_bytes())
        rng = random.Random(seed)
        for _ in range(n_bits):
            pos = rng.randrange(len(data))
            data[pos] ^= 1 << rng.randrange(8)
        p.write_bytes(bytes(data))
    return f


def _swap(name: str) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        shutil.copyfile(other / name, d / name)
    return f


def _delete(name: str) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        (d / name).unlink()
    return f


def _npz_without(name: str, key: str) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        with np.load(d / name, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files if k != key}
        with open(d / name, "wb") as fh:
            np.savez(fh, **arrays)
    return f


def _npz_edit(name: str, edit: Callable[[dict[str, np.ndarray]], None]) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        with np.load(d / name, allow_pickle=False) as z:
            arrays = {k: z[k].copy() for k in z.files}
        edit(arrays)
        with open(d / name, "wb") as fh:
            np.savez(fh, **arrays)
    return f


def _tables_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        from safetensors.torch import load_file, save_file

        t = load_file(str(d / "tables.safetensors"))
        edit(t)
        save_file({k: v.contiguous() for k, v in t.items()}, str(d / "tables.safetensors"))
    return f


def _toml_edit(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        import tomli_w

        raw = tomllib.loads((d / "config.toml").read_text())
        edit(raw)
        (d / "config.toml").write_text(tomli_w.dumps(raw))
    return f


def _json_edit(name: str, edit: Callable[[dict[str, Any]], None]) -> Callable[[Path, Path], None]:
    def f(d: Path, other: Path) -> None:
        obj = json.loads((d / name).read_text())
        edit(obj)
        (d / name).write_text(json.dumps(obj))
    return f


def structural_edits(quantized: bool) -> list[tuple[str, Callable[[Path, Path], None]]]:
    """Deleted sections and inconsistent but well-formed files: what the cross-file checks must catch."""
    import torch

    edits: list[tuple[str, Callable[[Path, Path], None]]] = [
        ("ids: user_ids missing", _npz_without("ids.npz", "user_ids")),
        ("ids: item_ids missing", _npz_without("ids.npz", "item_ids")),
        ("ids: short user map", _npz_edit("ids.npz", lambda a: a.update(user_ids=a["user_ids"][:-3]))),
        ("ids: short item map", _npz_edit("ids.npz", lambda a: a.update(item_ids=a["item_ids"][:-1]))),
        ("ids: repeated user id", _npz_edit("ids.npz", lambda a: a["user_ids"].__setitem__(1, a["user_ids"][0]))),
        ("ids: 2-d item ids", _npz_edit("ids.npz", lambda a: a.update(item_ids=a["item_ids"].reshape(1, -1)))),
        ("ids: float ids", _npz_edit("ids.npz", lambda a: a.update(user_ids=a["user_ids"].astype(np.float64)))),
        ("seen: indices missing", _npz_without("seen.npz", "indices")),
        ("seen: item out of range", _npz_edit("seen.npz", lambda a: a["indices"].__setitem__(0, 10**6))),
        ("seen: negative item", _npz_edit("seen.npz", lambda a: a["indices"].__setitem__(0, -1))),
        ("seen: unsorted row", _npz_edit("seen.npz", lambda a: a["indices"].__setitem__(
            slice(a["indptr"][0], a["indptr"][0] + 2), a["indices"][a["indptr"][0]: a["indptr"][0] + 2][::-1].copy()))),
        ("seen: short indptr", _npz_edit("seen.npz", lambda a: a.update(indptr=a["indptr"][:-2]))),
        ("seen: wrong shape", _npz_edit("seen.npz", lambda a: a.update(shape=a["shape"] + 1))),
        ("seen: decreasing indptr", _npz_edit("seen.npz", lambda a: a["indptr"].__setitem__(2, a["indptr"][1] - 1))),
        ("tables: item_emb missing", _tables_edit(lambda t: t.pop("item_emb"))),
        ("tables: user_emb short", _tables_edit(lambda t: t.update(user_emb=t["user_emb"][:-1]))),
        ("tables: item_emb short", _tables_edit(lambda t: t.update(item_emb=t["item_emb"][:-2]))),
        ("tables: NaN in user_emb", _tables_edit(lambda t: t["user_emb"].__setitem__((0, 0), float("nan")))),
        ("tables: inf in item_emb", _tables_edit(lambda t: t["item_emb"].__setitem__((1, 0), float("inf")))),
        ("tables: narrower items", _tables_edit(lambda t: t.update(item_emb=t["item_emb"][:, :-1].contiguous()))),
        ("config: [model] deleted", _toml_edit(lambda c: c.pop("model"))),
        ("config: bad value", _toml_edit(lambda c: c["train"].update(lr=-1.0))),
        ("config: unknown key", _toml_edit(lambda c: c["train"].update(learning_rate=1.0))),
        ("metrics: not an object", lambda d, o: (d / "metrics.json").write_text("[1, 2]")),
        ("metrics: invalid JSON", lambda d, o: (d / "metrics.json").write_text('{"test": ')),
    ]
    if quantized:
        edits += [
            ("config: [quant] deleted (served as float?)", _toml_edit(lambda c: c.pop("quant"))),
            ("config: bits changed", _toml_edit(lambda c: c["quant"].update(bits=4))),
            ("config: float queries claimed", _toml_edit(lambda c: c["quant"].update(user_bits=0))),
            ("tables: item_codes missing", _tables_edit(lambda t: t.pop("item_codes"))),
            ("tables: user_scale missing", _tables_edit(lambda t: t.pop("user_scale"))),
            ("tables: item_codes short", _tables_edit(lambda t: t.update(item_codes=t["item_codes"][:-1]))),
            ("tables: codes out of range", _tables_edit(lambda t: t["item_codes"].__setitem__((0, 0), 100))),
            ("tables: float codes", _tables_edit(lambda t: t.update(item_codes=t["item_codes"].float()))),
            ("tables: NaN scale", _tables_edit(lambda t: t["item_scale"].view(-1).__setitem__(0, float("nan")))),
            ("tables: extra user_query", _tables_edit(lambda t: t.update(user_query=t["user_emb"].clone()))),
        ]
    else:
        edits += [
            ("config: quant bits claimed", _toml_edit(lambda c: c["quant"].update(bits=1, estimator="ste"))),
            ("tables: stray item_codes", _tables_edit(lambda t: t.update(
                item_codes=torch.ones_like(t["item_emb"], dtype=torch.int8)))),
        ]
    return edits


def manifest_edits() -> list[tuple[str, Callable[[Path, Path], None]]]:
    def files_pop(name: str) -> Callable[[dict[str, Any]], None]:
        return lambda m: m["files"].pop(name)

    return [
        ("manifest: invalid JSON", lambda d, o: (d / "manifest.json").write_text("{")),
        ("manifest: empty", lambda d, o: (d / "manifest.json").write_text("")),
        ("manifest: a list", lambda d, o: (d / "manifest.json").write_text("[]")),
        ("manifest: newer version", _json_edit("manifest.json", lambda m: m.update(format_version=99))),
        ("manifest: version a string", _json_edit("manifest.json", lambda m: m.update(format_version="1"))),
        ("manifest: files deleted", _json_edit("manifest.json", lambda m: m.pop("files"))),
        ("manifest: ids entry deleted", _json_edit("manifest.json", files_pop("ids.npz"))),
        ("manifest: seen entry deleted", _json_edit("manifest.json", files_pop("seen.npz"))),
        ("manifest: code format deleted", _json_edit("manifest.json", lambda m: m.pop("code_format"))),
        ("manifest: tables deleted", _json_edit("manifest.json", lambda m: m.pop("tables"))),
        ("manifest: wrong user count", _json_edit("manifest.json", lambda m: m.update(users=m["users"] + 1))),
        ("manifest: wrong size", _json_edit("manifest.json", lambda m: m["files"]["ids.npz"].update(size=1))),
        ("manifest: wrong format name", _json_edit("manifest.json", lambda m: m.update(format="other"))),
        ("manifest: code format changed", _json_edit("manifest.json", lambda m: m["code_format"].update(bits=3))),
    ]


def build_cases(bases: dict[str, str], n_flips: int, seed: int = 0) -> list[Case]:
    """Every mutation of every base run: ``bases`` maps a base name to its "other run" (swaps come from it).

    Per base and file: truncations (to 0, half, all but one byte), ``n_flips`` single-bit flips and one
    8-bit flip at seeded positions, a swap with the other run's file, a deletion; then the manifest and
    structural edits, the latter also on the old format (no manifest) where the cross-file checks alone
    must catch them.
    """
    rng = random.Random(seed)
    cases: list[Case] = []
    for base in bases:
        quantized = base.startswith("q")
        for name in RUN_FILES:
            for frac in (0.0, 0.5, 1.0):
                cases.append(Case(f"{base}/{name}: truncated to {'all but 1 byte' if frac == 1 else frac}", base,
                                  _truncate(name, frac)))
            for i in range(n_flips):
                cases.append(Case(f"{base}/{name}: bit flip #{i}", base, _flip(name, rng.randrange(1 << 30), 1)))
            cases.append(Case(f"{base}/{name}: 8 bit flips", base, _flip(name, rng.randrange(1 << 30), 8)))
            cases.append(Case(f"{base}/{name}: swapped with the other run's", base, _swap(name)))
            cases.append(Case(f"{base}/{name}: deleted", base, _delete(name)))
        for label, fn in manifest_edits():
            cases.append(Case(f"{base}/{label}", base, fn))
        for label, fn in structural_edits(quantized):
            cases.append(Case(f"{base}/{label}", base, fn))
            cases.append(Case(f"{base}/old format, {label}", base, fn, old_format=True))
    return cases


def make_old_format(d: Path) -> None:
    """A run as written before manifests: no manifest.json, no run_format in metrics.json."""
    (d / "manifest.json").unlink(missing_ok=True)
    metrics = json.loads((d / "metrics.json").read_text())
    metrics.pop("run_format", None)
    (d / "metrics.json").write_text(json.dumps(metrics))


def answer_of(run_dir: Path, users: int = 5, k: int = 5) -> list[Any]:
    """What the run serves: top-k (item id, score) of its first users, through the serving Recommender."""
    from hqgnn.recommender import Recommender
    from hqgnn.run import load_run

    run = load_run(run_dir)
    rec = Recommender(run, renumber_items=True)
    scores, items = rec.recommend(np.arange(min(users, run.n_users)), k)
    ids = rec.run.item_ids
    return [[(ids[i].item(), float(s)) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores, items)]


def one_line(text: str) -> bool:
    return "\n" not in text.strip() and "Traceback" not in text and bool(text.strip())


def summarize(outcomes: list[str]) -> dict[str, int]:
    return {"tried": len(outcomes), "refused_one_line": outcomes.count("error"),
            "correct_answer": outcomes.count("correct"), "lost": sum(o not in ("error", "correct") for o in outcomes)}



# -- service abuse --------------------------------------------------------------------------------
def start_server(run_dir: Path, log_path: Path, *extra: str, api_key: str | None = None) -> tuple[Any, str]:
    """``python -m hqgnn serve RUN`` on a free loopback port; returns (the process, its base URL) once healthy."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    src = Path(__file__).resolve().parents[1] / "src"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), *sys.path]), PYTHONUNBUFFERED="1")
    env.pop("HQGNN_API_KEY", None)
    if api_key:
        env["HQGNN_API_KEY"] = api_key
    log = open(log_path, "wb")  # noqa: SIM115  the server process writes to it for its whole life
    proc = subprocess.Popen([sys.executable, "-m", "hqgnn", "serve", str(run_dir), "--port", str(port), *extra],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=1.0, trust_env=False).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not become healthy")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# kind -> the statuses that are right for it (anything else, and every 5xx, is "lost")
ABUSE_EXPECT: dict[str, tuple[int, ...]] = {
    "recommend": (200,), "batch": (200,), "similar": (200,), "unknown_user": (404,), "huge_k": (422,),
    "huge_body": (413,), "chunked_huge": (413,), "malformed_json": (422,),
    "wrong_types": (422,), "big_invalid": (422,), "slow_body": (200,), "deep_json": (400, 422, 413),
}


def abuse_mix(n: int, seed: int) -> list[str]:
    """``n`` request kinds: mostly ordinary requests with every kind of bad or slow one mixed in (seeded)."""
    weights = {"recommend": 40, "batch": 10, "similar": 8, "unknown_user": 5, "huge_k": 4, "huge_body": 4,
               "chunked_huge": 4, "malformed_json": 6, "wrong_types": 5, "big_invalid": 4,
               "slow_body": 5, "deep_json": 4}
    rng = random.Random(seed)
    kinds = list(weights)
    return rng.choices(kinds, weights=[weights[k] for k in kinds], k=n)


_HUGE: dict[Any, bytes] = {}


def _huge_body(user: Any) -> bytes:
    if user not in _HUGE:  # built once: the client's own event loop must not stall on json.dumps
        _HUGE[user] = json.dumps({"users": [user] * 400_000}).encode()
    return _HUGE[user]


async def _send(client: Any, kind: str, users: list[Any], items: list[Any], rng: random.Random) -> int:
    import asyncio

    hdr = {"Content-Type": "application/json"}
    if kind == "recommend":
        return (await client.get("/recommend", params={"user": rng.choice(users), "k": 10})).status_code
    if kind == "batch":
        body = {"users": rng.sample(users, min(32, len(users))), "k": 20}
        return (await client.post("/recommend/batch", json=body)).status_code
    if kind == "similar":
        return (await client.get("/similar-items", params={"item": rng.choice(items), "k": 5})).status_code
    if kind == "unknown_user":
        return (await client.get("/recommend", params={"user": "no-such-user-" + "x" * 5000})).status_code
    if kind == "huge_k":
        return (await client.get("/recommend", params={"user": users[0], "k": 10**9})).status_code
    if kind == "huge_body":  # 3 MB of valid-looking JSON
        body = _huge_body(users[0])
        return (await client.post("/recommend/batch", content=body, headers=hdr)).status_code
    if kind == "chunked_huge":  # chunked transfer, no Content-Length, 4 MB
        async def gen2() -> Any:
            for _ in range(64):
                yield b"[" * 65536
        return (await client.post("/recommend/batch", content=gen2(), headers=hdr)).status_code
    if kind == "malformed_json":
        return (await client.post("/recommend/batch", content=b'{"users": [1, 2', headers=hdr)).status_code
    if kind == "wrong_types":
        return (await client.post("/recommend/batch", json={"users": [True, 3.5], "k": "many"})).status_code
    if kind == "big_invalid":  # 900 kB under the limit, invalid: the 422 must not echo it
        return (await client.post("/recommend/batch", json={"users": [], "pad": "y" * 900_000})).status_code
    if kind == "slow_body":  # a valid body trickling in over ~0.3 s
        payload = json.dumps({"users": users[:4], "k": 5}).encode()

        async def slow() -> Any:
            for i in range(0, len(payload), max(1, len(payload) // 6)):
                await asyncio.sleep(0.05)
                yield payload[i:i + max(1, len(payload) // 6)]
        return (await client.post("/recommend/batch", content=slow(), headers=hdr)).status_code
    if kind == "deep_json":  # deeply nested JSON (a recursion bomb for naive parsers)
        return (await client.post("/recommend/batch", content=b"[" * 50_000 + b"]" * 50_000, headers=hdr)).status_code
    raise ValueError(kind)


def abuse(url: str, pid: int, n: int, concurrency: int, users: list[Any], items: list[Any],
          seed: int = 0) -> dict[str, Any]:
    """``n`` mixed requests, ``concurrency`` at a time, against a running server, while a probe times /health
    every 20 ms and the server's RSS is sampled. Returns counts per kind and status, /health percentiles, memory."""
    import asyncio
    import time

    import httpx

    kinds = abuse_mix(n, seed)
    statuses: dict[str, dict[str, int]] = {}
    lost: list[str] = []
    health: list[float] = []
    rss = [rss_bytes(pid)]

    async def run() -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        for k in kinds:
            queue.put_nowait(k)
        done = asyncio.Event()

        async def worker(wid: int) -> None:
            rng = random.Random(seed * 1000 + wid)
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits, trust_env=False) as c:
                while not queue.empty():
                    kind = queue.get_nowait()
                    try:
                        code = await _send(c, kind, users, items, rng)
                        label = str(code)
                    except httpx.TransportError as exc:  # the server closed a refused upload early
                        code, label = -1, f"closed:{type(exc).__name__}"
                    statuses.setdefault(kind, {}).setdefault(label, 0)
                    statuses[kind][label] += 1
                    if code not in ABUSE_EXPECT[kind] and not (code == -1 and kind in (
                            "huge_body", "chunked_huge", "deep_json")):
                        lost.append(f"{kind}: {label}")

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        done.set()

    import subprocess
    import sys
    import threading

    # /health is timed by a separate process: the load generator's GIL and event loop cannot delay it
    probe_code = (
        "import json, sys, time, httpx\n"
        "lat, bad = [], 0\n"
        "with httpx.Client(base_url=sys.argv[1], timeout=10.0, trust_env=False) as c:\n"
        "    while not sys.stdin.closed:\n"
        "        t = time.perf_counter(); r = c.get('/health'); lat.append(time.perf_counter() - t)\n"
        "        bad += r.status_code != 200\n"
        "        import select\n"
        "        if select.select([sys.stdin], [], [], 0.02)[0]: break\n"
        "print(json.dumps({'lat': lat, 'bad': bad}))\n")
    prober = subprocess.Popen([sys.executable, "-c", probe_code, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    for k in set(kinds) & {"huge_body"}:
        _huge_body(users[0])
    stop_rss = threading.Event()

    def sample_rss() -> None:
        while not stop_rss.is_set():
            rss.append(rss_bytes(pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    try:
        asyncio.run(run())
    finally:
        wall = time.perf_counter() - t0
        stop_rss.set()
        sampler.join(10)
        out, _ = prober.communicate(input="stop\n", timeout=60)
    probe = json.loads(out)
    health.extend(probe["lat"])
    lost.extend(["health: not 200"] * probe["bad"])
    h = np.sort(np.asarray(health)) if health else np.zeros(1)
    return {
        "requests": n, "concurrency": concurrency, "seconds": round(wall, 2),
        "by_kind": statuses, "lost": len(lost), "lost_examples": lost[:10],
        "server_5xx": sum(v for s in statuses.values() for k, v in s.items() if k.startswith("5")),
        "health_probes": len(health), "health_p50_ms": round(float(np.percentile(h, 50)) * 1000, 2),
        "health_p99_ms": round(float(np.percentile(h, 99)) * 1000, 2),
        "health_max_ms": round(float(h.max()) * 1000, 2),
        "rss_start_mb": round(rss[0] / 2**20, 1), "rss_max_mb": round(max(rss) / 2**20, 1),
        "rss_end_mb": round(rss_bytes(pid) / 2**20, 1),
    }
