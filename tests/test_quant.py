"""Tests for hqgnn.quant: quantizer levels and scales, STE/GSTE/LSQ gradients, Hutchinson traces and delta."""

from __future__ import annotations

import pytest
import torch

from hqgnn.quant import (
    EmbeddingQuantizer,
    data_scale,
    estimate_delta,
    hutchinson_trace,
    hutchinson_traces,
    integer_codes,
    level_range,
)
from hqgnn.quant import quantizer as quantizer_module

BITS = list(range(1, 9))


def fixed_scale_quantizer(bits: int, value: float, estimator: str = "ste", delta: float = 0.0) -> EmbeddingQuantizer:
    """A per-tensor learnable quantizer with its scale pinned to `value` (for hand-checked cases)."""
    m = EmbeddingQuantizer(bits, estimator, "tensor", learnable_scale=True, delta=delta)
    m.init_scale(torch.ones(1, 1))
    with torch.no_grad():
        m.scale.fill_(value)
    return m


# ------------------------------------------------------------------------------------------ levels
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("mode", ["row", "tensor"])
def test_codes_lie_in_range_and_use_the_levels(bits: int, mode: str) -> None:
    qn, qp = level_range(bits)
    x = torch.linspace(-4, 4, 2001).reshape(3, 667)
    codes, _ = EmbeddingQuantizer(bits, scale=mode).quantize(x)
    assert codes.dtype == torch.int8
    values = set(codes.unique().tolist())
    if bits == 1:
        assert values == {-1, 1}
    else:
        assert min(values) >= -qn and max(values) <= qp
        # Uniform data over the range uses every level (the lowest one may be skipped by the fit).
        assert len(values) >= 2**bits - 1


def test_one_bit_sign_of_zero_is_plus_one_and_scale_is_mean_abs() -> None:
    x = torch.tensor([[0.0, -2.0, 1.0, 3.0], [0.0, 0.0, -1.0, 1.0]])
    codes, scale = EmbeddingQuantizer(1, scale="row").quantize(x)
    assert codes.tolist() == [[1, -1, 1, 1], [1, 1, -1, 1]]
    assert torch.equal(scale, x.abs().mean(dim=1))
    _, tscale = EmbeddingQuantizer(1, scale="tensor").quantize(x)
    assert torch.equal(tscale, x.abs().mean())


@pytest.mark.parametrize("bits", BITS)
def test_large_inputs_saturate_at_the_clip_bounds(bits: int) -> None:
    qn, qp = level_range(bits)
    m = fixed_scale_quantizer(bits, 0.25)
    x = torch.tensor([[-1e3, -0.25 * (qn + 3), 0.25 * (qp + 3), 1e3]])
    codes, scale = m.quantize(x)
    assert codes.tolist() == [[-qn, -qn, qp, qp]]
    assert torch.equal(m(x), torch.tensor([[-qn, -qn, qp, qp]]) * 0.25)
    assert scale.shape == ()


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("mode", ["row", "tensor"])
def test_exactly_representable_values_round_trip(bits: int, mode: str) -> None:
    qn, qp = level_range(bits)
    levels = torch.tensor([-1.0, 1.0]) if bits == 1 else torch.arange(-qn, qp + 1, dtype=torch.float32)
    gen = torch.Generator().manual_seed(bits)
    steps = [0.5, 0.125, 2.0] if mode == "row" else [0.25, 0.25, 0.25]  # powers of two: x / s is exact
    x = torch.stack([s * levels[torch.randperm(len(levels), generator=gen)] for s in steps])
    m = EmbeddingQuantizer(bits, scale=mode)
    assert torch.equal(m(x), x)
    codes, scale = m.quantize(x)
    assert torch.equal(EmbeddingQuantizer.dequantize(codes, scale), x)


