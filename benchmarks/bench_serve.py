"""Load benchmark of ``hqgnn serve``: starts uvicorn on 127.0.0.1, fires N requests at C concurrency, prints JSON.

    python benchmarks/bench_serve.py RUN_DIR [--requests 5000 --concurrency 32 --endpoint recommend --k 10]

The load generator is a minimal asyncio HTTP/1.1 keep-alive client (one connection per concurrent
slot), not httpx: on a small machine client and server share the cores, and httpx spends several
times more CPU per request than the server does, so it would mostly measure itself. Latency is per
request, from writing the request to reading the whole body; errors are non-200 answers, malformed
bodies, and connection failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: str, port: int, api_key: str | None, access_log: bool) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.pop("HQGNN_API_KEY", None)
    if api_key:
        env["HQGNN_API_KEY"] = api_key
    if access_log:  # exactly what users run
        cmd = [sys.executable, "-m", "hqgnn", "serve", run_dir, "--port", str(port)]
    else:
        cmd = [sys.executable, "-c", "import sys; from hqgnn.serve import serve_run; "
               "serve_run(sys.argv[1], port=int(sys.argv[2]), api_key=sys.argv[3] or None, access_log=False)",
               run_dir, str(port), api_key or ""]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Conn:
    """One keep-alive HTTP/1.1 connection; ``request`` returns (status, body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Conn":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = next((int(v) for n, _, v in (ln.partition(":") for ln in lines[1:]) if n.lower() == "content-length"),
                      None)
        if length is None:
            raise ValueError("response without Content-Length")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def build_requests(args: argparse.Namespace, user_ids: np.ndarray, item_ids: np.ndarray, n: int) -> list[bytes]:
    rng = np.random.default_rng(args.seed)
    key = f"X-API-Key: {args.api_key}\r\n" if args.api_key else ""
    out = []
    for _ in range(n):
        if args.endpoint == "recommend":
            u = quote(str(user_ids[rng.integers(len(user_ids))]))
            out.append(f"GET /recommend?user={u}&k={args.k} HTTP/1.1\r\nHost: bench\r\n{key}\r\n".encode())
        elif args.endpoint == "similar":
            i = quote(str(item_ids[rng.integers(len(item_ids))]))
            out.append(f"GET /similar-items?item={i}&k={args.k} HTTP/1.1\r\nHost: bench\r\n{key}\r\n".encode())
        else:
            users = user_ids[rng.integers(len(user_ids), size=args.batch_size)].tolist()
            body = json.dumps({"users": users, "k": args.k}).encode()
            out.append(f"POST /recommend/batch HTTP/1.1\r\nHost: bench\r\n{key}Content-Type: application/json\r\n"
                       f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


async def fire(port: int, requests: list[bytes], concurrency: int) -> tuple[list[float], int, float]:
    """Send all requests over ``concurrency`` connections; (latencies in s, errors, wall seconds)."""
    latencies: list[float] = []
    errors = 0
    next_i = 0

    async def slot() -> None:
        nonlocal errors, next_i
        conn: Conn | None = None
        while next_i < len(requests):
            raw = requests[next_i]
            next_i += 1
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = await Conn.open(port)
                status, body = await conn.request(raw)
                ok = status == 200 and body.startswith(b"{")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                ok = False
                if conn is not None:
                    conn.close()
                conn = None  # reconnect for the next request
            latencies.append(time.perf_counter() - t0)
            errors += not ok
        if conn is not None:
            conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(slot() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - t0


async def wait_healthy(proc: subprocess.Popen[bytes], port: int, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"server exited with {proc.returncode}:\n{err[-3000:]}")
        try:
            conn = await Conn.open(port)
            status, _ = await conn.request(b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n")
            conn.close()
            if status == 200:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise SystemExit(f"server not healthy after {timeout}s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--endpoint", choices=["recommend", "similar", "batch"], default="recommend")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32, help="users per request with --endpoint batch")
    p.add_argument("--warmup", type=int, default=200, help="requests sent first and not measured")
    p.add_argument("--api-key", action="store_true", help="start the server with a random key and send it")
    p.add_argument("--no-access-log", action="store_true", help="serve_run(access_log=False) instead of the CLI")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.api_key = secrets.token_urlsafe(16) if args.api_key else None

    sys.path.insert(0, str(SRC))
    from hqgnn.run import load_run

    run = load_run(args.run_dir)
    user_ids, item_ids = run.user_ids, run.item_ids
    reqs = build_requests(args, user_ids, item_ids, args.warmup + args.requests)
    port = free_port()
    load_before = os.getloadavg()
    proc = start_server(args.run_dir, port, args.api_key, access_log=not args.no_access_log)
    try:
        asyncio.run(wait_healthy(proc, port))
        asyncio.run(fire(port, reqs[: args.warmup], args.concurrency))
        lat, errors, wall = asyncio.run(fire(port, reqs[args.warmup :], args.concurrency))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    ms = np.asarray(lat) * 1000.0
    result = {
        "endpoint": args.endpoint,
        "k": args.k,
        "batch_size": args.batch_size if args.endpoint == "batch" else 1,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "errors": int(errors),
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "throughput_rps": round(args.requests / wall, 1),
        "wall_s": round(wall, 3),
        "access_log": not args.no_access_log,
        "api_key": bool(args.api_key),
        "run": {"dir": str(Path(args.run_dir).resolve()), "users": run.n_users, "items": run.n_items,
                "dim": run.config.model.dim, "bits": run.bits},
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "note": "client and server on the same machine, loopback",
        },
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
