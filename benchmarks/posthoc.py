"""Post-hoc compression of a float teacher's embeddings (sign, ITQ, PQ/OPQ, SQ, RaBitQ) at known bytes per item.

Each method compresses the item table (and, for symmetric methods, the users), then hands the
project's evaluator exactly the ranking its search would serve:

* score-reproducible methods give a ``Scorer`` (``users -> (B, n_items)`` scores, the protocol of
  :mod:`hqgnn.eval.evaluator`); the evaluator masks seen items and ranks (ties: lower item id).
  For FAISS ADC methods with float queries the ADC inner product is ``<q, decode(code_i)>``
  (PQ/OPQ: the sum of per-subspace lookups; SQ: FAISS decodes the code and takes the inner product
  with the float query), so the scorer is ``q' @ decoded_items.T`` with ``q'`` the query after
  OPQ's rotation (identity otherwise). Tests check this against FAISS' own search.
* RaBitQ's score is an estimator computed inside FAISS; it gets a ``TopK`` (``(users, k) -> ids``,
  seen items dropped) that runs ``IndexRaBitQ.search`` with ``k + (the batch's most seen items)``.

Bytes are what a server stores: ``item_bytes`` per item, ``user_bytes`` per user, ``table_bytes``
once per table (codebooks, rotations, means, ranges). Decisions (no hyperparameter is tuned on test;
every fit sees the item table only):

* ``sign_*``: no centering, sign(0) = +1, scale = mean |x| per row (its least-squares value).
* ITQ: items centered by their mean mu, rotated by ITQ's R, coded as s * sign. With a float query the
  mean only adds ``<q, mu>``, a per-user constant, so it costs no per-item byte. ``itq_sign_sym``
  codes the user as ``s_u sign(x_u R)`` (rotated, not centered): ``<x_u_hat, x_i_hat>`` is then
  ``s_u s_i <b_u, b_i>`` plus a per-user constant, still no per-item byte.
* SQ: FAISS' QT_8bit / QT_4bit (a trained min/max range per dimension, stored per table) with float
  queries: search decodes the item code and takes the inner product with the float query.
* RaBitQ: FAISS' random rotation + IndexRaBitQ (1-bit codes unless ``rabitq_b{nb}``), the float
  user embedding is what the server holds (``user_bytes`` = 4d); FAISS quantizes it to ``qb`` bits
  per query. ``item_bytes`` is FAISS' ``code_size`` (sign bits + per-item float factors).
* ``train_seconds`` = fitting and encoding the item table; ``eval_seconds`` = the full evaluation.

    PYTHONPATH=src python benchmarks/posthoc.py RUN_DIR --out rows.json [--methods a,b] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from hqgnn.eval import code_scorer, embedding_scorer

Scorer = Callable[[torch.Tensor], torch.Tensor]
TopK = Callable[[torch.Tensor, int], torch.Tensor]
Evaluate = Callable[[Scorer], dict]
EvaluateRanking = Callable[[TopK], dict]

METRIC_KEYS = ("recall@20", "ndcg@20", "recall@50", "ndcg@50")
ITQ_ITERS = 50
# ("np": no polysemous training, which only reorders codewords for Hamming filtering, irrelevant to ADC)
# FAISS' own defaults (module constants so tests can shrink them): k-means iterations of each PQ
# sub-quantizer, and OPQ's alternations (each retrains a PQ for OPQ_PQ_ITERS k-means iterations)
PQ_KMEANS_ITERS = 25
OPQ_ITERS = 50
OPQ_PQ_ITERS = 4

DEFAULT_METHODS: tuple[str, ...] = (
    "float32",
    "sign_hamming",
    "sign_rowscale_sym",
    "sign_rowscale_asym",
    "itq_sign_sym",
    "itq_sign_asym",
    "pq8x8_adc",
    "pq16x8_adc",
    "pq32x8_adc",
    "opq8_pq8x8_adc",
    "opq16_pq16x8_adc",
    "opq32_pq32x8_adc",
    "sq8",
    "sq4",
    "rabitq_q4",
    "rabitq_q8",
)
# also accepted: pq{M}x8_adc / opq{M}_pq{M}x8_adc for any M dividing d, rabitq_q{qb}, rabitq_b{nb}_q{qb}
# (multi-bit RaBitQ codes, FAISS' nb_bits), itq_hamming (ITQ rotation + plain sign, Hamming ranking)


FAISS_THREADS: int | None = None  # None: every core this process may run on


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _faiss() -> Any:
    import faiss

    # set explicitly (OpenMP's default may count cores outside this process' affinity mask)
    faiss.omp_set_num_threads(FAISS_THREADS or _cores())
    return faiss


@dataclass
class Compressed:
    """One compressed table: bytes, fit time and how to rank with it (a scorer or a top-K)."""

    method: str
    family: str
    item_bytes: int
    user_bytes: int
    table_bytes: int
    train_seconds: float
    scorer: Scorer | None = None
    topk: TopK | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fitted objects, for tests and inspection


# ----------------------------------------------------------------------------------------------- helpers


def _np32(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))


def sign_pm1(x: np.ndarray) -> np.ndarray:
    """{-1, +1} float32 codes, sign(0) = +1 (the project's 1-bit convention)."""
    return np.where(x >= 0, np.float32(1), np.float32(-1))


def row_scale(x: np.ndarray) -> np.ndarray:
    """mean |x| per row: the least-squares scale of s * sign(x)."""
    return np.abs(x).mean(axis=1).astype(np.float32)


def _per_device(make: Callable[[torch.device], Scorer]) -> Scorer:
    """A scorer that builds its tensors on the device of the first user batch it sees (CPU or GPU)."""
    cache: dict[torch.device, Scorer] = {}

    def score(users: torch.Tensor) -> torch.Tensor:
        dev = users.device
        if dev not in cache:
            cache[dev] = make(dev)
        return cache[dev](users)

    return score


def float_query_scorer(queries: np.ndarray, items: np.ndarray) -> Scorer:
    """``queries[u] @ items.T``: asymmetric scoring (float queries against decoded items)."""
    q, it = torch.from_numpy(_np32(queries)), torch.from_numpy(_np32(items))
    return _per_device(lambda dev: embedding_scorer(q.to(dev), it.to(dev)))


def scaled_code_scorer(user_codes: np.ndarray, user_scale: np.ndarray,
                       item_codes: np.ndarray, item_scale: np.ndarray) -> Scorer:
    """``s_u s_i <b_u, b_i>`` through the project's own :func:`code_scorer` (what its engine computes)."""
    uc, us = torch.from_numpy(user_codes.astype(np.int8)), torch.from_numpy(_np32(user_scale))
    ic, is_ = torch.from_numpy(item_codes.astype(np.int8)), torch.from_numpy(_np32(item_scale))
    return _per_device(lambda dev: code_scorer(uc.to(dev), us.to(dev), ic.to(dev), is_.to(dev)))


def hamming_scorer(user_codes: np.ndarray, item_codes: np.ndarray) -> Scorer:
    """``-Hamming(b_u, b_i) = (<b_u, b_i> - d) / 2`` for {-1, +1} codes (exact: small integers in float32)."""
    d = user_codes.shape[1]
    uc, ic = torch.from_numpy(_np32(user_codes)), torch.from_numpy(_np32(item_codes))

    def make(dev: torch.device) -> Scorer:
        u, it = uc.to(dev), ic.t().contiguous().to(dev)
        return lambda users: (u[users] @ it - d) * 0.5

    return _per_device(make)


def itq_rotation(v: np.ndarray, n_iter: int = ITQ_ITERS, seed: int = 0) -> np.ndarray:
    """ITQ (Gong & Lazebnik 2011): orthogonal R (d, d) minimising ||sign(V R) - V R||_F on centered V.

    Alternates B = sign(V R) and the orthogonal Procrustes step: with V^T B = U S W^T, R = U W^T.
    Starts from a seeded random rotation (no PCA reduction: we keep all d bits, and a PCA basis
    composed with a random rotation is just another random start).
    """
    from threadpoolctl import threadpool_limits

    v = np.asarray(v, dtype=np.float64)
    d = v.shape[1]
    r, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    # (n, d) @ (d, d) and a d x d SVD: too small to gain from BLAS threads, which spin badly on busy cores
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(n_iter):
            b = np.where(v @ r >= 0, 1.0, -1.0)
            u, _, wt = np.linalg.svd(v.T @ b)
            r = u @ wt
    return r.astype(np.float32)


def itq_objective(v: np.ndarray, r: np.ndarray) -> float:
    """ITQ's quantization loss ||sign(V R) - V R||_F^2."""
    p = v @ r
    return float(((sign_pm1(p) - p) ** 2).sum())


def rowscale_error(v: np.ndarray, r: np.ndarray | None = None) -> float:
    """||V R - s * sign(V R)||_F^2 with s = mean |.| per row (the stored reconstruction's error)."""
    p = v if r is None else v @ r
    return float(((p - row_scale(p)[:, None] * sign_pm1(p)) ** 2).sum())


def drop_seen_topk(ids: np.ndarray, users: np.ndarray, seen: sp.csr_matrix, k: int) -> np.ndarray:
    """Keep each row's first ``k`` ids that are not seen by that user (order kept), -1 padded; vectorized."""
    n_items = seen.shape[1]
    ids = np.asarray(ids, dtype=np.int64)
    sub = seen[users]
    sub.sort_indices()
    rows = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(sub.indptr))
    seen_keys = rows * n_items + sub.indices.astype(np.int64)  # sorted: rows ascending, then columns
    keys = np.arange(len(users), dtype=np.int64)[:, None] * n_items + np.clip(ids, 0, None)
    if len(seen_keys):
        pos = np.clip(np.searchsorted(seen_keys, keys), 0, len(seen_keys) - 1)
        is_seen = seen_keys[pos] == keys
    else:
        is_seen = np.zeros(ids.shape, dtype=bool)
    valid = (ids >= 0) & ~is_seen
    order = np.argsort(~valid, axis=1, kind="stable")[:, :k]  # valid entries first, in FAISS' order
    out = np.take_along_axis(ids, order, axis=1)
    out[~np.take_along_axis(valid, order, axis=1)] = -1
    if out.shape[1] < k:
        out = np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)
    return out


