"""The result of :func:`glocal.diagnose`: plain data, and the text table a user prints.

Every relevance is a *fraction of the starting relevance* (the explained logits): over the diagnosed samples,
``sum_n sign(S_n) * R_n / sum_n |S_n|`` with ``S_n`` sample ``n``'s target logit and ``R_n`` the relevance summed
over a tensor (the weighting of :class:`glocal.lrp.conservation.KeptRelevance`), so 1 means "all of the logit" and a
sample whose logit is tiny cannot dominate.

>>> row = FlowRow("0", "Linear", "Epsilon", 1, relevance_out=1.0, relevance_in=0.75)
>>> row.ratio, row.change
(0.75, -0.25)
"""

from __future__ import annotations

import json
import math
import textwrap
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Diagnosis", "Finding", "FlowRow", "LayerCompleteness"]

KINDS = ("addition", "batch_norm", "clipping", "absorption", "creation", "no_rule", "operation", "completeness")
"""The kinds of :class:`Finding`, in the order the docs explain them."""


@dataclass(frozen=True)
class FlowRow:
    """What one module did to the relevance passing it, summed over its calls.

    Attributes
    ----------
    name, type
        The module's name in the model and its class.
    rule
        The class name of the LRP rule the composite gives it (``None``: no rule, the relevance passes as a gradient).
    calls
        How often it ran in one forward pass (a module called twice counts both calls in the sums).
    relevance_out
        Relevance arriving at its output (from all consumers), as a fraction of the starting relevance.
    relevance_in
        Relevance it sends to its input(s).
    """

    name: str
    type: str
    rule: str | None
    calls: int
    relevance_out: float
    relevance_in: float

    @property
    def ratio(self) -> float:
        """``relevance_in / relevance_out`` (NaN when nothing arrives)."""
        return self.relevance_in / self.relevance_out if self.relevance_out != 0 else math.nan

    @property
    def change(self) -> float:
        """``relevance_in - relevance_out``: negative where the module loses relevance, positive where it creates."""
        return self.relevance_in - self.relevance_out


@dataclass(frozen=True)
class LayerCompleteness:
    """Whether the concepts (channels) of a layer explain the whole heatmap.

    Attributes
    ----------
    layer, channels
        The layer and its number of channels (concepts).
    arriving
        Relevance arriving at the layer, summed over all its channels, as a fraction of the starting relevance.
    channel_heatmaps
        The conditional heatmaps of all channels summed, as a fraction of the starting relevance.
    heatmap
        The plain heatmap's sum, as a fraction of the starting relevance.
    deviation
        The largest, over samples, of ``||sum_c H_c - H||_1 / ||H||_1`` (``H_c`` a channel's conditional heatmap, ``H``
        the plain heatmap): 0 when the channels explain every pixel of the heatmap.
    exact
        Whether every channel was attributed as its own condition (``True``) or all channels as one condition, which
        gives the same sum because the backward pass below the layer is linear in the relevance at the layer.
    """

    layer: str
    channels: int
    arriving: float
    channel_heatmaps: float
    heatmap: float
    deviation: float
    exact: bool


@dataclass(frozen=True)
class Finding:
    """A place where relevance is lost or created, or where the rules do not describe the model.

    Attributes
    ----------
    location
        A module name, or for an operation in ``forward`` ``"'block': add"`` (the module whose forward runs it and
        the function); ``"(model)"`` for the model as a whole.
    kind
        One of :data:`KINDS`: ``addition`` (a residual ``+`` no canonizer covers: relevance created), ``batch_norm``
        (not merged), ``clipping`` (ReLU6 / Hardtanh without a rule: relevance lost where saturated), ``absorption``
        (a rule keeps relevance: a bias, a stabiliser), ``creation`` (a rule hands on more than arrived), ``no_rule``
        (a module without a rule changes the relevance), ``operation`` (another operation in ``forward`` does),
        ``completeness`` (the channels of a layer do not explain the heatmap).
    change
        Relevance gained (positive) or lost (negative) there, as a fraction of the starting relevance (for
        ``completeness``: the heatmap part the channels miss, negative).
    ratio
        Relevance sent on over relevance arriving (for ``completeness``: 1 - the deviation).
    detail
        What happens there, in words.
    fix
        What removes it, where something does; ``None`` otherwise.
    """

    location: str
    kind: str
    change: float
    ratio: float
    detail: str
    fix: str | None


