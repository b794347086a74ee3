"""The command line's inspection and batch commands (data stats, bench retrieval, check, config, recommend-all) and
``--set`` parsing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from .cli_output import PlainHelpCommand, out
from .config import RunConfig, load_config
from .errors import HqgnnError, UsageError

data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
bench_app = typer.Typer(no_args_is_help=True, help="Micro-benchmarks.")


def apply_sets(cfg: RunConfig, items: list[str] | None) -> None:
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects section.field=value, got {item!r}")
        try:
            cfg.set(key.strip(), value.strip())
        except HqgnnError as exc:  # a --set that cannot be applied is a usage error (exit 2), as a bad option
            raise UsageError(f"--set {item}: {exc}") from None


@data_app.command("stats", cls=PlainHelpCommand)
def data_stats(
    path: Annotated[str, typer.Argument(metavar="SOURCE", help="synthetic | gowalla | yelp2018 | LightGCN dir | CSV/TSV/Parquet file.")],
    config: Annotated[Optional[Path], typer.Option("--config", metavar="FILE", help="TOML config; its [data] table names columns, separator, format ...")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a config field, e.g. data.user_col=uid (repeatable).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(metavar="DIR", help="Folder holding named datasets (else $HQGNN_DATA, else download).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The data's own counts: rows, duplicate and blank rows, users, items, interactions per user / item (no split)."""
    from .data import dataset_stats

    cfg = load_config(config)
    if data_dir is not None:
        cfg.data.data_dir = data_dir
    apply_sets(cfg, set_)
    stats = dataset_stats(path, cfg.data)
    if as_json:
        print(json.dumps(stats, default=str))
        return
    table = Table(title=f"dataset {path}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        shown = ", ".join(value) or "none" if isinstance(value, list) else value
        table.add_row(key, f"{shown:.6g}" if isinstance(shown, float) else str(shown))
    out.print(table)


def parse_count(text: str, what: str) -> int:
    """``10M`` / ``2.5k`` / ``1_000_000`` / ``1e8`` as an int; a one-line usage error otherwise."""
    t = text.strip().replace("_", "").upper()
    mult = {"K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise UsageError(f"{what} expects a count such as 10M, 2.5k or 1000000, got {text!r}") from None
    if not value == value or value != int(value):
        raise UsageError(f"{what} expects a whole count, got {text!r}")
    return int(value)


@data_app.command("synth", cls=PlainHelpCommand)
def data_synth(
    out_dir: Annotated[Path, typer.Option("--out", metavar="DIR", help="Directory to write (replaced whole when it exists).")],
    interactions: Annotated[str, typer.Option(metavar="N", help="About N interactions: 1M, 10M, 30M, 100M ... (users N/10, items N/50).")] = "1M",
    users: Annotated[Optional[str], typer.Option(metavar="U", help="Override the number of users.")] = None,
    items: Annotated[Optional[str], typer.Option(metavar="I", help="Override the number of items.")] = None,
    communities: Annotated[Optional[int], typer.Option(metavar="C", help="Override the number of planted communities (default items / 2000).")] = None,
    seed: Annotated[int, typer.Option(metavar="S", help="Seed: the same seed and sizes give the same bytes.")] = 2020,
    test_ratio: Annotated[float, typer.Option(metavar="R", help="Share of each user's interactions in test.txt.")] = 0.2,
    parquet: Annotated[bool, typer.Option("--parquet", help="Also write train.parquet / test.parquet (columns user, item).")] = False,
    workers: Annotated[int, typer.Option(metavar="W", help="Processes generating chunks (the bytes do not depend on it).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """Generate a large power-law graph with planted communities, streamed to LightGCN format in bounded memory."""
    import dataclasses

    from .cli_output import setup_logging
    from .data.synth_scale import SynthSpec, generate

    setup_logging(as_json)
    n = parse_count(interactions, "--interactions")
    spec = SynthSpec.for_interactions(n, seed=seed, test_ratio=test_ratio)
    total = spec.n_users * spec.mean_activity
    if users is not None or items is not None or communities is not None:
        n_users = parse_count(users, "--users") if users else spec.n_users
        n_items = parse_count(items, "--items") if items else spec.n_items
        spec = dataclasses.replace(spec, n_users=n_users, n_items=n_items, mean_activity=total / max(1, n_users),
                                   n_communities=communities or max(10, n_items // 2000))
    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    summary = generate(out_dir, spec, parquet=parquet, workers=workers)
    if as_json:
        print(json.dumps(summary))
        return
    out.print(f"wrote {out_dir}: {summary['interactions']:,} interactions ({summary['train']:,} train, "
              f"{summary['test']:,} test), {spec.n_users:,} users x {spec.n_items:,} items, "
              f"{spec.n_communities} communities, {summary['generate_seconds']:.1f}s", highlight=False, soft_wrap=True)


def _benchmark(name: str) -> Any:
    """A module of the repository's ``benchmarks/`` folder: the benchmarks live outside the package, and
    ``hqgnn bench`` is their thin caller in a source checkout (``pip install -e .``)."""
    import importlib
    import sys

    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    if not (folder / f"{name}.py").is_file():
        raise HqgnnError("hqgnn bench runs the benchmark scripts of a source checkout (benchmarks/ next to src/); "
                         "clone the repository and install it with pip install -e .")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    return importlib.import_module(name)


@bench_app.command("retrieval")
def bench_retrieval(
    items: Annotated[int, typer.Option(metavar="N", help="Catalog size.")] = 1_000_000,
    dim: Annotated[int, typer.Option(metavar="D", help="Embedding dimension.")] = 64,
    bits: Annotated[int, typer.Option(metavar="B", help="Code width (1..8).")] = 1,
    queries: Annotated[int, typer.Option(metavar="Q", help="Query batch size.")] = 1000,
    k: Annotated[int, typer.Option("--k", metavar="K", help="Top-K.")] = 20,
    device: Annotated[str, typer.Option(metavar="DEV", help="cpu | cuda.")] = "cpu",
    query_bits: Annotated[Optional[int], typer.Option(
        "--query-bits", metavar="Q", help="Asymmetric search: query bits (2..8, 0 = float queries) against --bits-bit items.")] = None,
    item_order: Annotated[str, typer.Option(
        "--item-order", metavar="ORDER",
        help="Asymmetric CPU index: none (held = codes + scales + terms) | scale (+4 B/item order) | renumbered "
             "(items renumbered into the storage order first, as `hqgnn serve` does; no order held; the default).")] = "renumbered",
    value_dtype: Annotated[str, typer.Option(
        "--value-dtype", metavar="DTYPE",
        help="Asymmetric search: item scales and terms as float32 or float16 (as quant.scale_dtype=float16 runs, the 8 and "
             "16 B formats, store them; the default).")] = "float16",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Time exact top-K from synthetic codes against torch float32 and FAISS on the same queries."""
    from .index.format import ITEM_ORDERS

    run_retrieval_bench = _benchmark("retrieval").run_retrieval_bench
    if query_bits is not None and query_bits != 0 and not 2 <= query_bits <= 8:
        raise HqgnnError(f"--query-bits must be 0 (float) or 2..8, got {query_bits}")
    if item_order not in ITEM_ORDERS + ("renumbered",):
        raise HqgnnError(f"--item-order must be one of {', '.join(ITEM_ORDERS)}, renumbered, got {item_order!r}")
    if value_dtype not in ("float32", "float16"):
        raise HqgnnError(f"--value-dtype must be float32 or float16, got {value_dtype!r}")
    result = run_retrieval_bench(items=items, dim=dim, bits=bits, queries=queries, k=k, device=device,
                                 query_bits=query_bits, item_order=item_order, value_dtype=value_dtype)
    if as_json:
        print(json.dumps(result))
        return
    qdesc = "" if query_bits is None else f" x {query_bits or 'float'}-bit queries"
    table = Table(title=f"{queries} queries, {items:,} items, d={dim}, {bits}-bit{qdesc}, top-{k} on {result['device']}")
    table.add_column("engine")
    table.add_column("queries/s", justify="right")
    for name, qps in result["qps"].items():
        table.add_row(name, "n/a" if qps is None else f"{qps:,.0f}")
    out.print(table)
    out.print(f"exact: {result['exact']}   bytes/item: {result['bytes_per_item']}")


def check(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Verify a run directory: manifest (sizes, sha256, code format, shapes) and cross-file invariants; exit 0 or 1."""
    from .run import check_run

    summary = check_run(run_dir)  # a problem is one error line naming the file, exit 1
    if as_json:
        print(json.dumps(summary))
        return
    how = "manifest verified" if summary["manifest"] else "no manifest (older run): cross-file checks only"
    out.print(f"ok: {run_dir} ({how}; {summary['users']} users, {summary['items']} items)", highlight=False,
              soft_wrap=True)


def config_cmd(
    toml: Annotated[bool, typer.Option("--toml", help="Print a complete commented TOML config (for hqgnn train --config).")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", metavar="FILE", help="Start from this TOML config instead of the defaults.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help="Override a config field: section.field=value (repeatable).")] = None,
) -> None:
    """Every config field (section.field) with its type, default, range and meaning; --toml: a config file."""
    from .config_docs import config_fields, config_toml

    cfg = load_config(config)
    apply_sets(cfg, set_)
    RunConfig.from_dict(cfg.to_dict(), validate=False).validate()  # checked on a copy: validate() resolves "auto" values the listing should show
    if toml:
        print(config_toml(cfg), end="")
        return
    defaults = {d.name: d.default for d in config_fields()}
    rows = [(d.name, d.type, json.dumps(d.default), d.range or "-", d.help) for d in config_fields(cfg)]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print("  ".join(h.ljust(w) for h, w in zip(("field", "type", "value" if config or set_ else "default", "range"), widths)) + "  meaning")
    for row, doc_default in zip(rows, defaults.values()):  # one line per field, so `hqgnn config | grep lr` works
        changed = "" if json.loads(row[2]) == doc_default else f" (default {json.dumps(doc_default)})"
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4] + changed)


def recommend_all_cmd(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run directory.")],
    out_path: Annotated[Path, typer.Option("--out", metavar="FILE", help="The .parquet (or .csv) file to write: columns user, rank, item, score.")],
    k: Annotated[int, typer.Option("-k", "--k", metavar="K", help="Items per user (clamped to the catalog).")] = 10,
    device: Annotated[str, typer.Option(metavar="DEV", help="auto | cpu | cuda.")] = "auto",
    include_seen: Annotated[bool, typer.Option("--include-seen", help="Also return items each user interacted with.")] = False,
    chunk: Annotated[Optional[int], typer.Option("--chunk", metavar="N", help="Users per chunk (memory ~ 4 x N x K answers; default 2M / K, at most 65,536).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace FILE if it exists.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard the chunks of an unfinished job into FILE and start over.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or progress lines.")] = False,
) -> None:
    """Top-K items for every user, in your own ids, streamed to one file; rerun after a crash to resume."""
    import sys

    from .cli_output import err, setup_logging
    from .device import resolve_device
    from .recommend_all import recommend_all
    from .recommender import Recommender
    from .run import load_run

    setup_logging(quiet)
    if k < 1:
        raise HqgnnError(f"--k must be >= 1, got {k}")
    dev = resolve_device(device)
    run = load_run(run_dir)
    # the run's own numbering (HQGNN.recommend's ties), on every device: a resume may change nothing
    summary = recommend_all(Recommender(run, str(dev)), out_path, k, exclude_seen=not include_seen, chunk=chunk,
                            overwrite=overwrite, restart=restart, progress=not quiet and sys.stderr.isatty())
    resumed = f", resumed at user {summary['resumed_from']:,}" if summary["resumed_from"] else ""
    err.print(f"wrote {out_path}: {summary['rows']:,} rows ({summary['users']:,} users x top {summary['k']}) "
              f"in {summary['seconds']:.1f}s{resumed}", highlight=False, soft_wrap=True)
