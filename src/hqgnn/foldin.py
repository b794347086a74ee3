"""Fold-in: embeddings and codes for users and items that were not in training, without retraining.

A new node :math:`v` (a user, or symmetrically an item) comes with its interactions
:math:`N(v)` with nodes of the other side, whose final trained table is :math:`Y` (rows
:math:`y_j`, degree :math:`d_j` in the run's seen graph). Three estimators of its final
embedding :math:`x_v`, every one vectorized over all new nodes at once (``R`` is their
``(B, n_other)`` 0/1 interaction matrix, :math:`D_R` its row degrees):

* ``"propagate"`` -- one LightGCN propagation step over the trained final tables,

  .. math:: f_v = \\sum_{j \\in N(v)} \\frac{y_j}{\\sqrt{|N(v)|\\, d_j}},
            \\qquad F = D_R^{-1/2} R\\, D^{-1/2} Y.

* ``"lstsq"`` (default, chosen on validation, docs/foldin.md) -- the propagation features mapped by
  the one ``d x d`` matrix :math:`M` that best reproduces the trained nodes' own embeddings from
  their own features (:math:`F_0`, computed the same way from the run's seen graph, :math:`X_0`
  their trained table):

  .. math:: M = \\arg\\min_M \\|F_0 M - X_0\\|_F^2 + \\lambda \\|M\\|_F^2
              = (F_0^\\top F_0 + \\lambda I)^{-1} F_0^\\top X_0, \\qquad x_v = f_v M.

  For a full ``M`` the minimiser is the same when the residual is measured in score space,
  :math:`\\sum_{u,i} (\\langle f_u M, y_i\\rangle - \\langle x_u, y_i\\rangle)^2` (any positive
  definite item Gram gives the same normal equations' solution), so this is the least-squares fit
  against the trained scores; one shared ``d x d`` solve, no per-node system.

* ``"grad"`` -- ``lstsq`` followed by a few Adam steps of BPR on the new rows only (everything else
  frozen; one uniformly drawn negative per interaction and step, seeded).

The float vector is then encoded exactly as the run encodes its own rows
(:meth:`hqgnn.models.HQGNNModel.codes`): L2-normalised for ``model.normalize``; centred by the
run's table means; layer-weighted for layer-wise codes; per-row scales fitted by
:func:`hqgnn.quant.data_scale` (what a data-driven scale is; a learnable per-row scale starts
there), a per-tensor scale reused from the run; float16 scales and terms rounded as stored.
Existing rows, means and per-tensor scales never change, so an old user's ranking is unchanged.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import scipy.sparse as sp
import torch

from .errors import HqgnnError

__all__ = ["DEFAULT_METHOD", "METHODS", "FoldIn", "encode_rows", "encoding_stats_record"]

METHODS = ("propagate", "lstsq", "grad")
DEFAULT_METHOD = "lstsq"
OTHER = {"user": "item", "item": "user"}


class FoldIn:
    """Fold-in vectors for new users or items of ``run`` (a :class:`hqgnn.run.TrainedRun`).

    Parameters
    ----------
    run : TrainedRun
        The trained run; its final float tables (``user_emb`` / ``item_emb``) and seen graph are read,
        never changed.
    method : {"lstsq", "propagate", "grad"}
        The estimator (module docstring).
    ridge : float
        :math:`\\lambda` of ``lstsq`` relative to the mean diagonal of :math:`F_0^\\top F_0`.
    grad_steps, grad_lr : int, float
        ``grad``: Adam steps and step size relative to the RMS entry of the starting rows.
    seed : int
        ``grad``: the negative sampler's seed.
    """

    def __init__(
        self,
        run: Any,
        method: str = DEFAULT_METHOD,
        ridge: float = 1e-3,
        grad_steps: int = 30,
        grad_lr: float = 0.05,
        seed: int = 0,
    ) -> None:
        if method not in METHODS:
            raise HqgnnError(f"unknown fold-in method {method!r} (expected one of {', '.join(METHODS)})")
        self.run, self.method, self.ridge = run, method, float(ridge)
        self.grad_steps, self.grad_lr, self.seed = int(grad_steps), float(grad_lr), int(seed)
        self.tables = {s: run.tables[f"{s}_emb"].detach().float().cpu().numpy() for s in ("user", "item")}
        seen = sp.csr_matrix(run.seen, dtype=np.float32)
        # degrees of the seen graph (train + validation: what the run masks and, after a refit, trained on)
        self.inv_sqrt_deg = {"user": _inv_sqrt(seen.getnnz(axis=1)), "item": _inv_sqrt(seen.getnnz(axis=0))}
        self._seen = {"user": seen, "item": seen.T.tocsr()}
        # the other side's table pre-scaled by D^-1/2: one sparse x dense product per call
        self._scaled = {s: self.tables[s] * self.inv_sqrt_deg[s][:, None] for s in ("user", "item")}
        self._maps: dict[str, np.ndarray] = {}

    def features(self, side: str, interactions: sp.spmatrix) -> np.ndarray:
        """:math:`F = D_R^{-1/2} R D^{-1/2} Y`: (B, d) float32 propagation features of new ``side`` rows."""
        r = _binary(interactions, self.tables[OTHER[side]].shape[0])
        f = np.asarray(r @ self._scaled[OTHER[side]], dtype=np.float32)
        return cast(np.ndarray, f * _inv_sqrt(r.getnnz(axis=1))[:, None])

    def map(self, side: str) -> np.ndarray:
        """:math:`M` of ``lstsq`` for ``side`` (d, d), fitted once on the run's own rows and cached."""
        if side not in self._maps:
            f0 = self.features(side, self._seen[side]).astype(np.float64)
            x0 = self.tables[side].astype(np.float64)
            keep = np.asarray(self._seen[side].getnnz(axis=1) > 0)  # cold rows carry no evidence
            f0, x0 = f0[keep], x0[keep]
            gram = f0.T @ f0
            lam = self.ridge * max(float(np.trace(gram)) / max(len(gram), 1), 1e-12)
            self._maps[side] = np.linalg.solve(gram + lam * np.eye(len(gram)), f0.T @ x0).astype(np.float32)
        return self._maps[side]

    def vectors(self, side: str, interactions: sp.spmatrix) -> np.ndarray:
        """Final float embeddings (B, d) of new ``side`` rows (``"user"`` or ``"item"``) from their
        ``interactions`` with the run's other side (a (B, n_other) sparse matrix; values are ignored,
        every stored entry is one interaction). Every row needs at least one interaction."""
        if side not in OTHER:
            raise ValueError(f"side must be 'user' or 'item', got {side!r}")
        r = _binary(interactions, self.tables[OTHER[side]].shape[0])
        if r.shape[0] and r.getnnz(axis=1).min() == 0:
            raise HqgnnError(f"fold-in: {side} row {int(np.argmin(r.getnnz(axis=1)))} has no interactions")
        f = self.features(side, r)
        if self.method == "propagate":
            return f
        x = f @ self.map(side)
        if self.method == "grad":
            x = self._grad(side, r, x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _grad(self, side: str, r: sp.csr_matrix, x0: np.ndarray) -> np.ndarray:
        """A few Adam steps of BPR on the rows ``x0`` only (the other side's table frozen)."""
        coo = r.tocoo()
        rows, cols = torch.from_numpy(coo.row.astype(np.int64)), torch.from_numpy(coo.col.astype(np.int64))
        y = torch.from_numpy(self.tables[OTHER[side]])
        x = torch.from_numpy(x0.copy()).requires_grad_(True)
        rms = float(np.sqrt(np.mean(np.square(x0)))) if x0.size else 1.0
        opt = torch.optim.Adam([x], lr=self.grad_lr * max(rms, 1e-6))
        gen = torch.Generator().manual_seed(self.seed)
        pos = y[cols]
        for _ in range(self.grad_steps):
            neg = y[torch.randint(0, len(y), (len(cols),), generator=gen)]
            loss = torch.nn.functional.softplus(-(x[rows] * (pos - neg)).sum(1)).sum()
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
            opt.step()
        return x.detach().numpy()


def encode_rows(run: Any, side: str, x: np.ndarray) -> dict[str, torch.Tensor]:
    """The table rows of new ``side`` rows with final float embeddings ``x`` (B, d), in the run's format:
    ``{side}_emb`` and, for a quantized run, what :meth:`hqgnn.models.HQGNNModel.codes` stores for that
    side (codes and scales, float queries, per-item terms), computed against the run's own means,
    layer weights and per-tensor scales. Keys are those of ``run.tables`` for that side; per-tensor
    (0-d) scales are shared and not returned."""
    cfg = run.config
    xt = torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))
    if xt.ndim != 2 or xt.shape[1] != run.tables[f"{side}_emb"].shape[1]:
        raise ValueError(f"x must be (B, {run.tables[f'{side}_emb'].shape[1]}), got {tuple(xt.shape)}")
    if cfg.model.normalize:  # the run's rows are on the unit sphere before any quantizer
        xt = torch.nn.functional.normalize(xt, dim=1)
    out = {f"{side}_emb": xt}
    if not run.quantized:
        return out
    q = cfg.quant
    mu_u, mu_i, w = _encoding_stats(run)
    user_bits = q.bits if q.user_bits < 0 else q.user_bits
    if side == "item":
        v = xt - mu_i if q.center else xt
        if w is not None:
            v = v / w
        codes, scale = _quantize(v, q.bits, run.tables["item_scale"], q.scale_dtype)
        out.update(item_codes=codes, item_scale=scale)
        if "item_term" in run.tables:  # <mu_u, Q(i - mu_i)>: the cross term that varies per item
            term = (codes.float() * (scale.float()[:, None] if scale.ndim else scale.float())) @ mu_u[0]
            out["item_term"] = _round_to(term, q.scale_dtype)
    else:
        v = xt * w if w is not None else xt
        if user_bits:
            v = v - mu_u if q.center else v
            out["user_codes"], out["user_scale"] = _quantize(v, user_bits, run.tables["user_scale"], q.scale_dtype)
        else:
            out["user_query"] = v.contiguous()
    return {k: t for k, t in out.items() if not (k.endswith("_scale") and t.ndim == 0)}