# ----------------------------------------------------------------------------------------------- methods


def _float32(u: np.ndarray, it: np.ndarray, seed: int) -> Compressed:
    d = it.shape[1]
    return Compressed("float32", "float", 4 * d, 4 * d, 0, 0.0, scorer=float_query_scorer(u, it))


def _sign_hamming(u: np.ndarray, it: np.ndarray, seed: int) -> Compressed:
    d = it.shape[1]
    t0 = time.perf_counter()
    bi = sign_pm1(it)
    fit = time.perf_counter() - t0
    bu = sign_pm1(u)
    return Compressed("sign_hamming", "posthoc", d // 8, d // 8, 0, fit, scorer=hamming_scorer(bu, bi),
                      extra={"item_codes": bi, "user_codes": bu})


def _sign_rowscale(u: np.ndarray, it: np.ndarray, seed: int, sym: bool) -> Compressed:
    d = it.shape[1]
    t0 = time.perf_counter()
    bi, si = sign_pm1(it), row_scale(it)
    fit = time.perf_counter() - t0
    extra = {"item_codes": bi, "item_scale": si}
    if sym:
        bu, su = sign_pm1(u), row_scale(u)
        extra.update(user_codes=bu, user_scale=su)
        return Compressed("sign_rowscale_sym", "posthoc", d // 8 + 4, d // 8 + 4, 0, fit,
                          scorer=scaled_code_scorer(bu, su, bi, si), extra=extra)
    return Compressed("sign_rowscale_asym", "posthoc", d // 8 + 4, 4 * d, 0, fit,
                      scorer=float_query_scorer(u, si[:, None] * bi), extra=extra)


