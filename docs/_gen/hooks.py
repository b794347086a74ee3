"""mkdocs hooks: the generated reference pages, and the reliability page when it exists.

Pages hold a marker (``<!-- generated: cli -->`` / ``<!-- generated: config -->``) that is replaced at build time by
the Markdown the generators produce from the code, so the reference cannot drift from ``hqgnn --help`` and
``hqgnn config``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _generator(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MARKERS = {
    "<!-- generated: cli -->": lambda: _generator("gen_cli").cli_markdown(),
    "<!-- generated: config -->": lambda: _generator("gen_config").config_markdown(),
}


def on_config(config: Any) -> Any:
    # docs/reliability.md is written elsewhere: list it in the navigation only once it exists
    docs_dir = Path(config["docs_dir"])
    nav = config.get("nav") or []
    listed = any("reliability.md" in str(entry) for entry in nav)
    if (docs_dir / "reliability.md").is_file() and not listed:
        at = next((i for i, e in enumerate(nav) if isinstance(e, dict) and "Benchmarks" in e), len(nav))
        nav.insert(at, {"Reliability": "reliability.md"})
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for marker, generate in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