@pytest.mark.parametrize("learnable", [False, True])
def test_scale_shapes_row_vs_tensor(learnable: bool) -> None:
    x = torch.randn(7, 16)
    for mode, shape in [("row", (7,)), ("tensor", ())]:
        m = EmbeddingQuantizer(3, scale=mode, learnable_scale=learnable, num_rows=7)
        if learnable:
            m.init_scale(x)
            assert m.scale.shape == shape
        codes, scale = m.quantize(x)
        assert codes.shape == (7, 16) and scale.shape == shape and scale.dtype == torch.float32


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("mode", ["row", "tensor"])
@pytest.mark.parametrize("learnable", [False, True])
def test_dequantize_of_quantize_equals_forward_exactly(bits: int, mode: str, learnable: bool) -> None:
    gen = torch.Generator().manual_seed(100 + bits)
    table = torch.randn(20, 64, generator=gen) * torch.rand(20, 1, generator=gen)
    rows = torch.tensor([3, 7, 0, 19, 11])
    m = EmbeddingQuantizer(bits, "gste", mode, learnable_scale=learnable, num_rows=20, delta=0.5)
    if learnable:
        m.init_scale(table)
    x = table[rows]
    codes, scale = m.quantize(x, rows)
    assert torch.equal(EmbeddingQuantizer.dequantize(codes, scale), m(x, rows))


@pytest.mark.parametrize("mode", ["row", "tensor"])
def test_eight_bits_approximate_x_within_half_a_step(mode: str) -> None:
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(8))
    m = EmbeddingQuantizer(8, scale=mode)
    codes, scale = m.quantize(x)
    s = scale.unsqueeze(1) if mode == "row" else scale
    v = x / s
    inside = (v >= -128) & (v <= 127)
    err = (m(x) - x).abs()
    assert bool((err <= s / 2 + 1e-7 * x.abs()).expand_as(x)[inside].all())
    assert err.max() < 0.02 * x.abs().max()


