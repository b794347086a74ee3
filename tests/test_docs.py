"""The README and the documentation site: the README's two commands stay first and unchanged, user-facing pages
carry no workspace paths or internal language, every local link resolves, and the generated CLI and
configuration references cover every command, option and field."""

import dataclasses
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# pages written for users (decisions.md is the project's own record and keeps its language)
USER_PAGES = [ROOT / "README.md"] + [p for p in DOCS.glob("*.md") if p.name != "decisions.md"]
FORBIDDEN = [r"\.\./shared", r"/work/", r"\bsessions?\s+\d", r"\bDecided:", r"prepared, not yet run",
             r"\bcall s\d", r"\bs\dc\b"]


def generator(name: str):
    spec = importlib.util.spec_from_file_location(name, DOCS / "_gen" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_starts_with_the_two_ci_commands():
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert block[0].startswith("pip install torch==2.13.0 && pip install -e . && hqgnn train --out runs/demo")
    assert block[1].startswith('pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q')
    assert len(text.splitlines()) < 150, "the README is an entry point; reference material belongs in docs/"


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: p.name)
def test_user_pages_have_no_workspace_paths_or_internal_language(page):
    text = page.read_text()
    for pattern in FORBIDDEN:
        assert not re.search(pattern, text), f"{page.name}: {pattern!r} in a user-facing page"


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: p.name)
def test_local_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_nav_lists_existing_pages():
    nav = re.findall(r":\s*([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    assert "cli.md" in nav and "configuration.md" in nav and "api/estimator.md" in nav
    for page in nav:
        assert (DOCS / page).is_file(), page


def test_cli_reference_covers_every_command_and_option():
    import typer.main

    from hqgnn.cli import app

    md = generator("gen_cli").cli_markdown()

    def walk(cmd, path):
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(None):
                yield from walk(cmd.get_command(None, name), path + [name])
        else:
            yield path, cmd

    commands = list(walk(typer.main.get_command(app), ["hqgnn"]))
    assert len(commands) >= 9 and ["hqgnn", "config"] in [p for p, _ in commands]
    for path, cmd in commands:
        heading = f"# `{' '.join(path)}`\n"  # the command's own heading, not a mention in another's help
        assert heading in md, path
        section = md.split(heading, 1)[1].split("\n#", 1)[0]
        for param in cmd.params:
            for opt in param.opts if param.param_type_name == "option" else []:
                assert f"`{opt}" in section, (path, opt)


def test_config_reference_covers_every_field_with_its_help():
    from hqgnn.config import SECTIONS, RunConfig
    from hqgnn.config_docs import FIELD_HELP

    md = generator("gen_config").config_markdown()
    cfg = RunConfig()
    for section in SECTIONS:
        for f in dataclasses.fields(getattr(cfg, section)):
            (row,) = [line for line in md.splitlines() if line.startswith(f"| `{section}.{f.name}` |")]
            assert FIELD_HELP[f"{section}.{f.name}"].split()[0] in row


@pytest.mark.skipif(shutil.which("mkdocs") is None and importlib.util.find_spec("mkdocs") is None,
                    reason="the docs extra is not installed (pip install -e '.[docs]'); .ci/docs builds the site")
def test_site_builds_strict(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**__import__("os").environ,
                                                                                      "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    assert "hqgnn config" in cli and "--toml" in cli
    assert "train.lr" in (tmp_path / "site" / "configuration" / "index.html").read_text()
