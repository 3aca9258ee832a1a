"""The figures of a run, one :class:`LayerRecord` per layer, and their totals (:func:`summarize`).

The run pipeline (:mod:`sparsecim.sw.pipeline`) and the sweep make the records; the report
writer (:mod:`sparsecim.tb.report`) writes them out and computes nothing itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["LayerRecord", "summarize"]


@dataclass
class LayerRecord:
    """Every figure of one layer of a run.

    Attributes
    ----------
    name : str
        ``blocks.0.q`` for a model's linear, ``synthetic.0`` for a synthetic layer.
    out_features, in_features, tokens : int
        The layer ``y = x @ w.T`` with ``w`` of shape ``(out_features, in_features)``.
    sparsify : str
        The sparsify method (``dense``, ``magnitude``, ``wanda``, ...).
    pattern : str
        The layer's structure: ``dense``, an N:M ``n:m``, or another label
        (``monarch 24x24``).
    mapping : str
        The mapping it runs with (``linear``, ``nm``, ...).
    arrays, k_tiles, n_tiles : int
        Array fills per token and the tiling.
    utilization, dense_utilization : float
        Mapped weights over array cells of this mapping and of the dense (linear) mapping.
    weight_bytes, meta_bytes : int
        Kept weight values and their N:M position metadata.
    macs : int
        Multiply-accumulates of all tokens with the kept weights.
    model_cycles : int
        Cycles from the cycle model for the trace that ran.
    model_counters : dict
        The cycle model's split (fetch, load, compute, read, stall, total).
    dense_cycles : int
        Cycle-model cycles of the same layer mapped dense (the baseline of ``speedup``).
    ideal_cycles : int
        Cycles with every cell busy every cycle.
    density : float
        Kept weights over the dense layer's ``out_features × in_features``.
    golden_match : bool or None
        The golden model's outputs equal the plain integer matmul of the quantized operands;
        None when the golden model did not run (a layer-shape table has no weights).
    rel_error : float or None
        ``||y - y_float|| / ||y_float||`` of the dequantized output against the float layer
        before sparsity and quantization (None for integer-only layers).
    rtl_cycles : int or None
        Cycles the RTL counted (``total`` minus ``stall``), where the layer ran on Verilator;
        for a sampled layer, the sum over its sampled tiles.
    rtl_match : bool or None
        Outputs and counters of the RTL equal the golden model's and the cycle model's (of
        every sampled tile, for a sampled layer).
    rtl_dir : str or None
        The RTL run's folder.
    rtl_coverage : float or None
        Fraction of the layer's outputs the RTL computed: 1.0 for a whole layer, the sampled
        tiles' output columns over ``out_features`` for a sampled one (``rtl_sample``).
    rtl_tiles : list of int or None
        The output tiles sampled (None when the whole layer ran).
    energy : dict or None
        Energy and area figures of the layer's trace
        (:func:`sparsecim.sw.energy.layer_energy`): ``pj_per_token``, ``tops_per_w``,
        ``components_pj``, ``area_mm2`` ...; for a layer-shape table, of the schedule the
        cycle model describes (totals over ``copies``).
    copies : int
        Identical layers this record stands for (a layer-shape table's count per block times
        its blocks); ``arrays``, ``weight_bytes``, ``meta_bytes``, ``macs``, the cycles and
        ``model_counters`` are totals over all of them, ``utilization`` and ``density`` are
        those of one.
    macro : str
        The :attr:`~sparsecim.hw.config.MacroConfig.slug` of the macro the layer ran on (its
        parameters: P, rows, columns, widths, depths, patterns).
    """
    name: str
    out_features: int
    in_features: int
    tokens: int
    sparsify: str
    pattern: str
    mapping: str
    arrays: int
    k_tiles: int
    n_tiles: int
    utilization: float
    dense_utilization: float
    weight_bytes: int
    meta_bytes: int
    macs: int
    model_cycles: int
    model_counters: dict
    dense_cycles: int
    ideal_cycles: int
    golden_match: bool | None
    density: float = 1.0
    rel_error: float | None = None
    rtl_cycles: int | None = None
    rtl_match: bool | None = None
    rtl_dir: str | None = None
    rtl_coverage: float | None = None
    rtl_tiles: list | None = None
    copies: int = 1
    extra: dict = field(default_factory=dict)
    macro: str = ""
    energy: dict | None = None

    @property
    def speedup(self) -> float:
        """Dense cycles over this layer's cycles (both from the cycle model)."""
        return self.dense_cycles / self.model_cycles

    def as_dict(self) -> dict:
        """The record as plain JSON values, ``speedup`` included."""
        energy = self.energy or {}
        return asdict(self) | {"speedup": self.speedup,
                               "pj_per_token": energy.get("pj_per_token"),
                               "tops_per_w": energy.get("tops_per_w")}


def summarize(records: list[LayerRecord]) -> dict:
    """Totals over the layers: cycles (model, dense), speedup, MACs, bytes, matches.

    ``passed`` is true when every golden check and every RTL run that happened matched.
    ``golden_layers`` counts the records the golden model ran on (a layer-shape table's
    have none), ``linears`` the layers the records stand for (their ``copies``), and
    ``cycle_model_only`` is true when neither the golden model nor the RTL ran on any.
    ``energy`` is :func:`sparsecim.sw.energy.total_energy` of the layers' energy figures (None
    unless every layer has them).

    Raises
    ------
    ValueError
        If ``records`` is empty.
    """
    if not records:
        raise ValueError("records must not be empty")
    model = sum(r.model_cycles for r in records)
    dense = sum(r.dense_cycles for r in records)
    rtl = [r for r in records if r.rtl_match is not None]
    golden = [r for r in records if r.golden_match is not None]
    return {
        "layers": len(records),
        "linears": sum(r.copies for r in records),
        "model_cycles": model,
        "dense_cycles": dense,
        "speedup": dense / model,
        "macs": sum(r.macs for r in records),
        "weight_bytes": sum(r.weight_bytes for r in records),
        "meta_bytes": sum(r.meta_bytes for r in records),
        "arrays": sum(r.arrays for r in records),
        "golden_layers": len(golden),
        "golden_matches": sum(bool(r.golden_match) for r in golden),
        "rtl_layers": len(rtl),
        "rtl_matches": sum(bool(r.rtl_match) for r in rtl),
        "cycle_model_only": not golden and not rtl,
        "passed": all(r.golden_match for r in golden) and all(r.rtl_match for r in rtl),
        "energy": _energy_summary(records),
    }


def _energy_summary(records: list[LayerRecord]) -> dict | None:
    from .energy import total_energy

    if not all(r.energy for r in records):
        return None
    return total_energy([r.energy for r in records])