@dataclass(frozen=True)
class Diagnosis:
    """Where a model's LRP relevance goes under a composite (see :func:`glocal.diagnose`).

    Attributes
    ----------
    model, composite
        The model's class name and a description of the composite.
    samples
        How many samples were diagnosed.
    tolerance
        A module or operation that changes the relevance arriving at it by less than this fraction is no finding.
    kept
        The fraction of the starting relevance the heatmaps keep (1: conservative).
    kept_per_sample
        Per sample, its heatmap's sum over its target logit.
    flow
        Per module (every leaf module, or the layers asked for), in forward order, what it did to the relevance.
    completeness
        Per chosen layer, whether its channels explain the heatmap.
    findings
        Where relevance is lost or created beyond the tolerance, in forward order, with the fixes.
    warnings
        The messages of the warnings glocal would have emitted during the diagnosis (it reports them here instead).
    """

    model: str
    composite: str
    samples: int
    tolerance: float
    kept: float
    kept_per_sample: tuple[float, ...]
    flow: tuple[FlowRow, ...]
    completeness: tuple[LayerCompleteness, ...]
    findings: tuple[Finding, ...]
    warnings: tuple[str, ...] = ()

    @property
    def conservative(self) -> bool:
        """Whether the heatmaps keep the starting relevance within the tolerance and nothing but incomplete layers
        (a property of the architecture, not a loss) was found."""
        return abs(self.kept - 1) <= self.tolerance and all(f.kind == "completeness" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (NaN as ``None``); flow rows carry their ``ratio`` and ``change`` too."""
        data = asdict(self)
        data["flow"] = [{**asdict(row), "ratio": row.ratio, "change": row.change} for row in self.flow]
        return _finite(data)

    def to_json(self, indent: int | None = 2) -> str:
        """The result as JSON text (see :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self) -> str:
        return self.table()

    def table(self, width: int = 110) -> str:
        """A readable text report: conservation, the flow per module, completeness per layer and the findings."""
        values = [value for value in self.kept_per_sample if not math.isnan(value)]
        spread = f" (per sample {min(values):.4g} to {max(values):.4g})" if values else ""
        lines = [
            f"Diagnosis of {self.model} under {self.composite}: {self.samples} sample(s), tolerance {self.tolerance:g}",
            f"The heatmaps keep {self.kept:.4g} of the target logits{spread}; "
            + ("conservative." if self.conservative else f"{len(self.findings)} finding(s)."),
            "",
            "Relevance flow, as fractions of the target logits (out: arriving at the module's output; in: sent to "
            "its input)",
        ]
        lines += _columns(
            ["module", "type", "rule", "calls", "out", "in", "in/out"],
            [
                [
                    row.name or "(model)",
                    row.type,
                    row.rule or "-",
                    str(row.calls),
                    _number(row.relevance_out),
                    _number(row.relevance_in),
                    _number(row.ratio),
                ]
                for row in self.flow
            ],
            numeric=3,
        )
        if self.completeness:
            lines += ["", "Completeness: the conditional heatmaps of all channels of a layer against the plain heatmap"]
            lines += _columns(
                ["layer", "channels", "at layer", "channel heatmaps", "heatmap", "deviation", "how"],
                [
                    [
                        c.layer,
                        str(c.channels),
                        _number(c.arriving),
                        _number(c.channel_heatmaps),
                        _number(c.heatmap),
                        _number(c.deviation),
                        "per channel" if c.exact else "all channels at once",
                    ]
                    for c in self.completeness
                ],
                numeric=1,
            )
        lines += ["", "Findings" + (" (change: relevance gained + or lost - there)" if self.findings else ": none")]
        if self.findings:
            lines += _columns(
                ["where", "kind", "change", "in/out"],
                [[f.location, f.kind, f"{f.change:+.4g}", _number(f.ratio)] for f in self.findings],
                numeric=2,
            )
        groups: dict[tuple[str, str | None], list[Finding]] = {}
        for finding in self.findings:
            groups.setdefault((finding.kind, finding.fix), []).append(finding)
        if groups:
            lines += ["", "What they mean, and the fixes"]
        for (kind, fix), members in groups.items():
            first = members[0]
            where = f"{first.location}" + (f" and {len(members) - 1} more" if len(members) > 1 else "")
            text = f"{kind} ({where}): {first.detail}" + (f" Fix: {fix}" if fix else "")
            lines += textwrap.wrap(text, width, initial_indent="- ", subsequent_indent="  ")
        if self.warnings:
            lines += ["", f"{len(self.warnings)} warning(s) glocal would have emitted:"]
            for message in self.warnings:
                lines += textwrap.wrap(message, width, initial_indent="- ", subsequent_indent="  ")
        return "\n".join(lines)


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4g}"


def _columns(header: list[str], rows: list[list[str]], numeric: int) -> list[str]:
    """Rows aligned in columns; the columns from index ``numeric`` on are right-aligned."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if i >= numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
