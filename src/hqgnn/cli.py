"""The ``hqgnn`` command line: train, sweep, evaluate, recommend, export, serve, and the entry point (data stats,
bench, check and config are in cli_tools)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.table import Table

from .cli_output import (PlainHelpCommand, err, out, print_error_and_exit, print_metrics, print_sweep, setup_logging,
                         usage_error)
from .config import RunConfig, load_config
from .cli_tools import apply_sets, bench_app, check, config_cmd, data_app, recommend_all_cmd
from .cli_foldin import fold_in
from .errors import HqgnnError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Graph recommendation with Hessian-aware quantized embeddings (LightGCN + HQ-GNN).")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")
_argv: list[str] = []  # the arguments main() was called with (hqgnn train --nproc re-launches them)
_D = RunConfig()  # the defaults shown in --help (options left unset keep None so --config / --resume apply)


def _parse_ks(ks: list[str]) -> list[int]:
    try:
        values = [int(p) for k in ks for p in str(k).split(",") if p.strip()]
    except ValueError:
        raise HqgnnError(f"--k expects integers, got {ks!r}") from None
    if not values or min(values) < 1:
        raise HqgnnError("--k values must be >= 1")
    return values


@app.command()
def train(
    config: Annotated[Optional[Path], typer.Option("--config", metavar="FILE", help="TOML config file ([data] [model] [quant] [train] [eval] tables).")] = None,
    data: Annotated[Optional[str], typer.Option(metavar="SOURCE", help=f"synthetic | gowalla | yelp2018 | LightGCN dir | CSV/TSV/Parquet file.  [default: {_D.data.source}]")] = None,
    data_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="Folder holding named datasets (else $HQGNN_DATA, else download).")] = None,
    out: Annotated[Path, typer.Option("--out", metavar="DIR", help="Run directory to write (refused if it holds a run, unless --overwrite or --resume).")] = Path("runs/latest"),
    epochs: Annotated[Optional[int], typer.Option(metavar="N", help=f"Maximum epochs.  [default: {_D.train.epochs}]")] = None,
    dim: Annotated[Optional[int], typer.Option(metavar="D", help=f"Embedding dimension.  [default: {_D.model.dim}]")] = None,
    layers: Annotated[Optional[int], typer.Option(metavar="K", help=f"LightGCN layers (0 = matrix factorization).  [default: {_D.model.layers}]")] = None,
    lr: Annotated[Optional[float], typer.Option(metavar="LR", help=f"Adam learning rate.  [default: {_D.train.lr:g}]")] = None,
    reg: Annotated[Optional[float], typer.Option(metavar="W", help=f"L2 weight on the batch's layer-0 embeddings.  [default: {_D.train.reg:g}]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(metavar="N", help=f"BPR triples per step.  [default: {_D.train.batch_size}]")] = None,
    bits: Annotated[Optional[int], typer.Option(metavar="B", help=f"Quantize to b-bit codes (1..8); 0 = full precision.  [default: {_D.quant.bits}]")] = None,
    estimator: Annotated[Optional[str], typer.Option(metavar="NAME", help="Gradient estimator: auto (gste with --bits, else none) | none | ste | gste.  [default: auto]")] = None,
    delta: Annotated[Optional[float], typer.Option(metavar="X", help="Fix the GSTE delta.  [default: from the Hessian trace]")] = None,
    init_from: Annotated[Optional[str], typer.Option(metavar="RUN", help="Warm start the encoder from a run directory.")] = None,
    eval_every: Annotated[Optional[int], typer.Option(metavar="N", help=f"Validate every N epochs.  [default: {_D.train.eval_every}]")] = None,
    patience: Annotated[Optional[int], typer.Option(metavar="N", help=f"Early stop after N validations without improvement (0 = off).  [default: {_D.train.patience}]")] = None,
    device: Annotated[Optional[str], typer.Option(metavar="DEV", help=f"auto | cpu | cuda.  [default: {_D.train.device}]")] = None,
    seed: Annotated[Optional[int], typer.Option(metavar="S", help=f"Seed for data splits, init and sampling.  [default: {_D.train.seed}]")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override any config field: section.field=value (repeatable).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out from its last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run already in --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and the final metrics.")] = False,
    nproc: Annotated[Optional[int], typer.Option(metavar="N", help="Data-parallel on N processes of this node (re-runs under torchrun).")] = None,
) -> None:
    """Train a LightGCN (optionally quantized with HQ-GNN) and evaluate it on the test split."""
    if nproc is not None:
        from .launch import relaunch

        code = relaunch(nproc, _argv or sys.argv[1:])
        if code:
            sys.exit(code)  # torchrun's exit status (its failure summary names the failed rank)
        return
    rank = int(os.environ.get("RANK", "0"))  # under torchrun only rank 0 logs and prints
    setup_logging(quiet or rank != 0)
    cfg = load_config(config)
    if resume and config is None and (out / "config.toml").exists():
        cfg = load_config(out / "config.toml")
    flags = {
        "data.source": data, "data.data_dir": data_dir, "train.epochs": epochs, "model.dim": dim, "model.layers": layers,
        "train.lr": lr, "train.reg": reg, "train.batch_size": batch_size, "quant.bits": bits, "quant.estimator": estimator,
        "quant.delta": delta, "train.init_from": init_from, "train.eval_every": eval_every, "train.patience": patience,
        "train.device": device, "train.seed": seed,
    }
    for key, value in flags.items():
        if value is not None:
            cfg.set(key, value)
    if seed is not None:
        cfg.data.seed = seed
    apply_sets(cfg, set_)
    cfg.validate()  # the one validation path (config.RunConfig.validate), shared with the API and TOML loading
    from .device import check_device

    check_device(cfg.train.device)  # before any data is read
    from .train.pipeline import run_training

    metrics = run_training(cfg, out, resume=resume, overwrite=overwrite, progress=not quiet and sys.stderr.isatty())
    if rank != 0:
        return
    notes = metrics.get("data_counts") or {}
    if notes:  # printed even with -q: rows the loader removed or skipped must never go unnoticed
        err.print("data: " + ", ".join(f"{k} {v}" for k, v in notes.items()), highlight=False, soft_wrap=True)
    if metrics.get("init_from"):
        info = metrics["init_from"]
        shapes = ", ".join(f"{k} {tuple(v)}" for k, v in info["shapes"].items())
        err.print(f"init-from: loaded {info['path']} (epoch {info['epoch']}; {shapes})", highlight=False, soft_wrap=True)
    protocol = "" if metrics.get("protocol", "validation") == "validation" else f", {metrics['protocol']}"
    print_metrics(metrics["test"], title=f"test metrics ({out}{protocol})")
    out_line = {k: metrics[k] for k in ("best_epoch", "train_seconds")}
    err.print(f"best epoch {out_line['best_epoch']}, {out_line['train_seconds']:.1f}s; wrote {out}")


@app.command()
def sweep(
    grid: Annotated[list[str], typer.Option("--grid", metavar="KEY=V1,V2", help="A sweep dimension: section.field and its values (repeatable; the grid is every combination).")],
    config: Annotated[Optional[Path], typer.Option("--config", metavar="FILE", help="TOML config of the base run ([data] [model] [quant] [train] [eval]).")] = None,
    data: Annotated[Optional[str], typer.Option(metavar="SOURCE", help=f"synthetic | gowalla | yelp2018 | LightGCN dir | CSV/TSV/Parquet file.  [default: {_D.data.source}]")] = None,
    data_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="Folder holding named datasets (else $HQGNN_DATA, else download).")] = None,
    device: Annotated[Optional[str], typer.Option(metavar="DEV", help=f"auto | cpu | cuda.  [default: {_D.train.device}]")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a field of the base config (repeatable).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="Sweep directory to write (candidates/, sweep.json, best.toml, best/).")] = Path("runs/sweep"),
    refit: Annotated[bool, typer.Option("--refit", help="Retrain the winner with train.refit=true (train + validation) into DIR/best.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted sweep in --out (finished candidates are kept).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and the results.")] = False,
) -> None:
    """Train a grid of configurations, select on VALIDATION, report the winner (and its refit) on test."""
    from .train.sweep import parse_grid, run_sweep

    setup_logging(quiet)
    cfg = load_config(config)
    for key, value in {"data.source": data, "data.data_dir": data_dir, "train.device": device}.items():
        if value is not None:
            cfg.set(key, value)
    apply_sets(cfg, set_)
    result = run_sweep(cfg, parse_grid(grid), out_dir, refit=refit, resume=resume, progress=not quiet and sys.stderr.isatty())
    print_sweep(result.summary, result.winner, out_dir)


@app.command(cls=PlainHelpCommand)
def evaluate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run directory.")],
    data: Annotated[Optional[str], typer.Option(metavar="SOURCE", help="Evaluate on other data with the same ids.  [default: the run's data]")] = None,
    k: Annotated[list[str], typer.Option("--k", metavar="K", help="Cut-offs, e.g. --k 20,50 or --k 20 --k 50.")] = ["20", "50"],
    device: Annotated[str, typer.Option(metavar="DEV", help="auto | cpu | cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a data field, e.g. data.user_col=uid (repeatable).")] = None,
) -> None:
    """Full-ranking test metrics of a run (seen items masked), scored exactly as served.

    A run fitted on in-memory data (``HQGNN.fit(df).save(dir)``) has no data source: ``--data`` is then
    a test log (CSV / TSV / Parquet, the fit's columns unless ``--set``), every pair of which is a test
    pair in the run's ids, as ``HQGNN.evaluate(test_df)`` reads it."""
    from .data import load_dataset
    from .recommender import Recommender
    from .run import load_run
    from .train.trainer import resolve_device

    run = load_run(run_dir)
    ks = _parse_ks(k)
    if max(ks) > run.n_items:  # precision@K divides by K: clamping would change the metric, so refuse
        raise HqgnnError(f"--k {max(ks)} is more than the run's {run.n_items} items")
    cfg = run.config
    in_memory = cfg.data.source == "in-memory"
    apply_sets(cfg, set_)
    if data is not None:
        cfg.data.source = data
    rec = Recommender(run, str(resolve_device(device)))
    if in_memory:
        if data is None:
            raise HqgnnError(f"{run_dir}: fitted on in-memory data, so it has no test split: "
                             "pass the test interactions with --data FILE")
        metrics = rec.evaluate(_test_log(data, cfg, run), ks)  # seen = the run's own
    else:
        ds = load_dataset(cfg.data)
        if ds.n_users != run.n_users or ds.n_items != run.n_items:
            raise HqgnnError(f"{cfg.data.source}: {ds.n_users} users / {ds.n_items} items, but the run has "
                             f"{run.n_users} / {run.n_items}")
        metrics = rec.evaluate(ds.matrix(ds.test), ks, exclude=ds.matrix(ds.seen))  # ranked as served
    if as_json:
        print(json.dumps(metrics))
    else:
        print_metrics(metrics, title=f"test metrics ({run_dir})")


def _test_log(source: str, cfg: RunConfig, run: Any) -> Any:
    """The pairs of log ``source`` as a (users x items) test matrix in ``run``'s ids (unknown ids dropped
    with a warning, as HQGNN.evaluate does)."""
    from .data.logs import read_log
    from .data.memory import interactions_from, pairs_matrix

    raw = read_log(source, cfg.data)
    return pairs_matrix(interactions_from((raw.user_ids[raw.users], raw.item_ids[raw.items])), run.user_ids,
                        run.item_ids)


@app.command(cls=PlainHelpCommand)
def recommend(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run directory.")],
    user: Annotated[str, typer.Option("--user", metavar="ID", help="User id, in your own id space.")],
    k: Annotated[int, typer.Option("-k", "--k", metavar="K", help="How many items.")] = 10,
    include_seen: Annotated[bool, typer.Option("--include-seen", help="Also return items the user interacted with.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Top-K items for one user, in the user's own ids."""
    from .recommender import Recommender
    from .run import load_run

    if k < 1:
        raise HqgnnError(f"-k must be >= 1, got {k}")
    run = load_run(run_dir)
    k = min(k, run.n_items)  # a huge -k is answered with the whole catalog, never allocated
    try:
        u = run.user_index(user)
    except KeyError:
        raise HqgnnError(f"{run_dir}: unknown user {user!r}") from None
    rec = Recommender(run, renumber_items=True)  # served as `hqgnn serve` serves (its storage order)
    scores, items = rec.recommend([u], k, exclude_seen=not include_seen)  # type: ignore[arg-type]  # any array-like
    recs = [{"item": rec.run.item_ids[i].item(), "score": float(s)} for s, i in zip(scores[0], items[0]) if i >= 0]
    if as_json:
        print(json.dumps({"user": run.user_ids[u].item(), "items": recs}))
    else:
        table = Table(title=f"top {k} for user {user}")
        table.add_column("rank", justify="right")
        table.add_column("item")
        table.add_column("score", justify="right")
        for r, row in enumerate(recs, 1):
            table.add_row(str(r), str(row["item"]), f"{row['score']:.4f}")
        out.print(table)


app.command("recommend-all", cls=PlainHelpCommand)(recommend_all_cmd)  # listed after recommend


@app.command(cls=PlainHelpCommand)
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run directory.")],
    out_path: Annotated[Path, typer.Option("--out", metavar="FILE", help="The .npz file to write.")],
    faiss: Annotated[Optional[Path], typer.Option("--faiss", metavar="PREFIX", help="Also write FAISS indexes with this path prefix (see README: FAISS export).")] = None,
    renumber_items: Annotated[bool, typer.Option("--renumber-items", help="Write the items in the asymmetric code index's storage order (item_ids reordered with them), as `hqgnn serve` holds them.")] = False,
) -> None:
    """Write embeddings (and codes + scales for quantized runs) with the original ids to an .npz."""
    import numpy as np

    from .io import save_npz
    from .recommender import storage_numbered
    from .run import load_run

    run = load_run(run_dir)
    # a spinner on a terminal while each step runs (a FAISS HNSW build takes minutes on large catalogs);
    # elsewhere the "wrote" lines below are the progress
    with err.status(f"exporting {run_dir} ..."):
        if renumber_items:
            run = storage_numbered(run)
        arrays = {k: v.numpy() for k, v in run.tables.items()}
        arrays.update(user_ids=run.user_ids, item_ids=run.item_ids)
        for key in ("user_codes", "item_codes"):
            if key in arrays:
                arrays[key] = arrays[key].astype(np.int8)
        save_npz(out_path, **arrays)
        err.print(f"wrote {out_path} ({', '.join(arrays)})")
        if faiss is not None:
            from .faiss_export import export_faiss

            for path, what in export_faiss(run, faiss):
                err.print(f"wrote {path}: {what}", highlight=False, soft_wrap=True)


@app.command(cls=PlainHelpCommand)
def serve(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run directory.")],
    host: Annotated[str, typer.Option(metavar="HOST", help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="TCP port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(envvar="HQGNN_API_KEY", metavar="KEY", help="Require this key (header X-API-Key).")] = None,
    max_body_bytes: Annotated[int, typer.Option(metavar="BYTES", help="Largest request body accepted (larger: 413, refused before parsing).")] = 1 << 20,
) -> None:
    """Serve recommendations over HTTP (FastAPI + uvicorn)."""
    if max_body_bytes < 1:
        raise HqgnnError(f"--max-body-bytes must be >= 1, got {max_body_bytes}")
    try:
        from .serve import serve_run
    except ImportError as exc:
        raise HqgnnError(f"serving needs the serve extra: pip install 'hqgnn[serve]' ({exc})") from None

    serve_run(run_dir, host=host, port=port, api_key=api_key, max_body_bytes=max_body_bytes)


# after the workflow commands, so that `hqgnn --help` lists train first
app.command(cls=PlainHelpCommand)(check)
app.command("config", cls=PlainHelpCommand)(config_cmd)
app.command("fold-in", cls=PlainHelpCommand)(fold_in)  # hqgnn.cli_foldin


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes become one 'error:' line, no traceback.

    Exit codes: 0 ok; 1 bad data / files / values (:class:`HqgnnError`); 2 usage errors (unknown
    option, bad option type, missing argument or command); 130 interrupted.
    """
    global _argv
    _argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _sigterm_as_interrupt():
            rv = app(args=argv, standalone_mode=False, prog_name="hqgnn")
    except HqgnnError as exc:
        print_error_and_exit(str(exc), getattr(exc, "exit_code", 1))
    except typer.TyperException as exc:  # typer >= 0.29: base class of its vendored click errors
        usage_error(exc)
    except (typer.Abort, KeyboardInterrupt):
        _interrupted(argv is None)
    if isinstance(rv, int) and not isinstance(rv, bool) and rv:  # typer.Exit(code) in non-standalone mode
        if rv == 130:  # typer turns a KeyboardInterrupt (Ctrl-C, SIGTERM) into 130 without a word
            _interrupted(argv is None)
        sys.exit(rv)


def _interrupted(process: bool) -> None:
    """Ctrl-C / SIGTERM, after the cleanup ran: say so and exit 130.

    As the process's own entry point (``process``), exit at once: an interrupt that landed inside an
    import or a library's teardown can otherwise surface again at interpreter shutdown and turn the exit
    status into a death by SIGINT (seen once under load).
    """
    err.print("interrupted")
    if process:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(130)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (kill, a job scheduler, a container stop) takes Ctrl-C's path: the same cleanup and exit 130.

    The previous handler is put back afterwards (main() also runs inside other programs, e.g. the tests).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
