"""Corruption fuzzer over run directories (SQLite fault-injection style).

Each case damages a copy of a tiny finished run (truncation, bit flips, a file swapped with the same file of
another run, deletions, deleted sections, inconsistent but well-formed files; with and without the manifest)
and checks it through one of: the loader, ``hqgnn check`` in-process, the Python API (``HQGNN.load``) and a
serving app's ``/admin/reload``. Every case must end in one error line or in the right answer: zero
tracebacks, zero wrong answers, and a refused reload keeps serving the old run without leaking server paths.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from reliability_helpers import (
    Case,
    answer_of,
    build_cases,
    make_old_format,
    one_line,
    tiny_config,
)

from hqgnn import HQGNN
from hqgnn.cli import main
from hqgnn.errors import HqgnnError
from hqgnn.serve import create_app
from hqgnn.train.pipeline import run_training

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

KEY = "fuzz-key"
BASES = {"f": "f2", "q": "q2"}  # base run -> the other run whose files are swapped in
CASES = build_cases(BASES, n_flips=3, seed=24)  # >= 200 cases in the default run
SLOW_CASES = build_cases(BASES, n_flips=40, seed=2024)  # more seeded flips, every case through all four (slow)
CHECKERS = ("loader", "check", "api", "reload")


class Runs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dirs: dict[str, Path] = {}
        for name, cfg in {"f": tiny_config(), "f2": tiny_config(seed=7, data_seed=11), "q": tiny_config(bits=1),
                          "q2": tiny_config(bits=1, seed=7, data_seed=11)}.items():
            run_training(cfg, root / name, progress=False)
            self.dirs[name] = root / name
        self.answers = {b: answer_of(self.dirs[b]) for b in BASES}
        self.api_users = {b: HQGNN.load(self.dirs[b]).user_ids[:5] for b in BASES}
        self.api = {b: self._api_answer(self.dirs[b]) for b in BASES}
        self.client = TestClient(create_app(self.dirs["f"], api_key=KEY))
        self.served_user = HQGNN.load(self.dirs["f"]).user_ids[0].item()
        self.served = self._served()

    def _api_answer(self, d: Path) -> tuple[np.ndarray, np.ndarray]:
        est = HQGNN.load(d, device="cpu")
        return est.recommend(est.user_ids[:5], k=5)

    def _served(self, user: Any = None) -> Any:
        user = self.served_user if user is None else user
        return self.client.get("/recommend", params={"user": user, "k": 5}, headers={"X-API-Key": KEY}).json()

    def damaged(self, case: Case) -> Path:
        d = self.root / "case"
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(self.dirs[case.base], d)
        if case.old_format:
            make_old_format(d)
        case.apply(d, self.dirs[BASES[case.base]])
        return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    r = Runs(tmp_path_factory.mktemp("fuzz"))
    yield r
    r.client.close()


def outcome(runs: Runs, case: Case, checker: str) -> str:
    """'error' (one line, nothing served), 'correct', or what went wrong: 'traceback', 'wrong', 'leak', 'lost-old'."""
    d = runs.damaged(case)
    if checker == "loader":
        try:
            got = answer_of(d)
        except HqgnnError as exc:
            return "error" if one_line(str(exc)) else "traceback"
        except Exception:  # noqa: BLE001  the oracle: anything but HqgnnError is a traceback
            return "traceback"
        return "correct" if got == runs.answers[case.base] else "wrong"
    if checker == "check":
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                main(["check", str(d)])
                code = 0
            except SystemExit as exc:
                code = exc.code
            except Exception:  # noqa: BLE001
                return "traceback"
        if code == 1:
            text = err.getvalue()
            return "error" if one_line(text) and text.startswith("error:") else "traceback"
        if code != 0:
            return "traceback"
        try:
            return "correct" if answer_of(d) == runs.answers[case.base] else "wrong"
        except Exception:  # noqa: BLE001
            return "wrong"  # check said ok but loading failed: check and the loader disagree
    if checker == "api":
        try:
            est = HQGNN.load(d, device="cpu")
            items, scores = est.recommend(runs.api_users[case.base], k=5)
        except HqgnnError as exc:
            return "error" if one_line(str(exc)) else "traceback"
        except Exception:  # noqa: BLE001  the oracle: anything but HqgnnError is a traceback
            return "traceback"
        want_items, want_scores = runs.api[case.base]
        return "correct" if np.array_equal(items, want_items) and np.array_equal(scores, want_scores) else "wrong"
    # reload: a refused run keeps the old one served; an accepted one must serve the right answers
    h = {"X-API-Key": KEY}
    r = runs.client.post("/admin/reload", json={"run_dir": str(d)}, headers=h)
    if r.status_code == 400:
        detail = r.json()["detail"]
        if str(runs.root) in detail or re.search(r"/\w+/", detail) or "Traceback" in detail:
            return "leak"  # a server path or a traceback reached the client
        if runs._served() != runs.served:
            return "lost-old"
        return "error" if one_line(detail) else "traceback"
    if r.status_code != 200:
        return "traceback"
    try:
        user = HQGNN.load(runs.dirs[case.base]).user_ids[0].item()
        got = runs._served(user)
        want = answer_of(runs.dirs[case.base], users=1)[0]
        ok = [(x["item"], x["score"]) for x in got["items"]] == want
    finally:
        runs.client.post("/admin/reload", json={"run_dir": str(runs.dirs["f"])}, headers=h)
    return "correct" if ok else "wrong"


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c.name for c in CASES])
def test_damaged_run_gives_one_error_line_or_the_right_answer(runs: Runs, i: int) -> None:
    case = CASES[i]
    checker = CHECKERS[i % len(CHECKERS)]
    got = outcome(runs, case, checker)
    assert got in ("error", "correct"), f"{case.name} through {checker}: {got}"


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(SLOW_CASES)), ids=[c.name for c in SLOW_CASES])
def test_more_bit_flips(runs: Runs, i: int) -> None:
    case = SLOW_CASES[i]
    for checker in CHECKERS:
        got = outcome(runs, case, checker)
        assert got in ("error", "correct"), f"{case.name} through {checker}: {got}"


def test_the_fuzzer_has_enough_cases_and_the_pristine_runs_pass(runs: Runs) -> None:
    assert len(CASES) >= 200
    for base in BASES:
        assert answer_of(runs.dirs[base]) == runs.answers[base]
    # structural damage on the old format (no manifest) is caught by the cross-file checks alone
    assert sum(c.old_format for c in CASES) >= 40


def test_a_damaged_manifest_run_is_refused_and_an_old_run_still_loads(runs: Runs, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(runs.dirs["q"], old)
    make_old_format(old)
    assert answer_of(old) == runs.answers["q"]  # a run from before manifests: loads, cross-file checks pass
    lost = tmp_path / "lost"
    shutil.copytree(runs.dirs["q"], lost)
    (lost / "manifest.json").unlink()
    with pytest.raises(HqgnnError, match="manifest.json: missing, but metrics.json says"):
        answer_of(lost)
