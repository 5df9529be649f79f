"""zennit-crp's feature-visualization modules (``crp.visualization``, ``crp.image``, ``crp.cache``,
``crp.maximization``, ``crp.statistics``) against ``glocal.compat``'s: every public name, with its signature.

glocal may add keyword-only parameters after zennit-crp's (``k``, ``targets``, ``overwrite``); zennit-crp's own
parameters come first, with the same names, order and defaults.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

import glocal.compat

pytest.importorskip("crp.visualization")

MODULES = ["visualization", "image", "cache", "maximization", "statistics"]
# zennit-crp's scan machinery, which glocal's index replaces (see docs/migration.md):
NOT_COVERED = {
    ("visualization", "FeatureVisualization", "run_distributed"),
    ("visualization", "FeatureVisualization", "analyze_relevance"),
    ("visualization", "FeatureVisualization", "analyze_activation"),
    ("visualization", "FeatureVisualization", "collect_results"),
    ("visualization", "FeatureVisualization", "cache_reference"),  # caching is built into the two methods
    ("maximization", "Maximization", "analyze_layer"),
    ("maximization", "Maximization", "delete_result_arrays"),
    ("maximization", "Maximization", "concatenate_with_results"),
    ("maximization", "Maximization", "sort_result_array"),
    ("maximization", "Maximization", "collect_results"),
    ("statistics", "Statistics", "analyze_layer"),
    ("statistics", "Statistics", "delete_result_arrays"),
    ("statistics", "Statistics", "concatenate_with_results"),
    ("statistics", "Statistics", "sort_result_array"),
    ("statistics", "Statistics", "collect_results"),
}


def public(module: Any) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }


def default(value: Any) -> Any:
    """A default as compared: functions by name (each package has its own plot functions), sequences as tuples."""
    if callable(value):
        return value.__name__
    if isinstance(value, list | tuple):
        return tuple(default(v) for v in value)
    return value


def assert_signature_extends(ours: Any, theirs: Any, where: tuple[str, ...]) -> None:
    mine, original = inspect.signature(ours).parameters, inspect.signature(theirs).parameters
    names = list(original)
    assert list(mine)[: len(names)] == names, where
    for name in names:
        if original[name].default is not inspect.Parameter.empty:  # (a default where zennit-crp has none is fine)
            assert default(mine[name].default) == default(original[name].default), (*where, name)
    for extra in list(mine)[len(names) :]:
        assert mine[extra].kind is inspect.Parameter.KEYWORD_ONLY or mine[extra].default is not inspect.Parameter.empty


@pytest.mark.parametrize("module", MODULES)
def test_every_public_name_exists_with_its_signature(module: str) -> None:
    theirs = importlib.import_module(f"crp.{module}")
    ours = importlib.import_module(f"glocal.compat.{module}")
    checked = 0
    for name, value in public(theirs).items():
        assert hasattr(ours, name), f"glocal.compat.{module} lacks {name}"
        assert getattr(glocal.compat, name) is getattr(ours, name)
        mine = getattr(ours, name)
        if inspect.isclass(value):
            assert inspect.isclass(mine)
            for method, function in vars(value).items():
                if (method.startswith("_") and method != "__init__") or (module, name, method) in NOT_COVERED:
                    continue
                if not callable(function):
                    continue
                assert hasattr(mine, method), f"{module}.{name}.{method} is missing"
                assert_signature_extends(getattr(mine, method), getattr(value, method), (module, name, method))
                checked += 1
        else:
            assert_signature_extends(mine, value, (module, name))
            checked += 1
    assert checked > 0


def test_names_imported_across_modules() -> None:
    """What zennit-crp's modules import from each other can be imported from the same places here."""
    crp_visualization = importlib.import_module("crp.visualization")
    compat_visualization = importlib.import_module("glocal.compat.visualization")
    for name in ("load_maximization", "load_statistics", "load_stat_targets", "vis_img_heatmap", "vis_opaque_img"):
        assert hasattr(crp_visualization, name) and hasattr(compat_visualization, name)
    crp_helper = importlib.import_module("crp.helper")
    compat_helper = importlib.import_module("glocal.compat.helper")
    for name in ("load_maximization", "load_statistics", "load_stat_targets"):
        assert_signature_extends(getattr(compat_helper, name), getattr(crp_helper, name), ("helper", name))
