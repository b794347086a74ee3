"""``HQGNN``: the notebook API (fit / recommend / similar_items / evaluate / save / load) in the user's own ids."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import scipy.sparse as sp

from .config import RunConfig
from .config_docs import section_field
from .errors import HqgnnError, check_k
from .estimator_foldin import FoldInMixin

if TYPE_CHECKING:
    from .recommender import Recommender
    from .run import TrainedRun

log = logging.getLogger("hqgnn")

__all__ = ["HQGNN"]


class HQGNN(FoldInMixin):
    """LightGCN recommender with optional b-bit quantized embeddings (HQ-GNN), scikit-learn style.

    Every keyword is a config field of :mod:`hqgnn.config` by its name (``HQGNN(val_ratio=0.05,
    sampling="user", delta_every=5)``), or by ``"section.field"`` for a name in two sections;
    ``seed`` sets both the data-split and the training seed. The defaults are the config's:
    ``dim=64, layers=3, bits=0`` (full precision; 1..8 quantizes), ``estimator=None`` (GSTE when
    ``bits > 0``), ``epochs=50, lr=1e-3, batch_size=2048, device="auto", seed=2020``. Values are
    checked at once by :meth:`RunConfig.validate` (the CLI's rules and messages): a bad value or an
    unknown name raises :class:`~hqgnn.errors.HqgnnError`.

    Nothing is printed: progress goes to the ``hqgnn`` loggers (``logging.basicConfig(level="INFO")``
    to see it) and a progress bar appears only with ``fit(..., progress=True)``.
    """

    def __init__(self, dim: int = 64, layers: int = 3, bits: int = 0, estimator: str | None = None,
                 epochs: int = 50, lr: float = 1e-3, batch_size: int = 2048, device: str = "auto",
                 seed: int = 2020, **more: Any) -> None:
        params = dict(dim=dim, layers=layers, bits=bits, estimator="auto" if estimator is None else estimator,
                      epochs=epochs, lr=lr, batch_size=batch_size, device=device, **more)
        cfg = RunConfig()
        for name, value in params.items():
            section, field = section_field(name)
            setattr(getattr(cfg, section), field, value)
        if "data.seed" not in more:
            cfg.data.seed = seed
        if "train.seed" not in more:
            cfg.train.seed = seed
        self.config = cfg.validate()
        from .device import check_device

        check_device(cfg.train.device)  # a GPU this machine lacks is refused now, not when fit() starts
        self._run: TrainedRun | None = None  # once fitted or loaded
        self._model_state: dict[str, Any] = {}
        self._rec: Recommender | None = None
        self._foldin: Any = None  # hqgnn.foldin.FoldIn of anonymous sessions, built on first use
        self._test: sp.csr_matrix | None = None  # the test split of a path / dataset-name source

    # -- scikit-learn style parameters ------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Every config field as ``"section.field"`` -> value (``HQGNN(**est.get_params())`` clones it)."""
        return {f"{s}.{k}": copy.deepcopy(v) for s, fields in self.config.to_dict().items() for k, v in fields.items()}

    def __repr__(self) -> str:
        c = self.config
        return (f"HQGNN(dim={c.model.dim}, layers={c.model.layers}, bits={c.quant.bits}, "
                f"estimator={c.quant.estimator!r}, epochs={c.train.epochs}, fitted={self._run is not None})")

    # -- training -------------------------------------------------------------------------------------
    def fit(self, data: Any, user_col: str | None = None, item_col: str | None = None, time_col: str | None = None,
            validation: Any = None, progress: bool = False) -> "HQGNN":
        """Train on ``data``; returns self.

        ``data``: a pandas DataFrame (``user_col`` / ``item_col``, default "user" / "item", optional
        ``time_col``), a scipy sparse user x item matrix (row / column numbers are the ids), a
        ``(user_ids, item_ids)`` pair of arrays, or a ``str`` / path: a dataset name ("gowalla",
        "synthetic", ...), a LightGCN directory or a CSV / TSV / Parquet log, loaded and split exactly
        as ``hqgnn train --data`` does (its test split is what :meth:`evaluate` uses by default).
        In-memory data is all training data: hold out your own test set and pass it to
        :meth:`evaluate`. ``validation`` (same forms) drives model selection and early stopping; if
        None it is carved out of ``data`` (see :func:`hqgnn.data.memory.in_memory_dataset`).
        """
        from .data import load_dataset
        from .data.memory import in_memory_dataset, interactions_from, pairs_in
        from .run import TrainedRun
        from .train.pipeline import train_model

        cfg = copy.deepcopy(self.config)
        if isinstance(data, (str, os.PathLike)):
            cfg.data.source = os.fspath(data)
            for name, value in (("user_col", user_col), ("item_col", item_col), ("time_col", time_col)):
                if value is not None:
                    setattr(cfg.data, name, value)
            cfg.validate()
            ds = load_dataset(cfg.data)
            if validation is not None:
                val = pairs_in(interactions_from(validation, user_col, item_col, time_col), ds.user_ids,
                               ds.item_ids, "validation")
                ds = dataclasses.replace(ds, train=np.concatenate([ds.train, ds.val]), val=val)
        else:
            # the config remembers the columns, so evaluate(test_df) and a saved run's CLI use them too
            for name, value in (("user_col", user_col), ("item_col", item_col), ("time_col", time_col)):
                if value is not None:
                    setattr(cfg.data, name, value)
            inter = interactions_from(data, user_col, item_col, time_col)
            held = None if validation is None else interactions_from(validation, user_col, item_col, time_col)
            ds, _ = in_memory_dataset(inter, held, cfg.data.val_ratio, cfg.data.seed)
            cfg.data.source = "in-memory"  # config.toml says where the data came from
        with tempfile.TemporaryDirectory(prefix="hqgnn-fit-") as work:
            trained = train_model(cfg, ds, work, progress=progress)
        self.config = cfg
        self._model_state = trained.model_state
        self._run = TrainedRun(Path(), cfg, trained.metrics, trained.tables, ds.user_ids, ds.item_ids,
                               ds.matrix(ds.seen))
        self._test = ds.matrix(ds.test) if len(ds.test) else None
        self._rec = self._foldin = None
        return self

    def sweep(self, data: Any, grid: dict[str, Iterable[Any]], user_col: str | None = None,
              item_col: str | None = None, time_col: str | None = None, validation: Any = None,
              refit: bool | None = None, progress: bool = False) -> tuple["HQGNN", list[dict[str, Any]]]:
        """Fit one model per point of ``grid`` ({"section.field": values}, on top of this estimator's
        parameters) and select on the VALIDATION split only; returns (the fitted winner, one row per
        candidate: name, overrides, validation metrics, best epoch, train seconds). The selection never
        reads a test number (a path or dataset source still has its test split evaluated by each fit, as
        :meth:`fit` does; in-memory data has none). ``refit`` (default: this estimator's ``refit``) refits the winner on train +
        validation. The grid rules are ``hqgnn sweep``'s (:func:`hqgnn.train.sweep.candidates`): data.*,
        eval.*, the select metric, the protocol and the refit are not sweep dimensions. ``data`` and the
        column / validation arguments are :meth:`fit`'s; every candidate sees the same validation split.
        """
        from .train.sweep import candidates

        refit = bool(self.config.train.refit if refit is None else refit)
        points = candidates(copy.deepcopy(self.config), {k: list(v) for k, v in grid.items()})
        metric = self.config.train.select_metric
        rows: list[dict[str, Any]] = []
        best: tuple[float, HQGNN] | None = None
        for name, overrides, cfg in points:
            model = HQGNN._of_config(cfg).fit(data, user_col, item_col, time_col, validation, progress)
            m = model.metrics
            rows.append({"name": name, "overrides": overrides, "val": m["val"], "best_epoch": m["best_epoch"],
                         "train_seconds": m["train_seconds"]})
            if best is None or m["val"][metric] > best[0]:  # strictly better: the first of equals wins
                best = (m["val"][metric], model)
        assert best is not None  # candidates() yields at least one point
        winner = best[1]
        if refit:
            cfg = copy.deepcopy(winner.config)
            cfg.train.refit = True
            winner = HQGNN._of_config(cfg).fit(data, user_col, item_col, time_col, validation, progress)
        return winner, rows

    @classmethod
    def from_config(cls, path: str | os.PathLike[str], **params: Any) -> "HQGNN":
        """An unfitted estimator with the fields of TOML file ``path`` (e.g. ``configs/lightgcn_yelp2018.toml``,
        the measured float recipes), then ``params`` by name on top (``reg=4e-4``, ``seed=3`` for both seeds);
        checked by the same :meth:`RunConfig.validate` as the CLI's ``--config``."""
        from .config import load_config

        cfg = load_config(Path(path))
        for name, value in params.items():
            targets = ["data.seed", "train.seed"] if name == "seed" else ["{}.{}".format(*section_field(name))]
            for key in targets:  # ``seed`` sets both seeds, as in the constructor
                cfg.set(key, value)
        return cls._of_config(cfg.validate(origin=os.fspath(path)))

    @classmethod
    def _of_config(cls, cfg: RunConfig) -> "HQGNN":
        """An unfitted estimator with exactly ``cfg`` (dotted names override the keyword defaults)."""
        return cls(**{f"{s}.{k}": copy.deepcopy(v) for s, fields in cfg.to_dict().items() for k, v in fields.items()})

    # -- inference ------------------------------------------------------------------------------------
    @property
    def fitted(self) -> bool:
        return self._run is not None

    @property
    def run(self) -> TrainedRun:
        """The fitted or loaded :class:`hqgnn.run.TrainedRun` (tables, ids, seen items, metrics)."""
        if self._run is None:
            raise HqgnnError("this HQGNN is not fitted yet: call fit(...) or HQGNN.load(dir)")
        return self._run

    @property
    def user_ids(self) -> np.ndarray:
        return self.run.user_ids

    @property
    def item_ids(self) -> np.ndarray:
        return self.run.item_ids

    @property
    def metrics(self) -> dict[str, Any]:
        """What metrics.json holds: best epoch, validation / test metrics, memory, history."""
        return self.run.metrics

    def _recommender(self) -> Recommender:
        if self._rec is None:
            from .device import resolve_device
            from .recommender import Recommender

            self._rec = Recommender(self.run, str(resolve_device(self.config.train.device)))
        return self._rec

    def _rows(self, ids: Any, known: np.ndarray, what: str) -> np.ndarray:
        """Row of each id; an unknown one is an error naming it."""
        rows, unknown = _rows_or_unknown(ids, known)
        if unknown:
            raise HqgnnError(f"unknown {what} {unknown[0]!r} ({len(unknown)} of {len(rows)} unknown)")
        return rows

    def _to_ids(self, rows: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = self.run.item_ids
        pad = "" if ids.dtype.kind == "U" else -1
        out = np.where(rows >= 0, ids[np.clip(rows, 0, None)], np.asarray(pad, dtype=ids.dtype))
        return out, scores

    def recommend(self, users: Any = None, k: int = 10, exclude_seen: bool = True,
                  user_items: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items for each of ``users`` (your ids): ``(item_ids, scores)``, each (len(users), k).

        ``user_items`` instead of ``users``: anonymous sessions, no id needed: a list of item ids (one
        session) or a list of such lists; each is folded in as a user (:meth:`fold_in_users`, nothing
        stored) and ranked exactly as a user is; its own items are excluded unless ``exclude_seen=False``.
        Returns one row per session. Unknown items raise :class:`~hqgnn.errors.HqgnnError` naming them.

        Scored exactly as ``hqgnn recommend`` / ``serve`` (integer codes x scales for quantized models),
        ties to the lower item index; train + validation items excluded unless ``exclude_seen=False``.
        Slots beyond the available items hold score -inf and item id -1 (int ids) or "" (string ids);
        ``k`` above the catalog size is clamped to it (the arrays then have ``n_items`` columns).
        """
        k = check_k(k, self.run.n_items)
        if user_items is not None or users is None:
            return self._recommend_sessions(user_items, k, exclude_seen, users)
        if np.ndim(users) == 0:  # one id: unknown is an error, as GET /recommend's 404
            rows = self._rows(users, self.run.user_ids, "user")
        else:  # several ids: per-user answers, unknown users reported as in POST /recommend/batch
            rows, unknown = _rows_or_unknown(users, self.run.user_ids)
            if unknown:
                shown = ", ".join(repr(u) for u in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
                warnings.warn(f"{len(unknown)} of {len(rows)} users unknown ({shown}): their rows hold no items "
                              "(id padding, score -inf); recommend_batch() lists them", UserWarning, stacklevel=2)
        known = rows >= 0
        scores = np.full((len(rows), k), -np.inf, np.float32)
        items = np.full((len(rows), k), -1, np.int64)
        if known.any():
            scores[known], items[known] = self._recommender().recommend(rows[known], k, exclude_seen=exclude_seen)
        return self._to_ids(items, scores)

    def recommend_batch(self, users: Any, k: int = 10, exclude_seen: bool = True) -> dict[str, Any]:
        """What ``POST /recommend/batch`` answers, for your ids: ``{"results": [{"user", "items": [{"item",
        "score"}, ...]} or {"user", "items": [], "error"}, ...], "unknown_users": [...]}`` in request order."""
        k = check_k(k, self.run.n_items)
        users = list(np.asarray(users).reshape(-1).tolist())
        rows, unknown = _rows_or_unknown(users, self.run.user_ids)
        known = np.flatnonzero(rows >= 0)
        results: list[dict[str, Any]] = [{"user": u, "items": [], "error": f"unknown user {u!r}"} for u in users]
        if len(known):
            scores, items = self._recommender().recommend(rows[known], k, exclude_seen=exclude_seen)
            ids, scores = self._to_ids(np.asarray(items), np.asarray(scores))
            for j, r in enumerate(known.tolist()):
                ok = np.isfinite(scores[j])
                results[r] = {"user": users[r], "items": [{"item": i, "score": float(v)}
                                                          for i, v in zip(ids[j][ok].tolist(), scores[j][ok])]}
        return {"results": results, "unknown_users": unknown}

    def recommend_all(self, k: int = 10, out: str | os.PathLike[str] | None = None, exclude_seen: bool = True,
                      chunk: int | None = None, overwrite: bool = False, progress: bool = False) -> Any:
        """Top-``k`` for every user, exactly as :meth:`recommend` ranks them, in chunks of users.

        ``out=None``: a pandas DataFrame, one row per (user, rank) with columns ``user, rank, item,
        score`` (your ids, rank from 1; refused above :data:`hqgnn.recommend_all.FRAME_ROWS` rows).
        ``out="recs.parquet"`` (or ``.csv``): streamed to that file, resumable after a crash, refused
        if it exists unless ``overwrite``; returns its path. See ``docs/recommend-all.md``.
        """
        from .recommend_all import recommend_all, recommend_all_frame

        if out is None:
            return recommend_all_frame(self._recommender(), k, exclude_seen, chunk)
        recommend_all(self._recommender(), out, k, exclude_seen, chunk, overwrite=overwrite, progress=progress)
        return Path(out)

    def similar_items(self, items: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` items with the largest inner product with each of ``items`` (itself excluded):
        ``(item_ids, scores)``, each (len(items), k)."""
        k = check_k(k, self.run.n_items)
        rows = self._rows(items, self.run.item_ids, "item")
        scores, ids = self._recommender().similar_items(rows, k)
        return self._to_ids(np.asarray(ids), np.asarray(scores))

    def evaluate(self, test: Any = None, ks: Iterable[int] = (20, 50), user_col: str | None = None,
                 item_col: str | None = None) -> dict[str, float]:
        """Full-ranking recall / ndcg / precision / hit_rate @ each of ``ks`` on ``test`` (same forms as
        :meth:`fit`; pairs with ids the model never saw are dropped with a warning), seen items
        masked, ranked as served. ``test=None``: the test split of the data ``fit`` loaded from a
        path or dataset name (or, for a loaded run, its config's data source)."""
        ks = [check_k(k) for k in ks]
        if test is None:
            truth = self._default_test()
        else:
            from .data.memory import interactions_from, pairs_matrix

            data_cfg = self.run.config.data  # default: the columns fit() was given
            truth = pairs_matrix(interactions_from(test, user_col or data_cfg.user_col, item_col or data_cfg.item_col),
                                 self.run.user_ids, self.run.item_ids)
        return self._recommender().evaluate(truth, ks)

    def _default_test(self) -> sp.csr_matrix:
        if self._test is not None:
            return self._test
        source = self.run.config.data.source
        if source == "in-memory":
            raise HqgnnError("no test data: this model was fitted on in-memory data; pass evaluate(test=...)")
        from .data import load_dataset

        ds = load_dataset(self.run.config.data)
        if ds.n_users != self.run.n_users or ds.n_items != self.run.n_items:
            raise HqgnnError(f"{source}: {ds.n_users} users / {ds.n_items} items, but the model has "
                             f"{self.run.n_users} / {self.run.n_items}")
        self._test = ds.matrix(ds.test)
        return self._test

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, run_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the run directory ``hqgnn train`` writes (config, metrics, weights, tables, ids, seen,
        curve, manifest); ``hqgnn recommend / evaluate / export / serve`` read it. Returns its path.

        An existing non-empty ``run_dir`` is refused unless ``overwrite=True``; it is then replaced in one
        step (a reader sees the old run or the new one). The directory is locked while it is written, so a
        concurrent ``save`` / ``hqgnn train --out`` of the same directory is refused.
        """
        from .io import DirLock, listed
        from .run import save_run

        run = self.run
        path = Path(run_dir)
        if path.exists() and not path.is_dir():
            raise HqgnnError(f"{path}: exists and is not a directory")
        with DirLock(path):
            if listed(path) and not overwrite:
                raise HqgnnError(f"{path}: already exists and is not empty; pass overwrite=True to replace it")
            save_run(path, run.config, run.metrics, self._model_state, run.tables, run.user_ids, run.item_ids,
                     run.seen, history_metric=run.config.train.select_metric, carry=False)
        return path

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str], device: str | None = None) -> "HQGNN":
        """Open a run directory written by ``hqgnn train`` or :meth:`save` (``device``: where to score)."""
        from .device import check_device
        from .run import load_model_state, load_run

        run = load_run(Path(run_dir))  # verified: manifest and cross-file checks (one HqgnnError line on a problem)
        est = cls.__new__(cls)
        est.config = run.config
        if device is not None:
            est.config.train.device = device
            est.config.validate()
            check_device(device)
        est._run = run
        est._model_state = load_model_state(Path(run_dir), run.manifest)
        est._rec = None
        est._foldin = None
        est._test = None
        return est


def _rows_or_unknown(ids: Any, known: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Row of each id in ``known`` (-1 where unknown) and the unknown ids, in request order."""
    import pandas as pd

    q = np.asarray(ids).reshape(-1)
    rows = pd.Index(known).get_indexer(q) if len(q) else np.empty(0, np.int64)
    unknown = [u.item() if hasattr(u, "item") else u for u in q[rows < 0]]
    return rows.astype(np.int64), unknown
