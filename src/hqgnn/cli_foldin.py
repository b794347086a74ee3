"""``hqgnn fold-in``: a new run with the new users and items of a log folded into a trained run (docs/foldin.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from .cli_output import err
from .errors import HqgnnError


def fold_in(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="A finished run directory (never changed).")],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            metavar="FILE",
            help="CSV / TSV / Parquet log of (user, item) pairs in your ids; the run's data.user_col / data.item_col unless --set.",
        ),
    ],
    out_dir: Annotated[
        Path, typer.Option("--out", metavar="RUN2", help="The new run directory (must not exist or be empty).")
    ],
    method: Annotated[
        str, typer.Option(metavar="METHOD", help="lstsq | propagate | grad (see docs/foldin.md).")
    ] = "lstsq",
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", metavar="KEY=VALUE", help="Override a data field, e.g. data.user_col=uid (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Fold the users and items of --data that RUN lacks into a copy of RUN, written to --out: new items
    from their known users first, then new users from their items; no retraining, RUN unchanged."""
    from .cli_tools import apply_sets
    from .data.logs import read_log
    from .foldin import METHODS
    from .foldin_run import FoldInError, fold_in_pairs, save_grown
    from .io import DirLock, listed
    from .run import load_run

    if method not in METHODS:
        raise HqgnnError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if out_dir.exists() and (not out_dir.is_dir() or listed(out_dir)):
        raise HqgnnError(f"{out_dir}: already exists and is not an empty directory (fold-in writes a new run)")
    if out_dir.resolve() == run_dir.resolve():
        raise HqgnnError(f"{out_dir}: --out is RUN itself; fold-in never changes a run, choose a new directory")
    run = load_run(run_dir)
    cfg = run.config
    cfg.data.time_col = ""  # fold-in reads pairs only; --set data.time_col=... is accepted and unused
    apply_sets(cfg, set_)
    raw = read_log(data, cfg.data)
    try:
        grown, summary = fold_in_pairs(run, raw.user_ids[raw.users], raw.item_ids[raw.items], method)
    except FoldInError as exc:
        raise HqgnnError(f"{data}: {exc}") from None
    if not summary["users"] and not summary["items"]:
        raise HqgnnError(f"{data}: no new users or items (every id is already in {run_dir})")
    grown.metrics["fold_in"][-1]["from"] = str(run_dir)
    with DirLock(out_dir):
        if listed(out_dir):  # filled by another process since the check above
            raise HqgnnError(f"{out_dir}: already exists and is not empty")
        save_grown(grown, out_dir)
    result = {
        "run": str(out_dir),
        "from": str(run_dir),
        "method": method,
        "new_users": summary["users"],
        "new_items": summary["items"],
        "known_pairs_ignored": summary["known_pairs_ignored"],
        "users": grown.n_users,
        "items": grown.n_items,
    }
    if summary["known_pairs_ignored"]:
        err.print(
            f"warning: {summary['known_pairs_ignored']} pairs of a known user and a known item were not "
            "used (fold-in adds nodes; retrain to update existing ones)",
            highlight=False,
        )
    if as_json:
        print(json.dumps(result))
    else:
        err.print(
            f"wrote {out_dir}: {summary['users']} new users, {summary['items']} new items ({method}); "
            f"{grown.n_users} users, {grown.n_items} items",
            highlight=False,
        )
