"""zennit-crp's attribution-side modules (``crp.attribution``, ``crp.concepts``, ``crp.helper``, ``crp.hooks``,
``crp.graph``) against ``glocal.compat``'s: every public name with its signature, and each name side by side."""

from __future__ import annotations

import copy
import importlib
import inspect
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from parity_models import fashion_composite, fashion_images, fashion_model
from zennit.composites import NameMapComposite

import glocal.compat
from glocal.compat import (
    AttributionGraph,
    CondAttribution,
    abs_norm,
    find_files,
    get_output_shapes,
    load_receptive_field,
    max_norm,
    trace_model_graph,
)
from glocal.compat.concepts import ChannelConcept, Concept
from glocal.compat.hooks import MaskHook

crp_attribution = pytest.importorskip("crp.attribution")
crp_concepts = pytest.importorskip("crp.concepts")
crp_helper = pytest.importorskip("crp.helper")
crp_hooks = pytest.importorskip("crp.hooks")
crp_graph = pytest.importorskip("crp.graph")

# Names of these zennit-crp modules that glocal.compat deliberately leaves out (see docs/migration.md):
NOT_COVERED = {
    ("hooks", "FeatVisHook"),  # the scan hook of zennit-crp's FeatureVisualization; glocal's index scans differently
    ("graph", "GraphNode"),  # a node of torch.jit's graph; glocal traces the layer graph without torch.jit
    ("graph", "dump_pytorch_graph"),  # prints the torch.jit graph (trace_model_graph(debug=True))
}
# Provided by the feature-visualization side of glocal.compat (their own tests): re-exported from glocal.compat.helper
FEATURE_VISUALIZATION = {
    ("helper", "load_maximization"),
    ("helper", "load_statistics"),
    ("helper", "load_stat_targets"),
}
SIGNATURE_DIFFERS = {("graph", "ModelGraph", "__init__")}  # built from torch.jit nodes there, from glocal's graph here


pytestmark = pytest.mark.usefixtures("one_thread")


def _public(module: Any) -> dict[str, Any]:
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    }


def _parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize("module", ["attribution", "concepts", "helper", "hooks", "graph"])
def test_every_public_name_exists_with_its_signature(module: str) -> None:
    theirs = importlib.import_module(f"crp.{module}")
    ours = importlib.import_module(f"glocal.compat.{module}")
    checked = 0
    for name, value in _public(theirs).items():
        if (module, name) in NOT_COVERED or ((module, name) in FEATURE_VISUALIZATION and not hasattr(ours, name)):
            continue
        assert hasattr(ours, name), f"glocal.compat.{module} lacks {name}"
        assert hasattr(glocal.compat, name), f"glocal.compat lacks {name}"
        mine = getattr(ours, name)
        if inspect.isclass(value):
            assert inspect.isclass(mine)
            for method, function in vars(value).items():
                if method.startswith("_") and method not in ("__init__", "__call__"):
                    continue
                if not callable(function) and not isinstance(function, staticmethod):
                    continue
                assert hasattr(mine, method), f"{module}.{name}.{method} is missing"
                if (module, name, method) not in SIGNATURE_DIFFERS:
                    theirs_parameters = _parameters(getattr(value, method))
                    assert _parameters(getattr(mine, method)) == theirs_parameters, f"{module}.{name}.{method}"
                checked += 1
        elif callable(value):
            assert _parameters(mine) == _parameters(value), f"{module}.{name}"
            checked += 1
    assert checked > 0
    # names zennit-crp's modules import from each other are importable from the same places
    if module == "attribution":
        from glocal.compat.attribution import ChannelConcept as Imported  # noqa: F401
        from glocal.compat.attribution import attrGraphResult, attrResult

        assert attrResult.__name__ == crp_attribution.attrResult.__name__ == "AttributionResults"
        assert attrGraphResult.__name__ == crp_attribution.attrGraphResult.__name__ == "AttributionGraphResults"
        assert attrResult._fields == crp_attribution.attrResult._fields
        assert attrGraphResult._fields == crp_attribution.attrGraphResult._fields


# -- helper --------------------------------------------------------------------------------------------------------


def test_norms_match() -> None:
    values = torch.randn(3, 7, generator=torch.Generator().manual_seed(1))
    for ours, theirs in ((abs_norm, crp_helper.abs_norm), (max_norm, crp_helper.max_norm)):
        for tensor in (values, values[0], values.abs()):
            torch.testing.assert_close(ours(tensor), theirs(tensor))
            torch.testing.assert_close(ours(tensor, stabilize=0.5), theirs(tensor, stabilize=0.5))


def test_get_output_shapes_matches_and_leaves_the_model_alone() -> None:
    model = fashion_model()
    model.train()  # batch-norm statistics must not move (zennit-crp's forward pass in training mode moves them)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    sample = fashion_images(1)
    layers = ["conv1", "conv2", "parallel.0", "linear1", "linear2", "missing"]
    ours = get_output_shapes(model, sample, layers)
    theirs = crp_helper.get_output_shapes(copy.deepcopy(model), sample, layers)
    assert ours == theirs and list(ours) == list(theirs)
    assert ours["conv2"] == torch.Size([16, 12, 12]) and ours["linear1"] == torch.Size([120])
    assert all(module.training for module in model.modules())
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert not any(module._forward_hooks for module in model.modules())