def _itq(u: np.ndarray, it: np.ndarray, seed: int, mode: str) -> Compressed:
    """ITQ on mean-centered items, then row-scaled sign (``asym``/``sym``) or plain sign (``hamming``).

    Items store ``b_i = sign((x_i - mu) R)`` and (scaled modes) ``s_i``; the server holds mu and R per
    table, so the reconstruction is ``x_i ~ mu + s_i b_i R^T``. Against any query vector q,
    ``<q, mu>`` is a per-user constant, so ranking by ``<q, s_i b_i R^T> = s_i <q R, b_i>`` is exactly
    ranking by the reconstruction's inner product, at no per-item byte for the mean.
    Symmetric: users are rotated, *not* centered: ``q ~ s_u b_u R^T`` with ``b_u = sign(x_u R)``, and
    ``<q, mu + s_i b_i R^T> = const_u + s_u s_i <b_u, b_i>`` (R orthogonal). Centering users by mu
    as well would leave an item-dependent term ``<mu, s_i b_i R^T>`` (a per-item float to store).
    """
    d = it.shape[1]
    t0 = time.perf_counter()
    mu = it.mean(axis=0, dtype=np.float64).astype(np.float32)
    v = it - mu
    r = itq_rotation(v, seed=seed)
    p = v @ r
    bi, si = sign_pm1(p), row_scale(p)
    fit = time.perf_counter() - t0
    table = 4 * d * d + 4 * d
    extra = {"rotation": r, "mean": mu, "item_codes": bi, "item_scale": si}
    if mode == "asym":
        return Compressed("itq_sign_asym", "posthoc", d // 8 + 4, 4 * d, table, fit,
                          scorer=float_query_scorer(u @ r, si[:, None] * bi), extra=extra)
    pu = u @ r
    bu, su = sign_pm1(pu), row_scale(pu)
    extra.update(user_codes=bu, user_scale=su)
    if mode == "sym":
        return Compressed("itq_sign_sym", "posthoc", d // 8 + 4, d // 8 + 4, table, fit,
                          scorer=scaled_code_scorer(bu, su, bi, si), extra=extra)
    return Compressed("itq_hamming", "posthoc", d // 8, d // 8, table, fit,
                      scorer=hamming_scorer(bu, bi), extra=extra)


