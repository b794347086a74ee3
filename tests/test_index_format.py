"""hqgnn.index.format / api: CodeFormat, the Index protocol, build_index / load_index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hqgnn.config import QuantConfig
from hqgnn.index import (
    CodeFormat,
    Index,
    QueryCodes,
    build_index,
    encode_queries,
    load_index,
    read_format,
    reference_asym_search,
    reference_search,
)
from hqgnn.index.packing import code_range

# every layout (LUT1 / nibble / int8), symmetric and asymmetric formats, with and without terms, float16
# values, float and 1..8-bit queries, the scale order
FORMATS = [
    dict(item_bits=1),
    dict(item_bits=1, scale="none"),
    dict(item_bits=3, item_order="scale"),
    dict(item_bits=8, scale="tensor"),
    dict(item_bits=1, query_bits=0, scale_dtype="float16"),
    dict(item_bits=1, query_bits=4, term=True, scale_dtype="float16", item_order="scale"),
    dict(item_bits=2, query_bits=8, term=True),
    dict(item_bits=4, query_bits=1),
    dict(item_bits=6, query_bits=0, item_order="scale"),
]


def _codes(rng: np.random.Generator, n: int, dim: int, bits: int) -> np.ndarray:
    lo, hi = code_range(bits)
    if bits == 1:
        return rng.choice(np.array([-1, 1], np.int8), size=(n, dim))
    return rng.integers(lo, hi + 1, size=(n, dim)).astype(np.int8)


def _inputs(fmt: CodeFormat, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    scale = (rng.random(n) + 0.5).astype(np.float32)
    term = rng.standard_normal(n).astype(np.float32) if fmt.term else None
    if fmt.scale_dtype == "float16":  # as runs store them: float16 values held in float32
        scale = scale.astype(np.float16).astype(np.float32)
        term = None if term is None else term.astype(np.float16).astype(np.float32)
    scale = {"none": None, "tensor": scale[:1], "row": scale}[fmt.scale]
    return {"codes": _codes(rng, n, fmt.dim, fmt.item_bits), "scale": scale, "term": term}


@pytest.mark.parametrize("dim", [48, 64, 67])
@pytest.mark.parametrize("kw", FORMATS, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_item_bytes_equal_the_saved_files(tmp_path: Path, kw: dict, dim: int) -> None:
    """fmt.item_bytes is what the saved index's arrays take per item (n a multiple of every block)."""
    fmt = CodeFormat(dim=dim, **kw)
    n = 1024
    inp = _inputs(fmt, n)
    index = build_index(inp["codes"], fmt, scale=inp["scale"], term=inp["term"])
    index.save(tmp_path / "ix")
    payload = sum(np.load(p, mmap_mode="r").nbytes for p in (tmp_path / "ix").glob("*.npy"))
    assert payload == n * fmt.item_bytes
    assert read_format(tmp_path / "ix") == fmt
    assert json.loads((tmp_path / "ix" / "meta.json").read_text())["code_format"] == fmt.to_dict()


@pytest.mark.parametrize("kw", FORMATS, ids=lambda kw: "-".join(f"{k}{v}" for k, v in kw.items()))
def test_every_format_through_the_interface_equals_the_reference(tmp_path: Path, kw: dict) -> None:
    """build_index -> Index -> search (encoded queries, floats, exclusions) -> save -> load_index: the
    same answers as the float64 brute force on every query."""
    fmt = CodeFormat(dim=40, **kw)
    n, b, k = 700, 23, 11
    inp = _inputs(fmt, n, seed=1)
    index = build_index(inp["codes"], fmt, scale=inp["scale"], term=inp["term"])
    assert isinstance(index, Index) and index.format == fmt
    assert index.memory_bytes() > 0
    rng = np.random.default_rng(2)
    x = rng.standard_normal((b, fmt.dim)).astype(np.float32)
    queries = encode_queries(x, fmt)
    indptr = np.arange(0, 3 * b + 1, 3, dtype=np.int64)
    indices = rng.integers(0, n, 3 * b).astype(np.int64)
    if fmt.symmetric:
        want = reference_search(queries.codes, inp["codes"], k, queries.scales, inp["scale"],
                                exclude=(indptr, indices))
    else:
        q, qs = (queries, None) if fmt.float_queries else (queries.codes, queries.scales)
        want = reference_asym_search(q, inp["codes"], k, query_scales=qs, item_scale=inp["scale"],
                                     item_term=inp["term"], exclude=(indptr, indices),
                                     float_queries=fmt.float_queries)
    for got in (index.search(queries, k, exclude=(indptr, indices)), index.search(x, k, exclude=(indptr, indices))):
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
    index.save(tmp_path / "ix")
    loaded = load_index(tmp_path / "ix")
    assert loaded.format == fmt
    got = loaded.search(queries, k, exclude=(indptr, indices))
    np.testing.assert_array_equal(got[1], want[1])


