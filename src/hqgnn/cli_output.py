"""What the command line prints: its consoles, log handler, help layout, metric and sweep tables, and the one error line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer
import typer.core
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

err = Console(stderr=True)
out = Console()


class PlainHelpCommand(typer.core.TyperCommand):
    """A command whose help names arguments plainly (``RUN``), not typer's ``{run_dir}`` / ``<path>``."""

    def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        for param in self.params:  # "RUN  A finished run directory.", not "RUN <path>  ..."
            if isinstance(param, typer.core.TyperArgument):
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]

    def collect_usage_pieces(self, ctx):  # type: ignore[no-untyped-def]
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def setup_logging(quiet: bool) -> None:
    """Log records to stderr (warnings only when ``quiet``): through rich on a terminal; as plain, never
    wrapped lines with a time stamp elsewhere (CI logs, nohup, a notebook's subprocess), which rich
    would wrap at 80 columns."""
    level = logging.WARNING if quiet else logging.INFO
    if err.is_terminal:
        logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]",
                            handlers=[RichHandler(console=err, show_path=False)], force=True)
    else:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                            stream=sys.stderr, force=True)


def print_metrics(metrics: dict[str, float], title: str) -> None:
    """One table: a row per metric, a column per cut-off."""
    table = Table(title=title)
    ks = sorted({int(k.split("@")[1]) for k in metrics})
    names = sorted({k.split("@")[0] for k in metrics}, key=["recall", "ndcg", "precision", "hit_rate"].index)
    table.add_column("metric")
    for k in ks:
        table.add_column(f"@{k}", justify="right")
    for name in names:
        table.add_row(name, *(f"{metrics[f'{name}@{k}']:.4f}" for k in ks))
    out.print(table)


def print_sweep(summary: dict[str, Any], winner: str, out_dir: Path) -> None:
    """The candidates' validation numbers (the winner starred), then the winner's test metrics."""
    metric = summary["select_metric"]
    table = Table(title=f"sweep ({out_dir}): validation {metric}, selected on validation")
    for column in ("candidate", *summary["grid"], f"val {metric}", "best epoch", "train s"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    for row in summary["candidates"]:
        mark = " *" if row["name"] == winner else ""  # the full name (with the values) is the run folder's
        table.add_row(row["name"].partition("_")[0] + mark, *(str(row["overrides"][k]) for k in summary["grid"]),
                      f"{row['val'][metric]:.4f}", str(row["best_epoch"]), f"{row['train_seconds']:.1f}")
    out.print(table)
    final = summary["final"]
    print_metrics(final["test"], title=f"test metrics of the winner {winner} ({final['protocol']})")
    err.print(f"winner {winner}; its config: {out_dir / summary['best_config']}; wrote {out_dir / 'sweep.json'}")


def print_error_and_exit(message: str, code: int) -> None:
    """The one ``error:`` line a user mistake gets, then exit ``code``."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


def usage_error(exc: typer.TyperException) -> None:
    """Typer's own parse errors (unknown option, bad value, missing argument or command): one line, exit 2."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "hqgnn"
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `hqgnn` / `hqgnn data`: the help is the useful part
        err.print(exc.format_message(), highlight=False, markup=False)
        print_error_and_exit(f"{command}: missing command (see '{command} --help')", 2)
    code = getattr(exc, "exit_code", 2)
    print_error_and_exit(f"{exc.format_message()} (see '{command} --help')", code if isinstance(code, int) and code else 2)