def _pq(u: np.ndarray, it: np.ndarray, seed: int, m: int, opq: bool) -> Compressed:
    """FAISS (O)PQ m x 8 bits, inner-product ADC with float queries: score = <q R_opq, decode_pq(code_i)>."""
    faiss = _faiss()
    n, d = it.shape
    if d % m:
        raise ValueError(f"PQ with M={m} needs d divisible by M, got d={d}")
    name = f"opq{m}_pq{m}x8_adc" if opq else f"pq{m}x8_adc"
    t0 = time.perf_counter()
    # "np": no polysemous training (it only reorders codewords for Hamming pre-filtering: slow, and
    # irrelevant to ADC scores)
    index = faiss.index_factory(d, f"OPQ{m},PQ{m}x8np" if opq else f"PQ{m}x8np", faiss.METRIC_INNER_PRODUCT)
    if opq:
        lt = faiss.downcast_VectorTransform(index.chain.at(0))
        ipq = faiss.downcast_index(index.index)
    else:
        lt, ipq = None, index
    ipq.pq.cp.seed = 1234 + seed  # FAISS' default k-means seed is 1234
    ipq.pq.cp.niter = PQ_KMEANS_ITERS
    if opq:
        lt.niter, lt.niter_pq = OPQ_ITERS, OPQ_PQ_ITERS
    index.train(it)
    index.add(it)
    fit = time.perf_counter() - t0
    decoded = ipq.reconstruct_n(0, n)  # in OPQ's rotated space for OPQ (the inner index sees rotated data)
    queries = lt.apply(u) if opq else u
    table = ipq.pq.M * ipq.pq.ksub * ipq.pq.dsub * 4 + (d * d * 4 if opq else 0)
    return Compressed(name, "posthoc", int(ipq.code_size), 4 * d, table, fit,
                      scorer=float_query_scorer(queries, decoded), extra={"index": index, "decoded": decoded})


