"""Hessian-trace (Hutchinson) estimates w.r.t. quantized embeddings and the GSTE delta derived from them."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Tensors = Tensor | Sequence[Tensor]
LossFn = Callable[[Any], Tensor]


def _leaves(q: Tensors) -> tuple[list[Tensor], bool]:
    """Fresh leaves (detached, requiring grad) and whether q was a single tensor."""
    single = isinstance(q, Tensor)
    qs: list[Tensor] = [q] if isinstance(q, Tensor) else list(q)
    if not qs:
        raise ValueError("no tensors given")
    return [t.detach().requires_grad_(True) for t in qs], single


def _check_probes(tol: float, max_probes: int, min_probes: int, patience: int) -> None:
    if max_probes < 1:
        raise ValueError(f"max_probes must be >= 1, got {max_probes}")
    if not 1 <= min_probes <= max_probes:
        raise ValueError(f"min_probes must be in 1..max_probes, got {min_probes}")
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol}")


def _rademacher(like: Tensor, generator: torch.Generator | None) -> Tensor:
    # Draw on the generator's device (a CPU generator cannot fill a CUDA tensor), then move.
    device = generator.device if generator is not None else like.device
    bits = torch.randint(0, 2, like.shape, generator=generator, device=device)
    return (bits * 2 - 1).to(device=like.device, dtype=like.dtype)


def _first_grads(loss_fn: LossFn, leaves: list[Tensor], single: bool) -> tuple[Tensor, ...]:
    loss = loss_fn(leaves[0] if single else leaves)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("loss_fn must return a scalar tensor")
    # create_graph so the gradient can be differentiated again (Hessian-vector products);
    # materialize_grads gives zeros for a tensor the loss does not use.
    return torch.autograd.grad(loss.reshape(()), leaves, create_graph=True, allow_unused=True, materialize_grads=True)


def _block_traces(
    grads: Sequence[Tensor],
    leaves: list[Tensor],
    tol: float,
    max_probes: int,
    min_probes: int,
    patience: int,
    generator: torch.Generator | None,
) -> tuple[list[float], int]:
    """Hutchinson estimates of the diagonal-block traces Tr(d2L/dq_k^2), one per leaf, from joint probes.

    With independent Rademacher v = (v_1, ..., v_K), E[v_k^T (H v)_k] = Tr(H_kk) (the cross terms have
    mean zero), so one set of Hessian-vector products gives every block's trace; their sum is Tr(H).
    """
    # Gradients with no graph are constant in q (loss at most linear there): their blocks contribute 0.
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    sums = [0.0] * len(leaves)
    if not live:
        return sums, 0
    means = [0.0] * len(leaves)
    calm = 0  # consecutive probes whose running means all moved by at most tol
    for k in range(1, max_probes + 1):
        vs = [_rademacher(leaves[i], generator) for i in live]
        hvs = torch.autograd.grad(
            [grads[i] for i in live],
            leaves,
            grad_outputs=vs,
            retain_graph=True,
            allow_unused=True,
            materialize_grads=True,
        )
        # v_k^T (H v)_k per block, one host sync per probe.
        vhv = torch.stack([(v * hvs[i]).sum() for i, v in zip(live, vs)]).tolist()
        old = means[:]
        for i, val in zip(live, vhv):
            sums[i] += float(val)
        means = [s / k for s in sums]
        # PyHessian's rule (running mean moved by at most tol, relative), held for `patience` probes in a
        # row: a single probe that happens to land near the mean would otherwise stop it early. On a 50x50
        # SPD quadratic (400 seeds) one calm probe stopped after ~15 probes and missed Tr(A) by >5% for 5.5%
        # of seeds; three in a row took ~45 probes and never missed by 5%.
        calm = calm + 1 if all(abs(means[i] - old[i]) <= tol * abs(old[i]) for i in live) else 0
        if k >= min_probes and calm >= patience:
            return means, k
    return means, max_probes


def hutchinson_traces(
    loss_fn: LossFn,
    qs: Sequence[Tensor],
    tol: float = 1e-3,
    max_probes: int = 50,
    min_probes: int = 5,
    generator: torch.Generator | None = None,
    patience: int = 3,
) -> tuple[list[float], int]:
    """Per-tensor Hessian traces of loss_fn(list of tensors) w.r.t. each tensor, and the probes used.

    The traces are of the diagonal blocks, so the joint trace Tr(H) is their sum. Stops at the first probe
    k >= min_probes after every block's running mean has changed by at most tol (relative to its previous
    value) on `patience` consecutive probes, or at max_probes.
    """
    _check_probes(tol, max_probes, min_probes, patience)
    leaves, _ = _leaves(qs)
    with torch.enable_grad():
        grads = _first_grads(loss_fn, leaves, single=False)
        return _block_traces(grads, leaves, tol, max_probes, min_probes, patience, generator)


def hutchinson_trace(
    loss_fn: Callable[[Tensor], Tensor],
    q: Tensor,
    tol: float = 1e-3,
    max_probes: int = 50,
    min_probes: int = 5,
    generator: torch.Generator | None = None,
    patience: int = 3,
) -> tuple[float, int]:
    """Hutchinson estimate of Tr(d2L/dq2), L = loss_fn(q), and the number of probes used.

    q is detached and made a leaf here, so pass the quantized embeddings as values (q.detach() is fine).
    Each probe v is Rademacher; H v comes from double backward (torch.autograd.grad of dL/dq, built with
    create_graph, against v). The running mean of v^T H v stops once its relative change has been at most
    tol on `patience` consecutive probes (and at least min_probes were used), else at max_probes. Pass a
    seeded generator for reproducible estimates.
    """
    traces, probes = hutchinson_traces(
        lambda ts: loss_fn(ts[0]), [q], tol, max_probes, min_probes, generator, patience
    )
    return traces[0], probes


def _grad_std(g: Tensor) -> float:
    """Unbiased std of g; 0 when it is only rounding noise (<= 1e-6 max|g|), NaN for fewer than 2 entries.

    A constant gradient computed in float32 has a std of ~1e-7 of its size, which would turn an
    undefined delta into a huge one.
    """
    if g.numel() < 2:
        return float("nan")
    std = float(g.std())
    return 0.0 if std <= 1e-6 * float(g.abs().max()) else std


def _delta(trace: float, n: int, grad_std: float) -> float:
    """(Tr(H)/n) / (3 std(g)), clipped at 0; 0 when std is 0 or undefined (no gradient signal)."""
    if n == 0 or not math.isfinite(grad_std) or grad_std <= 0 or not math.isfinite(trace):
        return 0.0
    return max(0.0, (trace / n) / (3.0 * grad_std))


def estimate_delta(
    loss_fn: LossFn,
    q: Tensors,
    tol: float = 1e-3,
    max_probes: int = 50,
    min_probes: int = 5,
    generator: torch.Generator | None = None,
    patience: int = 3,
) -> dict[str, Any]:
    """The GSTE coefficient delta = (Tr(H)/n) / (3 std(g_q)), clipped at >= 0 (EWGS, Lee et al. 2021).

    H and g_q = dL/dq are the Hessian and gradient of L = loss_fn(q) w.r.t. the quantized embeddings q,
    n = q.numel(), std is torch's (unbiased) standard deviation over all entries of g_q; std == 0 (or
    below 1e-6 max|g_q|, float rounding of a constant) gives delta = 0, and so does a negative trace.
    So n and std are over whatever entries q holds: pass q restricted to the rows the loss touches (the
    batch's unique users / items). Untouched rows have zero gradient and zero Hessian; they would dilute
    Tr(H)/n and pull std(g) towards the spread between zeros and real gradients. Average the result
    over a few mini-batches.

    q is one tensor (loss_fn receives that tensor) or a sequence of tensors, e.g. [users, items]
    (loss_fn receives a list of fresh leaves in the same order). The result always has the joint estimate
    over all entries together, and under "parts" one estimate per tensor (the Hessian diagonal block of
    that tensor and its own gradient std), for a separate delta for users and items:

        {"delta", "trace", "n", "grad_std", "probes",
         "parts": [{"delta", "trace", "n", "grad_std"}, ...]}

    All probes are shared: per-tensor and joint traces come from the same Hessian-vector products, and
    the stopping rule (see hutchinson_traces) waits for every tensor's estimate.
    """
    _check_probes(tol, max_probes, min_probes, patience)
    leaves, single = _leaves(q)
    with torch.enable_grad():
        grads = _first_grads(loss_fn, leaves, single)
        flat = [g.detach().reshape(-1) for g in grads]
        traces, probes = _block_traces(grads, leaves, tol, max_probes, min_probes, patience, generator)
    parts = []
    for t, g in zip(traces, flat):
        std = _grad_std(g)
        parts.append({"delta": _delta(t, g.numel(), std), "trace": t, "n": g.numel(), "grad_std": std})
    all_g = torch.cat(flat)
    std = _grad_std(all_g)
    trace, n = float(sum(traces)), all_g.numel()
    return {"delta": _delta(trace, n, std), "trace": trace, "n": n, "grad_std": std, "probes": probes, "parts": parts}