def test_result_folder_helpers(tmp_path: Path) -> None:
    for name in ("RelMax_sum_normed", "ActMax_max_unnormed", "RelStats_sum_normed", "ReField", "other"):
        (tmp_path / name).mkdir()
    field = np.arange(12, dtype=np.int64).reshape(3, 4)
    np.save(tmp_path / "ReField" / "conv2.npy", field)
    ours = find_files(tmp_path)
    theirs = crp_helper.find_files(str(tmp_path))
    assert [sorted(paths) for paths in ours] == [sorted(paths) for paths in theirs]
    assert [len(paths) for paths in ours] == [1, 1, 1, 0, 1]
    assert np.array_equal(load_receptive_field(tmp_path / "ReField", "conv2"), field)
    assert np.array_equal(crp_helper.load_receptive_field(tmp_path / "ReField", "conv2"), field)


# -- concepts: a user's own Concept subclass ------------------------------------------------------------------------


class Pairs:
    """A concept of one's own: concept ``k`` is channels ``2k`` and ``2k + 1`` (written once, for both libraries)."""

    @staticmethod
    def mask(batch_id: int, concept_ids: list[int], layer_name: str | None = None) -> Any:
        def mask_fct(grad: torch.Tensor) -> torch.Tensor:
            keep = torch.zeros_like(grad[batch_id])
            for concept in concept_ids:
                keep[2 * concept : 2 * concept + 2] = 1
            grad = grad.clone()
            grad[batch_id] = grad[batch_id] * keep
            return grad

        return mask_fct

    def attribute(
        self, relevance: torch.Tensor, mask: Any = None, layer_name: Any = None, abs_norm: bool = True
    ) -> Any:
        channel = relevance.flatten(2).sum(-1) if relevance.dim() > 2 else relevance
        pairs = channel.reshape(len(channel), -1, 2).sum(-1)
        return pairs / (pairs.abs().sum(-1, keepdim=True) + 1e-10) if abs_norm else pairs


class LargestGradients:
    """A mask that depends on the gradient's values: keeps the 20 largest entries of the row (glocal's engine cannot
    run it, so such calls take zennit-crp's steps)."""

    @staticmethod
    def mask(batch_id: int, concept_ids: Any, layer_name: str | None = None) -> Any:
        def mask_fct(grad: torch.Tensor) -> torch.Tensor:
            row = grad[batch_id].flatten()
            keep = torch.zeros_like(row)
            keep[row.topk(20).indices] = 1
            grad = grad.clone()
            grad[batch_id] = (row * keep).view_as(grad[batch_id])
            return grad

        return mask_fct


def _concept_pair(mixin: type) -> tuple[Any, Any]:
    ours = type(f"Ours{mixin.__name__}", (mixin, Concept), {})()
    theirs = type(f"Theirs{mixin.__name__}", (mixin, crp_concepts.Concept), {})()
    return ours, theirs