def _sq(u: np.ndarray, it: np.ndarray, seed: int, bits: int) -> Compressed:
    """FAISS IndexScalarQuantizer QT_8bit / QT_4bit (per-dimension min-max ranges) with float queries.

    FAISS' inner-product search over SQ codes decodes each item code to floats
    (``vmin_j + (c_j + 0.5) / (2^b - 1) * vdiff_j``) and takes the inner product with the float
    query, so the scorer is ``q @ decode(codes).T``.
    """
    faiss = _faiss()
    n, d = it.shape
    qtype = {8: faiss.ScalarQuantizer.QT_8bit, 4: faiss.ScalarQuantizer.QT_4bit}[bits]
    t0 = time.perf_counter()
    index = faiss.IndexScalarQuantizer(d, qtype, faiss.METRIC_INNER_PRODUCT)
    index.train(it)
    index.add(it)
    fit = time.perf_counter() - t0
    decoded = index.reconstruct_n(0, n)
    table = int(index.sq.trained.size()) * 4
    return Compressed(f"sq{bits}", "posthoc", int(index.code_size), 4 * d, table, fit,
                      scorer=float_query_scorer(u, decoded), extra={"index": index, "decoded": decoded})


def _rabitq_name(qb: int, nb: int) -> str:
    return f"rabitq_q{qb}" if nb == 1 else f"rabitq_b{nb}_q{qb}"


def _rabitq(u: np.ndarray, it: np.ndarray, seed: int, qb: int, nb: int, seen: sp.csr_matrix | None) -> Compressed:
    """FAISS RaBitQ (flat, inner product): a seeded random rotation, then IndexRaBitQ; queries are
    quantized to ``qb`` bits inside FAISS' search.

    The rotation is part of RaBitQ (Gao & Long 2024); FAISS leaves it to an ``IndexPreTransform``
    with a ``RandomRotationMatrix`` (the ``"RR{d},RaBitQ"`` factory string), which is what we build.
    """
    faiss = _faiss()
    n, d = it.shape
    if seen is None:
        raise ValueError("RaBitQ ranks with FAISS' own search and needs `seen` (the CSR of items to exclude)")
    if not hasattr(faiss, "IndexRaBitQ"):
        raise ValueError(f"{_rabitq_name(qb, nb)} needs a faiss build with IndexRaBitQ, "
                         f"found faiss {faiss.__version__}")
    name = _rabitq_name(qb, nb)
    t0 = time.perf_counter()
    rr = faiss.RandomRotationMatrix(d, d)
    rr.init(1234 + seed)
    inner = faiss.IndexRaBitQ(d, faiss.METRIC_INNER_PRODUCT, nb)
    index = faiss.IndexPreTransform(rr, inner)
    index.train(it)
    index.add(it)
    fit = time.perf_counter() - t0
    inner.qb = qb
    params = faiss.RaBitQSearchParameters()  # IndexPreTransform forwards these to the RaBitQ index
    params.qb = qb
    n_seen = np.diff(seen.indptr)
    uq = _np32(u)

    def topk(users: torch.Tensor, k: int) -> torch.Tensor:
        uu = users.detach().cpu().numpy().astype(np.int64)
        kk = int(min(n, k + (int(n_seen[uu].max()) if len(uu) else 0)))
        _, ids = index.search(uq[uu], kk, params=params)
        return torch.from_numpy(drop_seen_topk(ids, uu, seen, k)).to(users.device)

    # FAISS' code_size already counts the per-item float factors next to the bits; per table: the
    # RaBitQ centroid (d floats) and the rotation (d x d floats, as FAISS stores it)
    return Compressed(name, "posthoc", int(inner.code_size), 4 * d, 4 * d + 4 * d * d, fit, topk=topk,
                      extra={"index": index, "inner": inner, "rotation": rr, "params": params})


_PATTERNS = r"pq\d+x8_adc|opq(\d+)_pq\1x8_adc|rabitq_q\d+|rabitq_b\d+_q\d+"