def _encoding_stats(run: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The user and item table means (1, d) and, for layer-wise codes, the per-layer weights (1, d) of the run's
    item table (HQGNNModel._layer_weights), computed once per run object: every anonymous session of a served
    run encodes against them, and they cost a pass over both tables. A grown run (fold-in) carries the stats
    of the trained tables in ``metrics["fold_in_encoding"]`` (:func:`encoding_stats_record`), so a fold-in
    into a grown run, even after a save and reload, encodes against the trained run's means, not the grown
    tables' (which would shift every later code)."""
    cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = run.__dict__.get("_encoding_stats")
    if cached is None:
        stored = (run.metrics or {}).get("fold_in_encoding")
        if stored is not None:
            w = stored.get("layer_weight")
            cached = (
                torch.tensor(stored["user_mean"], dtype=torch.float32).reshape(1, -1),
                torch.tensor(stored["item_mean"], dtype=torch.float32).reshape(1, -1),
                None if w is None else torch.tensor(w, dtype=torch.float32).reshape(1, -1),
            )
        else:
            users, items = (run.tables[f"{s}_emb"].detach().float().cpu() for s in ("user", "item"))
            w = None
            if run.config.quant.layerwise:
                dim = run.config.model.dim
                blocks = items.reshape(items.shape[0], -1, dim)
                w = blocks.abs().mean(dim=(0, 2)).clamp_min(1e-12).repeat_interleave(dim).reshape(1, -1)
            cached = (users.mean(0, keepdim=True), items.mean(0, keepdim=True), w)
        run.__dict__["_encoding_stats"] = cached
    return cached


def encoding_stats_record(run: Any) -> dict[str, list[float] | None]:
    """The stats :func:`encode_rows` encodes against, as JSON lists (float32 values round-trip exactly
    through Python floats), for a grown run's metrics."""
    mu_u, mu_i, w = _encoding_stats(run)
    return {
        "user_mean": mu_u.reshape(-1).tolist(),
        "item_mean": mu_i.reshape(-1).tolist(),
        "layer_weight": None if w is None else w.reshape(-1).tolist(),
    }


def _quantize(
    v: torch.Tensor, bits: int, stored_scale: torch.Tensor, scale_dtype: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (int8) and scale of rows ``v`` as the run's quantizer stores them: a per-tensor (0-d)
    ``stored_scale`` is reused, per-row scales are fitted (and rounded to ``scale_dtype``)."""
    from .quant import EmbeddingQuantizer, integer_codes

    if stored_scale.ndim == 0:
        s = stored_scale.detach().float().cpu()
        return integer_codes(v, s, bits).to(torch.int8), s
    quantizer = EmbeddingQuantizer(bits, estimator="ste", scale="row", scale_dtype=scale_dtype)
    return quantizer.quantize(v)


def _round_to(x: torch.Tensor, dtype: str) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32) if dtype == "float16" else x.to(torch.float32)


def _inv_sqrt(deg: np.ndarray) -> np.ndarray:
    """1 / sqrt(max(deg, 1)) as float32 (a node of degree 0 contributes nothing anyway)."""
    return cast(np.ndarray, (1.0 / np.sqrt(np.maximum(np.asarray(deg).reshape(-1), 1))).astype(np.float32))


def _binary(m: sp.spmatrix, n_cols: int) -> sp.csr_matrix:
    """``m`` as a 0/1 float32 CSR matrix of ``n_cols`` columns (duplicates merged)."""
    r = sp.csr_matrix(m, dtype=np.float32)
    if r.shape[1] != n_cols:
        raise ValueError(f"interactions must have {n_cols} columns, got {r.shape[1]}")
    r.sum_duplicates()
    r.data[:] = 1.0
    r.eliminate_zeros()
    return r