def _crp(model: torch.nn.Module, data: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return crp_attribution.CondAttribution(copy.deepcopy(model))(data.clone().requires_grad_(True), *args, **kwargs)


@pytest.mark.parametrize("mixin", [Pairs, LargestGradients], ids=lambda m: m.__name__)
def test_user_concepts_as_mask_map(mixin: type) -> None:
    model, data = fashion_model(), fashion_images(3)[1:2]  # one sample: zennit-crp mis-pairs two with a group of two
    ours_concept, theirs_concept = _concept_pair(mixin)
    conditions = [{"conv2": [1], "y": [3]}, {"conv2": [2, 4], "y": [3]}, {"linear1": [5], "conv2": [0], "y": [1]}]
    record = ["conv1", "conv2", "linear1"]
    for sole in (False, True):
        kwargs = {"record_layer": record, "exclude_parallel": sole}
        ours = CondAttribution(model)(data, conditions, fashion_composite(), mask_map=ours_concept.mask, **kwargs)
        theirs = _crp(model, data, conditions, fashion_composite(), mask_map=theirs_concept.mask, **kwargs)
        torch.testing.assert_close(ours.heatmap, theirs.heatmap, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ours.relevances["conv1"], theirs.relevances["conv1"], rtol=1e-4, atol=1e-6)
        if not sole:
            torch.testing.assert_close(ours.relevances["conv2"], theirs.relevances["conv2"], rtol=1e-4, atol=1e-6)
    # a dict mask_map; and the concept's attribute, as zennit-crp's
    mask_map = {"conv2": ours_concept.mask, "linear1": ChannelConcept.mask}
    ours = CondAttribution(model)(data, conditions[:2], fashion_composite(), mask_map=mask_map, record_layer=record)
    theirs = _crp(
        model, data, conditions[:2], fashion_composite(), record_layer=record,
        mask_map={"conv2": theirs_concept.mask, "linear1": crp_concepts.ChannelConcept.mask},
    )  # fmt: skip
    torch.testing.assert_close(ours.heatmap, theirs.heatmap, rtol=1e-4, atol=1e-6)
    if mixin is Pairs:
        torch.testing.assert_close(
            ours_concept.attribute(ours.relevances["conv2"]), theirs_concept.attribute(theirs.relevances["conv2"])
        )
        with pytest.raises(NotImplementedError, match=r"OursPairs does not implement Concept\.reference_sampling"):
            ours_concept.reference_sampling(ours.relevances["conv2"])


def test_user_concept_in_an_attribution_graph() -> None:
    model, sample = fashion_model(), fashion_images(4)[3:4]
    ours_concept, theirs_concept = _concept_pair(Pairs)
    layers = ["conv1", "conv2", "parallel.0", "linear1"]
    call = {"concept_id": 11, "layer_name": "linear1", "target": 2, "width": [3, 2], "verbose": False}
    layer_map = {name: ours_concept if name == "conv2" else ChannelConcept() for name in layers}
    ours = AttributionGraph(CondAttribution(model), trace_model_graph(model, sample, layers), layer_map)(
        sample, fashion_composite(), **call
    )
    their_model, leaf = copy.deepcopy(model), sample.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        their_layer_map = {
            name: theirs_concept if name == "conv2" else crp_concepts.ChannelConcept() for name in layers
        }
        theirs = crp_attribution.AttributionGraph(
            crp_attribution.CondAttribution(their_model), crp_graph.trace_model_graph(their_model, leaf, layers),
            their_layer_map,
        )(leaf, fashion_composite(), **call)  # fmt: skip
    assert ours.nodes == theirs.nodes
    assert any(layer == "conv2" and concept < 8 for layer, concept in ours.nodes)  # pairs: ids below 16 / 2
    for key, edges in theirs.connections.items():
        assert [edge[:2] for edge in ours.connections[key]] == [edge[:2] for edge in edges]
        assert [edge[2] for edge in ours.connections[key]] == pytest.approx([edge[2] for edge in edges], rel=1e-4)


# -- hooks and graph ---------------------------------------------------------------------------------------------


def test_mask_hook_in_a_name_map_composite() -> None:
    model, data = fashion_model(), fashion_images(2)
    keep = torch.zeros(16, 1, 1)
    keep[[2, 7]] = 1
    gradients = []
    for hook_class in (MaskHook, crp_hooks.MaskHook):
        leaf = data.clone().requires_grad_(True)
        hook = hook_class([lambda grad: grad * keep])
        composite = NameMapComposite([(["conv2"], hook)])
        with composite.context(model) as modified:
            modified(leaf)[:, 3].sum().backward()
        gradients.append(leaf.grad)
        assert hook.fn_list == []  # removing the composite clears the functions
    torch.testing.assert_close(gradients[0], gradients[1])
    plain = data.clone().requires_grad_(True)
    model(plain)[:, 3].sum().backward()
    assert not torch.allclose(gradients[0], plain.grad)
    for parameter in model.parameters():
        parameter.grad = None


def test_model_graph_set_layer_names_and_str() -> None:
    model, sample = fashion_model(), fashion_images(1)
    graph = trace_model_graph(model, sample, ["conv1", "conv2", "parallel.0", "linear1"])
    their = crp_graph.trace_model_graph(copy.deepcopy(model), sample.clone().requires_grad_(True), ["conv1", "linear1"])
    assert sorted(graph.find_input_layers("linear1")) == ["conv2", "parallel.0"]
    graph.set_layer_names(["conv1", "linear1"])
    assert graph.layer_names == ["conv1", "linear1"]
    assert graph.find_input_layers("linear1") == their.find_input_layers("linear1") == ["conv1"]
    assert "conv1 -> linear1" in str(graph)
    with pytest.raises(KeyError, match="conv2 does not exist"):
        graph.find_input_layers("conv2")


def test_tutorial_mask_and_scalar_targets() -> None:
    """The tutorial's first cells: ``cc.mask(0, [0, 2])`` on ones, and a condition ``{"y": 46}`` without a list."""
    cc, theirs = ChannelConcept(), crp_concepts.ChannelConcept()
    torch.testing.assert_close(
        cc.mask(0, [0, 2])(torch.ones((2, 4, 2, 2))), theirs.mask(0, [0, 2])(torch.ones((2, 4, 2, 2)))
    )
    model, data = fashion_model(), fashion_images(1)
    for conditions in ([{"y": 4}], [{"y": [4], "conv2": 3}]):
        ours = CondAttribution(model)(data, conditions, fashion_composite())
        theirs = _crp(model, data, conditions, fashion_composite())
        torch.testing.assert_close(ours.heatmap, theirs.heatmap, rtol=1e-4, atol=1e-6)