def is_known(method: str) -> bool:
    """Whether ``method`` names a method :func:`build` knows (checked before any fitting starts)."""
    return method in DEFAULT_METHODS or method == "itq_hamming" or re.fullmatch(_PATTERNS, method) is not None


def build(method: str, user_emb: Any, item_emb: Any, seed: int = 0, seen: sp.csr_matrix | None = None) -> Compressed:
    """Fit method ``method`` on the item table (users only encoded) and return its ranking hook."""
    u, it = _np32(user_emb), _np32(item_emb)
    if u.ndim != 2 or it.ndim != 2 or u.shape[1] != it.shape[1]:
        raise ValueError(f"user_emb / item_emb must be (n, d) with the same d, got {u.shape} and {it.shape}")
    d = it.shape[1]
    if method.startswith(("sign", "itq")) and d % 8:
        raise ValueError(f"{method}: bit-packed codes need d % 8 == 0, got d={d}")
    simple: dict[str, Callable[[], Compressed]] = {
        "float32": lambda: _float32(u, it, seed),
        "sign_hamming": lambda: _sign_hamming(u, it, seed),
        "sign_rowscale_sym": lambda: _sign_rowscale(u, it, seed, sym=True),
        "sign_rowscale_asym": lambda: _sign_rowscale(u, it, seed, sym=False),
        "itq_sign_sym": lambda: _itq(u, it, seed, "sym"),
        "itq_sign_asym": lambda: _itq(u, it, seed, "asym"),
        "itq_hamming": lambda: _itq(u, it, seed, "hamming"),
        "sq8": lambda: _sq(u, it, seed, 8),
        "sq4": lambda: _sq(u, it, seed, 4),
    }
    if method in simple:
        return simple[method]()
    if m := re.fullmatch(r"pq(\d+)x8_adc", method):
        return _pq(u, it, seed, int(m.group(1)), opq=False)
    if (m := re.fullmatch(r"opq(\d+)_pq(\d+)x8_adc", method)) and m.group(1) == m.group(2):
        return _pq(u, it, seed, int(m.group(1)), opq=True)
    if m := re.fullmatch(r"rabitq_q(\d+)", method):
        return _rabitq(u, it, seed, int(m.group(1)), 1, seen)
    if m := re.fullmatch(r"rabitq_b(\d+)_q(\d+)", method):
        return _rabitq(u, it, seed, int(m.group(2)), int(m.group(1)), seen)
    raise ValueError(f"unknown post-hoc method {method!r}; known: {', '.join(DEFAULT_METHODS)}, itq_hamming, "
                     "pq{M}x8_adc, opq{M}_pq{M}x8_adc, rabitq_q{qb}, rabitq_b{nb}_q{qb}")


# ----------------------------------------------------------------------------------------------- rows


