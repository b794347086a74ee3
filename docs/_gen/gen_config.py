"""The configuration reference in Markdown, generated from the config dataclasses and config.FIELD_HELP.

Run as a script to print it (``python docs/_gen/gen_config.py``); the mkdocs hook (docs/_gen/hooks.py) puts it into
docs/configuration.md at build time. ``hqgnn config`` prints the same rows (hqgnn.config.config_fields).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:  # a source checkout builds its own docs even when another hqgnn is installed
    sys.path.insert(0, str(SRC))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "&#124;").replace("[", "\\[")  # "[data]" is no link


def config_markdown(level: int = 2) -> str:
    """One table per config section ([data] [model] [quant] [train] [eval]): field, type, default, range, meaning.

    Parameters
    ----------
    level
        Heading level of the section titles.
    """
    from hqgnn.config import SECTIONS, RunConfig
    from hqgnn.config_docs import config_fields

    docs = config_fields()
    lines: list[str] = []
    for section in SECTIONS:
        summary = (type(getattr(RunConfig(), section)).__doc__ or "").strip().splitlines()[0]
        lines += [f"{'#' * level} `[{section}]`", "", summary, "",
                  "| field | type | default | range | meaning |", "|---|---|---|---|---|"]
        for doc in docs:
            if doc.name.startswith(section + "."):
                lines.append(f"| `{doc.name}` | {doc.type} | `{json.dumps(doc.default)}` | "
                             f"{_cell(doc.range) or '-'} | {_cell(doc.help)} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(config_markdown(), end="")