def test_query_codes_of_float_vectors() -> None:
    x = np.array([[0.5, -1.0, 0.0, 2.0]], np.float32)
    one = encode_queries(x, CodeFormat(dim=4, item_bits=1))
    assert isinstance(one, QueryCodes)
    np.testing.assert_array_equal(one.codes, [[1, -1, 1, 1]])
    assert one.scales[0] == pytest.approx(np.abs(x).mean())
    four = encode_queries(x, CodeFormat(dim=4, item_bits=1, query_bits=4))
    assert four.codes.dtype == np.int8 and np.abs(four.codes).max() <= 8
    np.testing.assert_array_equal(encode_queries(x, CodeFormat(dim=4, item_bits=1, query_bits=0)), x)


def test_format_from_config_and_round_trip() -> None:
    q = QuantConfig(bits=1, user_bits=0, scale_dtype="float16", rotation="itq", center=True)
    fmt = CodeFormat.from_config(q, dim=64)
    assert (fmt.item_bits, fmt.query_bits, fmt.term, fmt.float_queries, fmt.symmetric) == (1, 0, False, True, False)
    assert fmt.item_bytes == 8 + 2  # 64 sign bits + a float16 scale
    assert fmt.query_width == 8  # float queries: the 8-bit candidate pass
    assert CodeFormat.from_dict(fmt.to_dict()) == fmt
    sym = CodeFormat.from_config(QuantConfig(bits=4), dim=64)
    assert sym.symmetric and sym.query_bits == 4 and sym.item_order == "none"  # one index: the same defaults
    assert sym.item_bytes == 32 + 4 and sym.replace(item_order="scale").item_bytes == 32 + 4 + 4
    centered = CodeFormat.from_config(QuantConfig(bits=1, user_bits=4, center=True), dim=64)
    assert centered.term and not centered.symmetric and centered.query_width == 4
    with pytest.raises(ValueError, match="float run"):
        CodeFormat.from_config(QuantConfig(bits=0), dim=64)


@pytest.mark.parametrize("bad, match", [
    (dict(dim=0, item_bits=1), "dim"),
    (dict(dim=8, item_bits=9), "item_bits"),
    (dict(dim=8, item_bits=1, query_bits=12), "query_bits"),
    (dict(dim=8, item_bits=1, scale="col"), "scale must be"),
    (dict(dim=8, item_bits=1, layout="dense"), "layout"),
])
def test_bad_formats_are_refused(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        CodeFormat(**bad)


def test_from_dict_refuses_unknown_fields_and_versions() -> None:
    d = CodeFormat(dim=8, item_bits=1).to_dict()
    with pytest.raises(ValueError, match="unknown code format field"):
        CodeFormat.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="version"):
        CodeFormat.from_dict({**d, "format_version": 99})
    with pytest.raises(ValueError, match="dim"):
        CodeFormat.from_dict({"item_bits": 1})


def test_terms_must_match_the_format() -> None:
    codes = np.ones((10, 8), np.int8)
    with pytest.raises(ValueError, match="term=False"):
        build_index(codes, CodeFormat(dim=8, item_bits=1, query_bits=0), term=np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="none were given"):
        build_index(codes, CodeFormat(dim=8, item_bits=1, query_bits=4, term=True))
