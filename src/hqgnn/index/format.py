"""CodeFormat: the one description of how items and queries are stored and scored.

Every code format of hqgnn scores a query ``u`` against an item ``i`` as

    score(u, i) = s_u * s_i * <c_u, c_i> + t_i      (quantized queries, ``query_bits`` 1..8)
    score(u, i) = s_i * <x_u, c_i> + t_i             (float queries, ``query_bits == 0``)

with ``c_i`` the ``item_bits``-bit item codes (1 bit: {-1, +1}; b bits: signed integers in
[-2^(b-1), 2^(b-1) - 1]), ``s_i`` the item scale (``scale``: none, one per tensor or one per row),
``t_i`` the per-item term (``term``: stored when centering meets quantized queries) and ``s_u`` the
query scale. ``rotation`` and ``center`` say what is applied to a float vector before it is encoded
as a query; ``item_order`` and ``layout`` say how the index holds the items.

A format is built once (:meth:`CodeFormat.from_config` for a training run, or by hand), written
next to the codes (``format.json`` in a run directory, ``meta.json`` in a saved index) and read back
with :meth:`CodeFormat.from_dict`. It is the only place that derives the query width
(:attr:`query_width`) and the bytes per item (:attr:`item_bytes`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import QuantConfig

__all__ = ["CodeFormat", "FORMAT_VERSION", "ITEM_ORDERS", "LAYOUTS", "ROTATIONS", "SCALES", "SCALE_DTYPES"]

FORMAT_VERSION = 1
SCALES = ("none", "tensor", "row")
SCALE_DTYPES = {"float32": 4, "float16": 2}
ROTATIONS = ("none", "itq")
ITEM_ORDERS = ("none", "scale")
LAYOUTS = ("packed", "int8")
# the CPU layouts pad each item's codes to these many dimensions: 1 bit -> the 16-dim LUT groups,
# 2..4 bits -> nibbles in groups of 4 dims, 5..8 bits -> int8 in pairs of dims (see index.packing)
_DIM_GROUP = {1: 16, 2: 4, 3: 4, 4: 4}


@dataclass(frozen=True)
class CodeFormat:
    """How items and queries are stored and scored (module docstring).

    Parameters
    ----------
    dim : int
        Code dimensions per item (for layer-wise codes, all layers together).
    item_bits : int
        Bits per item code dimension, 1..8.
    query_bits : int
        Bits per query code dimension, 1..8, or 0 for float queries.
    scale : {"none", "tensor", "row"}
        The item scale ``s_i``: absent (1), one value, or one per item.
    scale_dtype : {"float32", "float16"}
        How per-row scales and terms are stored (float16 values are scored exactly as stored).
    term : bool
        Whether a per-item additive term ``t_i`` is stored.
    center, rotation :
        Applied to a float vector before it is encoded as a query (mean subtraction, ITQ rotation).
    item_order : {"none", "scale"}
        ``"scale"``: the CPU index stores items sorted by scale (tighter pruning, 4 more bytes per item).
    layout : {"packed", "int8"}
        The GPU copy of the codes: bit-packed (the stored bytes) or one int8 per dimension (faster).
    """

    dim: int
    item_bits: int
    query_bits: int = -1
    scale: str = "row"
    scale_dtype: str = "float32"
    term: bool = False
    center: bool = False
    rotation: str = "none"
    item_order: str = "none"
    layout: str = "packed"

    def __post_init__(self) -> None:
        if self.query_bits == -1:  # the one default: queries as wide as the items (symmetric codes)
            object.__setattr__(self, "query_bits", self.item_bits)
        problems = []
        if not isinstance(self.dim, int) or self.dim < 1:
            problems.append(f"dim must be a positive integer, got {self.dim!r}")
        if not isinstance(self.item_bits, int) or not 1 <= self.item_bits <= 8:
            problems.append(f"item_bits must be 1..8, got {self.item_bits!r}")
        if not isinstance(self.query_bits, int) or not 0 <= self.query_bits <= 8:
            problems.append(f"query_bits must be 0 (float queries) or 1..8, got {self.query_bits!r}")
        for name, allowed in (
            ("scale", SCALES),
            ("scale_dtype", tuple(SCALE_DTYPES)),
            ("rotation", ROTATIONS),
            ("item_order", ITEM_ORDERS),
            ("layout", LAYOUTS),
        ):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if problems:
            raise ValueError("; ".join(problems))

    # ------------------------------------------------------------------------------ derived
    @property
    def float_queries(self) -> bool:
        return self.query_bits == 0

    @property
    def symmetric(self) -> bool:
        """Both sides codes of one width and no term (the original HQ-GNN formats): item codes can then
        serve as queries (item-to-item search). The one index serves every format alike."""
        return self.query_bits == self.item_bits and not self.term

    @property
    def query_width(self) -> int:
        """Bits of the integer queries the index scans: ``query_bits``, or 8 for float queries (they are
        encoded to 8 bits with a proven error bound, then the candidates re-scored in float64)."""
        return self.query_bits if self.query_bits else 8

    @property
    def stored_dim(self) -> int:
        """Dimensions an item's codes take in storage (the CPU layout's padding included)."""
        group = _DIM_GROUP.get(self.item_bits, 2)
        return -(-self.dim // group) * group

    @property
    def code_bytes(self) -> float:
        """Bytes of one item's packed codes as stored."""
        bits = 1 if self.item_bits == 1 else (4 if self.item_bits <= 4 else 8)  # sign bits, nibbles, int8
        return self.stored_dim * bits / 8

    @property
    def value_bytes(self) -> int:
        """Bytes of one per-row scale or term as stored."""
        return SCALE_DTYPES[self.scale_dtype]

    @property
    def item_bytes(self) -> float:
        """Bytes stored per item: packed codes + the per-row scale + the per-item term + the storage
        order (``item_order="scale"``). Equal to the saved index's array bytes divided by the items
        (tested against the file sizes)."""
        total = self.code_bytes
        if self.scale == "row":
            total += self.value_bytes
        if self.term:
            total += self.value_bytes
        if self.item_order == "scale":
            total += 4
        return total

    # ---------------------------------------------------------------------------- building
    @classmethod
    def from_config(cls, quant: QuantConfig, dim: int, term: bool | None = None) -> CodeFormat:
        """The format a training run with ``quant`` stores, at ``dim`` code dimensions. ``term``:
        whether the run stored per-item terms (default: centering with quantized queries, the rule of
        :meth:`hqgnn.models.HQGNNModel.codes`)."""
        if not quant.bits:
            raise ValueError("a float run (quant.bits = 0) has no code format")
        qbits = quant.bits if quant.user_bits < 0 else quant.user_bits
        has_term = bool(quant.center and qbits) if term is None else term
        return cls(
            dim=int(dim),
            item_bits=int(quant.bits),
            query_bits=int(qbits),
            scale=quant.scale,
            scale_dtype=quant.scale_dtype,
            term=has_term,
            center=quant.center,
            rotation=quant.rotation,
            # symmetric codes keep the GPU copy they were served from before the two engines became one
            # (one int8 per dimension: 6.8x torch bf16 on an H100 against 4.9x for the packed copy,
            # BENCHMARKS.md § 3 / 3b) until the packed kernel is measured as fast; the stored bytes are the same
            layout="int8" if (qbits == quant.bits and not has_term) else "packed",
        )

    def replace(self, **changes: Any) -> CodeFormat:
        """A copy with ``changes`` (e.g. ``fmt.replace(item_order="scale")``), validated again."""
        return CodeFormat(**{**asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CodeFormat:
        """Read back :meth:`to_dict`; unknown keys or a newer format version are refused."""
        if not isinstance(d, dict):
            raise ValueError(f"a code format is a JSON object, got {type(d).__name__}")
        d = dict(d)
        version = d.pop("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ValueError(f"code format version {version!r} is not supported (this hqgnn reads {FORMAT_VERSION})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown code format field(s): {', '.join(unknown)}")
        try:
            return cls(**d)
        except TypeError as exc:  # a missing required field
            raise ValueError(str(exc)) from None
