"""CLI train -> `hqgnn serve` in a subprocess -> query it over HTTP with httpx (about 20 s on a laptop CPU).

    pip install -e ".[serve]"
    python examples/train_and_serve.py [OUT_DIR]

Everything here is what you would type in a shell: `hqgnn train ...`, then `hqgnn serve RUN --port P`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HQGNN = [sys.executable, "-m", "hqgnn"]  # the `hqgnn` command of this Python environment


def free_port() -> int:
    with socket.socket() as s:  # the OS picks a port that is free now; the server binds it a moment later
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(out_dir: Path) -> None:
    run = out_dir / "run"
    subprocess.run([*HQGNN, "train", "--out", str(run), "--epochs", "10", "--eval-every", "5", "--dim", "32",
                    "--bits", "1", "--device", "cpu", "-q", "--set", "data.synthetic_users=500",
                    "--set", "data.synthetic_items=300", "--set", "train.lr=5e-3"], check=True)

    port = free_port()
    server = subprocess.Popen([*HQGNN, "serve", str(run), "--port", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as client:
            for _ in range(600):  # wait up to 60 s for the run to load and uvicorn to listen
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None:
                    raise SystemExit(f"hqgnn serve exited with status {server.returncode}")
                time.sleep(0.1)
            else:
                raise SystemExit("hqgnn serve did not answer /health within 60 s")

            meta = client.get("/metadata").json()
            print(f"serving {meta['model']}: {meta['users']} users x {meta['items']} items, {meta['bits']}-bit codes")
            one = client.get("/recommend", params={"user": 0, "k": 5}).json()
            print("GET /recommend?user=0&k=5 ->", [(r["item"], round(r["score"], 3)) for r in one["items"]])
            batch = client.post("/recommend/batch", json={"users": [0, 1, "nobody"], "k": 5}).json()
            print("POST /recommend/batch -> unknown users:", batch["unknown_users"])
            assert batch["results"][0]["items"] == one["items"], "a batch entry equals the single request"
            similar = client.get("/similar-items", params={"item": one["items"][0]["item"], "k": 3}).json()
            print("GET /similar-items ->", [r["item"] for r in similar["items"]])
            missing = client.get("/recommend", params={"user": "nobody"})
            print("unknown user ->", missing.status_code, missing.json()["detail"])
    finally:
        server.terminate()  # uvicorn shuts down cleanly on SIGTERM
        server.wait(timeout=30)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