# ------------------------------------------------------------------------------------------ scale fit
def _fine_grid_mse(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Best per-row MSE over 400 clip ratios (the reference the fit is compared with)."""
    _, qp = level_range(bits)
    amax = x.abs().amax(dim=1, keepdim=True)
    cand = torch.linspace(0.05, 1.0, 400).view(-1, 1, 1) * amax / (qp + 0.5)
    err = (integer_codes(x[None], cand, bits) * cand - x[None]).square().mean(dim=2)
    return err.min(dim=0).values


@pytest.mark.parametrize("bits", range(2, 9))
def test_data_scale_is_close_to_mse_optimal(bits: int) -> None:
    _, qp = level_range(bits)
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(bits))
    mse = lambda s: (integer_codes(x, s, bits) * s - x).square().mean(dim=1)  # noqa: E731
    fitted = mse(data_scale(x, bits, per_row=True)).mean()
    naive = mse(x.abs().amax(dim=1, keepdim=True) / (qp + 0.5)).mean()
    assert fitted <= 1.01 * _fine_grid_mse(x, bits).mean()
    assert fitted < naive


def test_data_scale_chunking_does_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(300, 64, generator=torch.Generator().manual_seed(5))
    row, tensor = data_scale(x, 3, True), data_scale(x, 3, False)
    monkeypatch.setattr(quantizer_module, "_CHUNK_ELEMENTS", 18 * 64 * 7)  # 7 rows per chunk
    assert torch.equal(data_scale(x, 3, True), row)
    assert torch.allclose(data_scale(x, 3, False), tensor, rtol=1e-6, atol=0)


def test_all_zero_rows_give_zero_output() -> None:
    x = torch.zeros(3, 8)
    for bits in (1, 4):
        for mode in ("row", "tensor"):
            q = EmbeddingQuantizer(bits, scale=mode)(x)
            assert torch.equal(q, x) and torch.isfinite(q).all()


# ------------------------------------------------------------------------------------------ gradients
def test_gste_backward_matches_the_formula() -> None:
    delta = 0.7
    m = fixed_scale_quantizer(2, 0.5, "gste", delta)
    # x / s = -2.6 (out), -2 (boundary: in), -0.8, 0.2, 0.52, 1, 1.48 (out), 2.4 (out)
    x = torch.tensor([[-1.3, -1.0, -0.4, 0.1, 0.26, 0.5, 0.74, 1.2]], requires_grad=True)
    g = torch.tensor([[0.3, -0.5, 1.2, -0.7, 0.9, -0.2, 0.4, 1.0]])
    m(x).backward(g)
    xd = x.detach()
    q = torch.tensor([[-2.0, -2.0, -1.0, 0.0, 1.0, 1.0, 1.0, 1.0]]) * 0.5
    inside = torch.tensor([[False, True, True, True, True, True, False, False]])
    expected = torch.where(inside, g * (1 + delta * torch.sign(g) * (xd - q)), torch.zeros(()))
    assert torch.allclose(x.grad, expected, rtol=0, atol=1e-7)
    assert torch.equal(x.grad[~inside], torch.zeros(3))


def test_gste_one_bit_backward_matches_the_formula_everywhere() -> None:
    delta = 1.5
    x = torch.tensor([[0.0, -2.0, 1.0, 30.0], [0.5, -0.25, -4.0, 1.0]], requires_grad=True)
    g = torch.tensor([[1.0, -2.0, 0.5, -0.3], [-1.0, 0.25, 2.0, 0.7]])
    EmbeddingQuantizer(1, "gste", "row", delta=delta)(x).backward(g)
    xd = x.detach()
    q = xd.abs().mean(dim=1, keepdim=True) * torch.where(xd >= 0, 1.0, -1.0)
    assert torch.allclose(x.grad, g * (1 + delta * torch.sign(g) * (xd - q)), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("mode", ["row", "tensor"])
def test_gste_with_zero_delta_equals_ste_bit_for_bit(bits: int, mode: str) -> None:
    gen = torch.Generator().manual_seed(bits)
    x0 = torch.randn(32, 64, generator=gen) * 2
    g = torch.randn(32, 64, generator=gen)
    grads = []
    for est in ("ste", "gste"):
        x = x0.clone().requires_grad_(True)
        EmbeddingQuantizer(bits, est, mode, delta=0.0)(x).backward(g)
        grads.append(x.grad)
    assert torch.equal(grads[0], grads[1])


def test_ste_gradient_is_zero_outside_the_clip_range_and_kept_on_its_ends() -> None:
    m = fixed_scale_quantizer(3, 0.5)  # codes in [-4, 3]
    # x / s = -4.5 (out), -4 (end: in), -3.98, 0.3, 3 (end: in), 3.0001 (out), 100 (out)
    x = torch.tensor([[-2.25, -2.0, -1.99, 0.15, 1.5, 1.50005, 50.0]], requires_grad=True)
    g = torch.arange(1.0, 8.0).reshape(1, 7)
    m(x).backward(g)
    assert x.grad.tolist() == [[0.0, 2.0, 3.0, 4.0, 5.0, 0.0, 0.0]]


def test_ste_one_bit_passes_gradient_everywhere() -> None:
    x = torch.tensor([[-100.0, 0.0, 1e-9, 7.0]], requires_grad=True)
    g = torch.tensor([[1.0, -2.0, 3.0, -4.0]])
    EmbeddingQuantizer(1, "ste")(x).backward(g)
    assert torch.equal(x.grad, g)


@pytest.mark.parametrize("bits", [1, 4])
@pytest.mark.parametrize("mode", ["row", "tensor"])
def test_data_driven_scale_is_detached(bits: int, mode: str) -> None:
    """Without a learnable scale, dq/dx is the estimator's alone: no path through the fitted scale."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(8, 16, generator=gen, requires_grad=True)
    g = torch.randn(8, 16, generator=gen)
    EmbeddingQuantizer(bits, "ste", mode)(x).backward(g)
    s = data_scale(x, bits, mode == "row")
    v = x.detach() / s
    expected = g if bits == 1 else torch.where((v >= -8) & (v <= 7), g, torch.zeros(()))
    assert torch.equal(x.grad, expected)


def test_lsq_scale_gradient_per_tensor() -> None:
    m = fixed_scale_quantizer(2, 0.5)  # codes in [-2, 1], Qp = 1
    x = torch.tensor([[-1.3, -0.4, 0.1], [0.26, 0.6, 1.2]])  # x/s: -2.6 (out), -0.8, 0.2, 0.52, 1.2 (out), 2.4 (out)
    g = torch.tensor([[0.3, -0.5, 1.2], [-0.7, 0.9, -0.2]])
    m(x).backward(g)
    v = x / 0.5
    dq_ds = torch.tensor([[-2.0, -1.0 - v[0, 1], 0.0 - v[0, 2]], [1.0 - v[1, 0], 1.0, 1.0]])
    expected = (g * dq_ds).sum() / (x.numel() * 1) ** 0.5
    assert torch.allclose(m.scale.grad, expected, rtol=1e-6, atol=0)


def test_lsq_scale_gradient_per_row_reaches_only_the_rows_used() -> None:
    bits, dim = 3, 4  # codes in [-4, 3], Qp = 3
    table = torch.randn(6, dim, generator=torch.Generator().manual_seed(1))
    m = EmbeddingQuantizer(bits, "gste", "row", learnable_scale=True, num_rows=6, delta=0.3)
    m.init_scale(table)
    with torch.no_grad():
        m.scale.copy_(torch.tensor([0.5, 0.25, 1.0, 0.125, 2.0, 0.5]))
    rows = torch.tensor([4, 1, 3])
    x = torch.tensor([[1.0, -9.0, 0.3, 6.5], [0.1, -0.6, 0.9, -1.2], [0.01, 0.2, -0.7, 0.33]])
    g = torch.tensor([[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, -1.0, 0.5], [-0.3, 0.2, 0.1, -0.4]])
    m(x, rows).backward(g)
    s = m.scale.detach()[rows].unsqueeze(1)
    v = x / s
    inside = (v >= -4) & (v <= 3)
    dq_ds = torch.where(inside, torch.round(v) - v, torch.clamp(torch.round(v), -4, 3))
    expected = torch.zeros(6)
    expected[rows] = (g * dq_ds).sum(dim=1) / (dim * 3) ** 0.5
    assert torch.allclose(m.scale.grad, expected, rtol=1e-6, atol=1e-8)


def test_lsq_scale_gradient_one_bit_is_sign() -> None:
    m = fixed_scale_quantizer(1, 0.5)
    x = torch.tensor([[-1.0, 0.0, 2.0, -0.1]])
    g = torch.tensor([[0.5, 1.0, -2.0, 3.0]])
    m(x).backward(g)
    assert torch.allclose(m.scale.grad, (g * torch.tensor([[-1.0, 1.0, 1.0, -1.0]])).sum() / 2.0)


def test_set_delta_changes_the_gradient_in_place() -> None:
    m = EmbeddingQuantizer(2, "gste", "tensor")
    buffer = m.delta
    x0 = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    grads = []
    for d in (0.0, 2.0):
        m.set_delta(d)
        x = x0.clone().requires_grad_(True)
        m(x).pow(2).sum().backward()
        grads.append(x.grad)
    assert m.delta is buffer and float(m.delta) == 2.0
    assert not torch.equal(grads[0], grads[1])


# ------------------------------------------------------------------------------------------ module API
@pytest.mark.parametrize(
    "kwargs",
    [
        {"bits": 0},
        {"bits": 9},
        {"bits": True},
        {"bits": 2, "estimator": "none"},
        {"bits": 2, "estimator": "ewgs"},
        {"bits": 2, "scale": "column"},
        {"bits": 2, "learnable_scale": True},
        {"bits": 2, "delta": -1.0},
        {"bits": 2, "delta": float("nan")},
    ],
)
def test_invalid_arguments_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        EmbeddingQuantizer(**kwargs)


def test_learnable_scale_needs_init_and_rows() -> None:
    m = EmbeddingQuantizer(2, scale="row", learnable_scale=True, num_rows=5)
    with pytest.raises(RuntimeError, match="init_scale"):
        m(torch.randn(5, 4))
    m.init_scale(torch.randn(5, 4))
    m(torch.randn(5, 4))  # the whole table needs no rows
    with pytest.raises(ValueError, match="rows"):
        m(torch.randn(3, 4))
    with pytest.raises(ValueError):
        m.set_delta(-0.1)
    with pytest.raises(RuntimeError):
        EmbeddingQuantizer(2).init_scale(torch.randn(5, 4))


def test_learnable_scale_survives_a_state_dict_round_trip() -> None:
    table = torch.randn(5, 4, generator=torch.Generator().manual_seed(4))
    a = EmbeddingQuantizer(3, "gste", "row", learnable_scale=True, num_rows=5, delta=0.2)
    a.init_scale(table)
    b = EmbeddingQuantizer(3, "gste", "row", learnable_scale=True, num_rows=5)
    b.load_state_dict(a.state_dict())
    assert float(b.delta) == pytest.approx(0.2)
    assert torch.equal(a(table), b(table))


def test_storage_accounting() -> None:
    assert EmbeddingQuantizer(1, scale="row").bytes_per_row(64) == 12.0
    assert EmbeddingQuantizer(4, scale="tensor").bytes_per_row(64) == 32.0
    assert EmbeddingQuantizer(4, scale="tensor").table_bytes(10, 64) == 324.0
    assert EmbeddingQuantizer(2, scale="row").table_bytes(10, 64) == 200.0


def test_forward_keeps_dtype() -> None:
    x = torch.randn(4, 8, dtype=torch.float64)
    assert EmbeddingQuantizer(4)(x).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bits", [1, 2, 8])
@pytest.mark.parametrize("learnable", [False, True])
def test_quantizer_on_cuda_matches_cpu(bits: int, learnable: bool) -> None:
    gen = torch.Generator().manual_seed(bits)
    table = torch.randn(50, 64, generator=gen)
    g = torch.randn(10, 64, generator=gen)
    rows = torch.arange(0, 50, 5)
    out = {}
    for device in ("cpu", "cuda"):
        m = EmbeddingQuantizer(bits, "gste", "row", learnable_scale=learnable, num_rows=50, delta=0.5).to(device)
        if learnable:
            m.init_scale(table.to(device))
        x = table[rows].to(device).requires_grad_(True)
        q = m(x, rows.to(device))
        q.backward(g.to(device))
        codes, scale = m.quantize(x, rows.to(device))
        assert codes.device.type == device
        assert torch.equal(m.dequantize(codes, scale), q)
        out[device] = (q.detach().cpu(), x.grad.cpu(), codes.cpu())
    assert torch.allclose(out["cpu"][0], out["cuda"][0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["cpu"][1], out["cuda"][1], rtol=1e-4, atol=1e-5)
    assert (out["cpu"][2] != out["cuda"][2]).float().mean() < 0.01  # ties may round differently


# ------------------------------------------------------------------------------------------ Hessian
def _spd(n: int, seed: int) -> torch.Tensor:
    b = torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return b @ b.T / n + torch.eye(n, dtype=torch.float64)


def test_hutchinson_trace_of_a_quadratic_is_within_five_percent() -> None:
    a = _spd(50, 0)
    x = torch.randn(50, dtype=torch.float64)
    trace, probes = hutchinson_trace(lambda z: 0.5 * z @ a @ z, x, generator=torch.Generator().manual_seed(1))
    assert 5 <= probes <= 50
    assert abs(trace - a.trace().item()) <= 0.05 * a.trace().item()


def test_hutchinson_is_exact_for_a_diagonal_hessian_and_stops_early() -> None:
    d = torch.linspace(0.5, 3.0, 40)
    trace, probes = hutchinson_trace(lambda z: 0.5 * (d * z * z).sum(), torch.randn(40), min_probes=5)
    assert trace == pytest.approx(d.sum().item(), rel=1e-6)
    assert probes == 5  # the running mean never moves, so it stops as soon as it may


def test_hutchinson_respects_max_probes_and_reads_2d_tensors() -> None:
    a = _spd(12, 3)
    q = torch.randn(3, 4, dtype=torch.float64)
    trace, probes = hutchinson_trace(
        lambda z: 0.5 * z.reshape(-1) @ a @ z.reshape(-1), q, tol=0.0, max_probes=7,
        generator=torch.Generator().manual_seed(0),
    )
    assert probes == 7 and trace > 0


def test_estimate_delta_matches_the_hand_formula() -> None:
    d = torch.linspace(0.5, 3.0, 24, dtype=torch.float64).reshape(6, 4)
    q = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = estimate_delta(lambda z: 0.5 * (d * z * z).sum(), q)
    grad = d * q  # dL/dq
    assert out["n"] == 24
    assert out["trace"] == pytest.approx(d.sum().item(), rel=1e-9)
    assert out["grad_std"] == pytest.approx(grad.std().item(), rel=1e-9)
    assert out["delta"] == pytest.approx((d.sum().item() / 24) / (3 * grad.std().item()), rel=1e-9)
    assert len(out["parts"]) == 1 and out["parts"][0]["delta"] == pytest.approx(out["delta"])
    assert not q.requires_grad  # the caller's tensor is left alone


def test_estimate_delta_for_users_and_items_separately_and_jointly() -> None:
    du = torch.full((5, 3), 2.0, dtype=torch.float64)
    di = torch.full((4, 3), 0.5, dtype=torch.float64)
    gen = torch.Generator().manual_seed(7)
    u = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    i = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    out = estimate_delta(lambda zs: 0.5 * (du * zs[0] ** 2).sum() + 0.5 * (di * zs[1] ** 2).sum(), [u, i])
    gu, gi = du * u, di * i
    (pu, pi) = out["parts"]
    assert pu["trace"] == pytest.approx(30.0) and pi["trace"] == pytest.approx(6.0)
    assert pu["n"] == 15 and pi["n"] == 12 and out["n"] == 27
    assert pu["delta"] == pytest.approx((30.0 / 15) / (3 * gu.std().item()))
    assert pi["delta"] == pytest.approx((6.0 / 12) / (3 * gi.std().item()))
    joint_std = torch.cat([gu.reshape(-1), gi.reshape(-1)]).std().item()
    assert out["trace"] == pytest.approx(36.0)
    assert out["delta"] == pytest.approx((36.0 / 27) / (3 * joint_std))


def test_block_traces_of_a_coupled_quadratic() -> None:
    a = _spd(60, 5)  # q = (users: 30 entries, items: 30 entries), coupled through the off-diagonal blocks
    gen = torch.Generator().manual_seed(9)
    u = torch.randn(10, 3, dtype=torch.float64, generator=gen)
    i = torch.randn(10, 3, dtype=torch.float64, generator=gen)

    def loss(zs: list[torch.Tensor]) -> torch.Tensor:
        z = torch.cat([zs[0].reshape(-1), zs[1].reshape(-1)])
        return 0.5 * z @ a @ z

    (tu, ti), probes = hutchinson_traces(loss, [u, i], generator=gen)
    assert abs(tu - a[:30, :30].trace().item()) <= 0.05 * a[:30, :30].trace().item()
    assert abs(ti - a[30:, 30:].trace().item()) <= 0.05 * a[30:, 30:].trace().item()


def test_estimate_delta_guards() -> None:
    q = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    # Negative curvature: delta is clipped at 0.
    assert estimate_delta(lambda z: -0.5 * (z * z).sum(), q)["delta"] == 0.0
    # Constant gradient (std 0): delta 0.
    out = estimate_delta(lambda z: 0.5 * (z * z).sum(), torch.full((8, 4), 0.3))
    assert out["grad_std"] == 0.0 and out["delta"] == 0.0
    # Linear loss: no curvature, no probes needed.
    out = estimate_delta(lambda z: (z * torch.arange(32.0).reshape(8, 4)).sum(), q)
    assert out["trace"] == 0.0 and out["probes"] == 0 and out["delta"] == 0.0
    # A tensor the loss does not use counts as zero curvature and zero gradient.
    out = estimate_delta(lambda zs: 0.5 * (zs[0] ** 2).sum(), [q, torch.randn(2, 4)])
    assert out["parts"][1]["trace"] == 0.0 and out["parts"][1]["delta"] == 0.0
    with pytest.raises(ValueError):
        estimate_delta(lambda z: z.sum(), q, max_probes=0)
    with pytest.raises(ValueError):
        estimate_delta(lambda z: z, q)  # not a scalar


def test_estimate_delta_works_under_no_grad_and_on_a_bpr_loss() -> None:
    gen = torch.Generator().manual_seed(11)
    users = torch.randn(16, 8, generator=gen)
    items = torch.randn(24, 8, generator=gen)
    u_idx = torch.randint(0, 16, (32,), generator=gen)
    p_idx = torch.randint(0, 24, (32,), generator=gen)
    n_idx = torch.randint(0, 24, (32,), generator=gen)

    def bpr(zs: list[torch.Tensor]) -> torch.Tensor:
        u, it = zs
        diff = (u[u_idx] * (it[p_idx] - it[n_idx])).sum(dim=1)
        return -torch.nn.functional.logsigmoid(diff).mean()

    with torch.no_grad():
        out = estimate_delta(bpr, [users, items], generator=torch.Generator().manual_seed(0))
    assert out["trace"] > 0 and out["delta"] > 0 and 5 <= out["probes"] <= 50
    assert out["trace"] == pytest.approx(sum(p["trace"] for p in out["parts"]))