def posthoc_rows(
    user_emb: Any,
    item_emb: Any,
    evaluate: Evaluate,
    dataset: str,
    device_name: str,
    seed: int = 0,
    methods: Sequence[str] | None = None,
    evaluate_ranking: EvaluateRanking | None = None,
    seen: sp.csr_matrix | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """One result row per method (the teacher's own float32 row included by default).

    ``evaluate(scorer)`` -> metrics: e.g. ``lambda s: ev.evaluate(scorer=s)`` for a
    :class:`hqgnn.eval.RankingEvaluator` ``ev``. ``evaluate_ranking(topk)`` -> metrics, with ``topk``
    following the evaluator's ``TopK`` protocol ((users, k) -> (B, k) ids, seen items already
    dropped, -1 padded): e.g. ``lambda t: ev.evaluate(topk=t)``. ``seen`` is the CSR of items to
    exclude (the evaluator's ``exclude``); both are needed only by RaBitQ, which ranks inside FAISS.
    :func:`evaluator_hooks` builds all three from an evaluator.
    """
    methods = list(DEFAULT_METHODS if methods is None else methods)
    # fail before minutes of fitting, not in the middle of them
    unknown = [m for m in methods if not is_known(m)]
    if unknown:
        raise ValueError(f"unknown post-hoc method(s) {', '.join(unknown)}")
    if any(m.startswith("rabitq") for m in methods) and (evaluate_ranking is None or seen is None):
        raise ValueError("RaBitQ ranks inside FAISS: pass evaluate_ranking and seen (see evaluator_hooks)")
    rows = []
    for method in methods:
        c = build(method, user_emb, item_emb, seed=seed, seen=seen)
        t0 = time.perf_counter()
        if c.scorer is not None:
            metrics = evaluate(c.scorer)
        else:
            assert c.topk is not None and evaluate_ranking is not None
            metrics = evaluate_ranking(c.topk)
        eval_seconds = time.perf_counter() - t0
        row = {
            "dataset": dataset, "method": c.method, "family": c.family,
            "item_bytes": c.item_bytes, "user_bytes": c.user_bytes, "table_bytes": c.table_bytes,
            **{k: float(metrics[k]) for k in METRIC_KEYS},
            "train_seconds": c.train_seconds, "eval_seconds": eval_seconds,
            "device": device_name, "seed": seed,
        }
        rows.append(row)
        if log:
            log(f"{c.method:>20s}  {c.item_bytes:4d} B/item  recall@20 {row['recall@20']:.4f}  "
                f"ndcg@20 {row['ndcg@20']:.4f}  fit {c.train_seconds:.2f}s  eval {eval_seconds:.2f}s")
    return rows


def evaluator_hooks(ev: Any) -> dict[str, Any]:
    """``evaluate``, ``evaluate_ranking`` and ``seen`` for :func:`posthoc_rows` from a ``RankingEvaluator``."""
    indptr, indices = ev.ex_indptr.cpu().numpy(), ev.ex_indices.cpu().numpy()
    seen = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(ev.n_users, ev.n_items))
    return {
        "evaluate": lambda scorer: ev.evaluate(scorer=scorer),
        "evaluate_ranking": lambda topk: ev.evaluate(topk=topk),
        "seen": seen,
    }


# ----------------------------------------------------------------------------------------------- CLI


def run_dir_rows(run_dir: str | Path, methods: Sequence[str] | None = None, device: str = "cpu",
                 seed: int = 0, ks: Iterable[int] = (20, 50), log: Callable[[str], None] | None = None) -> list[dict]:
    """Rows for a finished float run directory: its tables, its seen matrix, the test split rebuilt from its config."""
    from hqgnn.data import load_dataset
    from hqgnn.errors import HqgnnError
    from hqgnn.eval import RankingEvaluator
    from hqgnn.run import load_run
    from hqgnn.train.pipeline import device_name

    run = load_run(run_dir)
    if "user_emb" not in run.tables or "item_emb" not in run.tables:
        raise HqgnnError(f"{run_dir}: tables.safetensors has no user_emb / item_emb")
    data = load_dataset(run.config.data)
    if (data.n_users, data.n_items) != run.seen.shape:
        raise HqgnnError(f"{run_dir}: the data its config names has {data.n_users} users x {data.n_items} items, "
                         f"the run has {run.seen.shape[0]} x {run.seen.shape[1]}")
    dev = torch.device(device)
    ev = RankingEvaluator(data.matrix(data.test), run.seen, ks, dev)
    hooks = evaluator_hooks(ev)
    return posthoc_rows(run.tables["user_emb"], run.tables["item_emb"], hooks["evaluate"], data.name,
                        device_name(dev), seed=seed, methods=methods, evaluate_ranking=hooks["evaluate_ranking"],
                        seen=hooks["seen"], log=log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished float run directory")
    ap.add_argument("--out", default="", help="write the rows here as JSON (atomically)")
    ap.add_argument("--methods", default="", help="comma-separated methods (default: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from hqgnn.errors import HqgnnError
    from hqgnn.io import write_json

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or None
    try:
        for m in methods or []:  # reject a bad name before the minutes of loading and fitting
            if not is_known(m):
                raise HqgnnError(f"--methods: unknown method {m!r}")
        rows = run_dir_rows(args.run, methods, args.device, args.seed, log=lambda s: print(s, file=sys.stderr))
    except (HqgnnError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        write_json(Path(args.out), rows)
    else:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
