"""Model-wide analyses as report data: pruning curves, concept flipping and diagnostics turned into an
:class:`~glocal.report.data.Analysis` (a paragraph, line charts, tables) that :func:`~glocal.report.build_report`
shows after the atlas (``analyses=[...]``).

Each function only reads a result the library computed elsewhere (:func:`glocal.pruning.compare_criteria`,
:func:`glocal.evaluation.concept_flipping`, :func:`glocal.diagnose`); nothing is recomputed here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .data import Analysis, Chart, Series, Table

if TYPE_CHECKING:
    from ..evaluation.diagnosis import Diagnosis
    from ..evaluation.flipping_result import FlippingResult
    from ..pruning.curves import CriteriaComparison

__all__ = ["diagnosis_analysis", "flipping_analysis", "pruning_analysis"]

FLIPPING_NAMES = {"morf": "MoRF (CRP order)", "lerf": "LeRF", "actmax": "most active first", "random": "random"}


def _number(value: float, digits: int = 4) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}g}"


def _percent(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{100 * value:.1f}%"


def pruning_analysis(comparison: CriteriaComparison, *, layers: Sequence[str] = (), title: str = "") -> Analysis:
    """Accuracy and label logit against the pruning rate, one line per criterion, and the areas under the curves.

    With class-specific scores (``comparison.classes``), the chosen classes' accuracy is drawn beside the others'.
    """
    curves = comparison.curves
    first = next(iter(curves.values()))
    where = f" of {', '.join(layers)}" if layers else ""
    direction = "most important first" if first.remove == "most" else "least important first"
    text = (
        f"Channels{where} switched off {direction} by each criterion ({first.scope} scope), without fine-tuning; "
        f"scores from {comparison.reference_samples} reference samples, accuracy on {first.samples} samples. "
        "A criterion that knows what the model needs keeps the accuracy up longest (larger area under the curve)."
    )
    charts = [
        Chart(
            "Accuracy against the pruning rate",
            "share of channels removed",
            "accuracy",
            tuple(Series(name, curve.rates, curve.accuracy) for name, curve in curves.items()),
        ),
        Chart(
            "Mean logit of each sample's label",
            "share of channels removed",
            "logit",
            tuple(Series(name, curve.rates, curve.logit) for name, curve in curves.items()),
        ),
    ]
    columns = ["criterion", "AUC accuracy", "AUC logit"]
    if comparison.classes is not None:
        chosen = ", ".join(map(str, comparison.classes))
        charts.append(
            Chart(
                f"Accuracy of class {chosen} (solid criteria) and of the other classes",
                "share of channels removed",
                "accuracy",
                tuple(
                    Series(f"{name}: {label}", curve.rates, curve.values(of))
                    for name, curve in curves.items()
                    for of, label in (("classes", f"class {chosen}"), ("others", "others"))
                ),
            )
        )
        columns += [f"AUC class {chosen}", "AUC other classes"]
    shown = [r for r in first.rates if r > 0][:: max(1, len(first.rates) // 4)][:4]
    columns += [f"accuracy at {r:g}" for r in shown]
    rows = []
    for name, curve in curves.items():
        cells = [name, _number(curve.auc()), _number(curve.auc("logit"))]
        if comparison.classes is not None:
            cells += [_number(curve.auc("classes")), _number(curve.auc("others"))]
        cells += [_percent(curve.accuracy[curve.rates.index(r)]) if r in curve.rates else "n/a" for r in shown]
        rows.append(tuple(cells))
    table = Table("Areas under the curves (normalised by the span of rates)", tuple(columns), tuple(rows))
    numeric = (False,) + (True,) * (len(columns) - 1)
    return Analysis(
        title or "Concept pruning: which concepts the model needs",
        text,
        tuple(charts),
        (Table(table.title, table.columns, table.rows, numeric),),
    )


def flipping_analysis(results: Sequence[FlippingResult], *, title: str = "") -> Analysis:
    """Per layer, the explained logit as concepts are switched off in each order (random: mean ± one standard
    deviation), and a table of AOPC, ABPC and the Wilcoxon test of MoRF against random."""
    if not results:
        raise ValueError("give at least one concept flipping result")
    charts = []
    rows = []
    for result in results:
        fraction = tuple(k / result.channels for k in result.switched_off)
        series = []
        for order in result.orders:
            mean = result.curves(order).mean(0)
            low = high = None
            if order == "random":
                spread = result.spread().mean(0)
                low = tuple(float(v) for v in mean - spread)
                high = tuple(float(v) for v in mean + spread)
            series.append(Series(FLIPPING_NAMES.get(order, order), fraction, tuple(float(v) for v in mean), low, high))
        charts.append(
            Chart(
                f"Layer {result.layer}: concepts switched off",
                "share of the layer's channels off",
                "logit of the explained class",
                tuple(series),
            )
        )
        has = set(result.orders)
        test = result.wilcoxon() if {"morf", "random"} <= has else None
        rows.append(
            (
                result.layer,
                str(len(result.targets)),
                *(_number(result.aopc(order)) if order in has else "n/a" for order in ("morf", "lerf", "actmax")),
                _number(result.aopc("random")) if "random" in has else "n/a",
                _number(result.abpc()) if {"morf", "lerf"} <= has else "n/a",
                "n/a" if test is None else f"{test.pvalue:.2g}",
            )
        )
    columns = (
        "layer",
        "samples",
        "AOPC MoRF",
        "AOPC LeRF",
        "AOPC most active",
        "AOPC random",
        "ABPC",
        "p MoRF > random",
    )
    text = (
        "Each layer's concepts (channels) are switched off cumulatively: most relevant first by CRP (MoRF), least "
        "relevant first (LeRF), most active first, and in random orders. If the relevances are faithful, the "
        "explained logit falls fastest under MoRF: a larger AOPC (average drop) than random and than most active "
        "first, and a positive ABPC (area between LeRF and MoRF). p: one-sided paired Wilcoxon signed-rank test over "
        "samples of MoRF's AOPC against the random orders' mean."
    )
    table = Table("Areas over the perturbation curves (logit)", columns, tuple(rows), (False,) + (True,) * 7)
    return Analysis(title or "Faithfulness: concept flipping", text, tuple(charts), (table,))


def diagnosis_analysis(diagnosis: Diagnosis, *, title: str = "") -> Analysis:
    """The diagnosis's conservation, findings (with their fixes) and completeness per layer as tables."""
    spread = (
        f" (per sample {min(diagnosis.kept_per_sample):.3g} to {max(diagnosis.kept_per_sample):.3g})"
        if diagnosis.kept_per_sample
        else ""
    )
    verdict = (
        "Relevance is conserved within the tolerance."
        if diagnosis.conservative
        else f"{len(diagnosis.findings)} place(s) lose or create relevance beyond the tolerance of "
        f"{diagnosis.tolerance:g}; the table names them and the fixes."
    )
    text = (
        f"{diagnosis.model} under {diagnosis.composite}, {diagnosis.samples} sample(s): the heatmaps keep "
        f"{diagnosis.kept:.3g} of the target logits{spread}. {verdict}"
    )
    findings = Table(
        "Where relevance is lost or created",
        ("where", "kind", "change", "what happens", "fix"),
        tuple((f.location, f.kind, f"{f.change:+.3g}", f.detail, f.fix or "none known") for f in diagnosis.findings),
        (False, False, True, False, False),
    )
    completeness = Table(
        "Completeness: do the channels of a layer explain the heatmap?",
        ("layer", "channels", "arriving", "channel heatmaps", "plain heatmap", "largest deviation"),
        tuple(
            (
                c.layer,
                str(c.channels),
                _number(c.arriving, 3),
                _number(c.channel_heatmaps, 3),
                _number(c.heatmap, 3),
                _percent(c.deviation),
            )
            for c in diagnosis.completeness
        ),
        (False, True, True, True, True, True),
    )
    tables = tuple(t for t in (findings, completeness) if t.rows)
    return Analysis(title or "Diagnostics: where relevance is lost or created", text, (), tables)
