"""glocal against zennit-crp, run side by side: the compat module, the native engine, and zennit-crp's known bugs.

Numbers must agree within ``TOLERANCE`` relative to the largest magnitude. Compared everywhere: heatmaps and the
relevances of recorded layers that no condition names. The compat module is also compared at conditioned layers
where zennit-crp's value is well defined: with ``exclude_parallel=False``, and at the start layer. (With
``exclude_parallel=True`` zennit-crp accumulates a conditioned layer's ``.grad`` in two backward calls and reports
twice the masked relevance; see ``glocal.compat``.) The native engine reports the relevance *arriving* at a
conditioned layer, before its mask, so it is compared only at unconditioned layers.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
from parity_models import Setup, fashion_setup, resnet18_setup, vgg_setup
from zennit.composites import EpsilonPlus, EpsilonPlusFlat

from glocal import Attributor, ChannelConcept, ConceptError, LayerError, compat
from glocal.compat import CondAttribution
from glocal.compat.translation import Translator

crp_attribution = pytest.importorskip("crp.attribution")
crp_concepts = pytest.importorskip("crp.concepts")
crp_helper = pytest.importorskip("crp.helper")

TOLERANCE = 1e-5


# -- models (built once: the torchvision models take seconds to initialise) ---------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread while this module's tests run.

    The inputs are tiny; on a shared two-core machine a second thread waiting for a busy core made these tests ten
    times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fashion() -> Setup:
    return fashion_setup()


@pytest.fixture(scope="module")
def fashion_pair(fashion: Setup) -> Setup:
    """The FashionMNIST setup with two samples (three conditions are then not paired with the samples)."""
    return replace(fashion, data=fashion.data[:2])


@pytest.fixture(scope="module")
def vgg11() -> Setup:
    return vgg_setup("vgg11", EpsilonPlusFlat)


@pytest.fixture(scope="module")
def vgg16() -> Setup:
    return vgg_setup("vgg16", EpsilonPlus)


@pytest.fixture(scope="module")
def resnet18() -> Setup:
    return resnet18_setup()


@pytest.fixture
def model_setup(request: pytest.FixtureRequest) -> Setup:
    """The setup named by the test's ``model_setup`` parameter (``indirect`` parametrisation)."""
    return request.getfixturevalue(request.param)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    actual, expected = actual.detach().float().cpu(), expected.detach().float().cpu()
    scale = max(float(expected.abs().max()), float(actual.abs().max()), 1e-12)
    error = float((actual - expected).abs().max()) / scale
    assert error <= TOLERANCE, f"{what}: relative error {error:.2e} (largest magnitude {scale:.3g})"


def run_crp(setup: Setup, conditions: list[dict[str, Any]], data: torch.Tensor | None = None, **kwargs: Any) -> Any:
    """zennit-crp's CondAttribution on a leaf copy of the data; its side effects on the model are undone here."""
    data = (setup.data if data is None else data).clone().requires_grad_(True)
    flags = [parameter.requires_grad for parameter in setup.model.parameters()]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            attribution = crp_attribution.CondAttribution(setup.model)
            return attribution(data, conditions, setup.composite(), **kwargs)
    finally:
        for parameter, flag in zip(setup.model.parameters(), flags, strict=True):
            parameter.requires_grad_(flag)
            parameter.grad = None
        for module in setup.model.modules():  # zennit-crp leaves its recording hooks when it raises
            module._forward_hooks.clear()


def run_compat(setup: Setup, conditions: list[dict[str, Any]], data: torch.Tensor | None = None, **kwargs: Any) -> Any:
    data = setup.data if data is None else data
    return CondAttribution(setup.model)(data, conditions, setup.composite(), **kwargs)


# -- the case matrix ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Conditions and keyword arguments of one comparison, built from a :class:`Setup`."""

    name: str
    build: Callable[[Setup], tuple[list[dict[str, Any]], dict[str, Any]]]

    def __repr__(self) -> str:
        return self.name


def _init_tensor(setup: Setup, n_conditions: int) -> torch.Tensor:
    """zennit-crp's form of an init_rel tensor: one row per result row (here equal across conditions)."""
    with torch.no_grad():
        output = setup.model(setup.data)
    per_sample = torch.rand(output.shape, generator=torch.Generator().manual_seed(3))
    paired = len(setup.data) == n_conditions
    return per_sample if paired else per_sample.repeat_interleave(n_conditions, 0)


def _single(s: Setup) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    t = s.targets[0]
    return [{s.mid: [s.channels[s.mid][0]], "y": [t]}, {s.mid: [s.channels[s.mid][1]], "y": [t]}], {}


def _ids(s: Setup, layer: str, which: slice = slice(0, 1)) -> list[int]:
    return s.channels[layer][which]


CASES = [
    Case("plain", lambda s: ([{"y": [s.targets[0]]}], {})),
    Case("single_layer", _single),
    Case("two_layers", lambda s: ([{s.top: _ids(s, s.top), s.mid: _ids(s, s.mid), "y": [s.targets[0]]}], {})),
    Case(
        "three_layers",
        lambda s: (
            [
                {
                    s.top: s.channels[s.top],
                    s.mid: _ids(s, s.mid),
                    s.low: _ids(s, s.low, slice(1, 2)),
                    "y": [s.targets[0]],
                }
            ],
            {},
        ),
    ),
    Case("blocked", lambda s: ([{s.mid: [], "y": [s.targets[0]]}, {s.mid: _ids(s, s.mid), "y": [s.targets[0]]}], {})),
    Case("multi_target", lambda s: ([{s.mid: _ids(s, s.mid), "y": list(s.targets)}], {})),
    Case("init_callable", lambda s: (_single(s)[0], {"init_rel": lambda output: output.abs()})),
    Case("init_tensor", lambda s: (_single(s)[0], {"init_rel": _init_tensor(s, 2)})),
    Case("init_scalar", lambda s: (_single(s)[0], {"init_rel": 1})),
    Case("start_layer", lambda s: ([{s.mid: [c]} for c in s.channels[s.mid]], {"start_layer": s.top})),
    Case(
        "combined",  # several cases in one call; zennit-crp keeps their order only with exclude_parallel=False
        lambda s: (
            [
                {s.mid: _ids(s, s.mid), "y": [s.targets[0]]},
                {s.mid: [], "y": [s.targets[0]]},
                {s.top: _ids(s, s.top), s.mid: _ids(s, s.mid, slice(1, 2)), s.low: _ids(s, s.low), "y": [s.targets[0]]},
                {s.mid: _ids(s, s.mid, slice(1, 2)), "y": list(s.targets)},
            ],
            {},
        ),
    ),
    Case(
        "start_layer_conditioned",
        lambda s: ([{s.top: _ids(s, s.top), s.mid: [c]} for c in s.channels[s.mid]], {"start_layer": s.top}),
    ),
]
# Every case on the FashionMNIST model; the structural cases on ResNet18 (skip connections: both exclude_parallel
# settings); on the VGGs (no path around any layer, so exclude_parallel cannot matter) one setting.
STRUCTURAL = ["single_layer", "two_layers", "three_layers", "blocked", "start_layer_conditioned"]
BOTH = (True, False)
PLAN: dict[str, list[tuple[str, tuple[bool, ...]]]] = {
    "fashion": [(case.name, (False,) if case.name == "combined" else BOTH) for case in CASES],
    "resnet18": [
        *((name, BOTH) for name in STRUCTURAL),
        ("combined", (False,)),
        ("multi_target", (True,)),
        ("init_tensor", (True,)),
    ],
    "vgg11": [("combined", (False,)), ("single_layer", (True,)), ("two_layers", (True,)), ("start_layer", (True,))],
    "vgg16": [("combined", (False,)), ("three_layers", (True,)), ("start_layer_conditioned", (True,))],
}
CASE_BY_NAME = {case.name: case for case in CASES}
MATRIX = [
    pytest.param(model, CASE_BY_NAME[name], sole, id=f"{model}-{name}-{'sole' if sole else 'parallel'}")
    for model, plan in PLAN.items()
    for name, settings in plan
    for sole in settings
]


@pytest.mark.parametrize(("model_setup", "case", "exclude_parallel"), MATRIX, indirect=["model_setup"])
def test_matches_zennit_crp(model_setup: Setup, case: Case, exclude_parallel: bool) -> None:
    setup = model_setup
    conditions, kwargs = case.build(setup)
    record = setup.record
    expected = run_crp(setup, conditions, record_layer=record, exclude_parallel=exclude_parallel, **kwargs)
    ours = run_compat(setup, conditions, record_layer=record, exclude_parallel=exclude_parallel, **kwargs)

    start = kwargs.get("start_layer")
    conditioned = {name for condition in conditions for name in condition if name != "y"}
    assert_close(ours.heatmap, expected.heatmap, "compat heatmap")
    assert_close(ours.prediction, expected.prediction, "compat prediction")
    assert set(ours.relevances) == set(expected.relevances)
    assert set(ours.activations) == set(expected.activations)
    for name, relevance in expected.relevances.items():
        assert_close(ours.activations[name], expected.activations[name], f"compat activation of {name}")
        if name not in conditioned or not exclude_parallel or name == start:
            assert_close(ours.relevances[name], relevance, f"compat relevance of {name}")

    # the native engine attributes every sample under every condition, from one init_rel row per sample
    n, m = len(setup.data), len(conditions)
    paired = n == m
    init_rel = kwargs.get("init_rel")
    if isinstance(init_rel, torch.Tensor) and not paired:
        init_rel = init_rel[::m]
    native = Attributor(setup.model, setup.composite())(
        setup.data, conditions, record=record, start_layer=start, init_rel=init_rel, sole_path=exclude_parallel
    )
    rows = [i * m + i for i in range(n)] if paired else list(range(n * m))  # zennit-crp pairs sample i, condition i
    assert native.heatmap is not None
    assert_close(native.heatmap[rows], expected.heatmap, "native heatmap")
    for name in record:
        if name not in conditioned and name != start:
            assert_close(native.relevances[name][rows], expected.relevances[name], f"native relevance of {name}")


# -- broadcasting, pairing, init_rel rows ------------------------------------------------------------------------


def test_paired_samples_and_conditions(fashion_pair: Setup) -> None:
    """``len(data) == len(conditions)``: sample i under condition i, as in zennit-crp."""
    s = fashion_pair
    conditions = [
        {s.mid: _ids(s, s.mid), "y": [s.targets[0]]},
        {s.mid: _ids(s, s.mid, slice(1, 2)), "y": [s.targets[1]]},
    ]
    for exclude_parallel in (True, False):
        expected = run_crp(s, conditions, record_layer=s.record, exclude_parallel=exclude_parallel)
        ours = run_compat(s, conditions, record_layer=s.record, exclude_parallel=exclude_parallel)
        assert ours.heatmap.shape[0] == 2
        assert_close(ours.heatmap, expected.heatmap, "heatmap")
        assert_close(ours.prediction, expected.prediction, "prediction")
        for name in ["conv1", "linear1", "linear2"] + ([] if exclude_parallel else [s.mid]):
            assert_close(ours.relevances[name], expected.relevances[name], f"relevance of {name}")


def test_paired_conditions_with_different_layers(fashion_pair: Setup) -> None:
    """Pairs whose conditions name different layers: each row as zennit-crp computes that pair alone."""
    s = fashion_pair
    conditions = [{s.mid: _ids(s, s.mid), "y": [s.targets[0]]}, {s.top: _ids(s, s.top), "y": [s.targets[1]]}]
    ours = run_compat(s, conditions, record_layer=s.record, exclude_parallel=False)
    for i, condition in enumerate(conditions):
        expected = run_crp(s, [condition], data=s.data[i : i + 1], record_layer=s.record, exclude_parallel=False)
        assert_close(ours.heatmap[i : i + 1], expected.heatmap, f"heatmap of pair {i}")
        for name, relevance in expected.relevances.items():
            assert_close(ours.relevances[name][i : i + 1], relevance, f"relevance of {name}, pair {i}")


def test_init_rel_rows_that_differ_per_condition(fashion_pair: Setup) -> None:
    """zennit-crp's init_rel tensor has one row per result row; rows may differ between conditions."""
    s = fashion_pair
    conditions = [{s.mid: [c], "y": [s.targets[0]]} for c in (*s.channels[s.mid], 0)]
    init_rel = torch.rand(len(s.data) * len(conditions), 10, generator=torch.Generator().manual_seed(5))
    expected = run_crp(s, conditions, record_layer=s.record, exclude_parallel=False, init_rel=init_rel)
    ours = run_compat(s, conditions, record_layer=s.record, exclude_parallel=False, init_rel=init_rel)
    assert_close(ours.heatmap, expected.heatmap, "heatmap")
    for name, relevance in expected.relevances.items():
        assert_close(ours.relevances[name], relevance, f"relevance of {name}")


def test_float_init_rel_is_used(fashion: Setup) -> None:
    """zennit-crp ignores a float init_rel; glocal starts from it (2.0 gives twice the relevance of 1)."""
    s = fashion
    conditions = _single(s)[0]
    one = run_compat(s, conditions, init_rel=1)
    two = run_compat(s, conditions, init_rel=2.0)
    assert_close(two.heatmap, 2 * one.heatmap, "heatmap")


@pytest.mark.parametrize("model", ["fashion", "resnet18"])
def test_exclude_parallel_matters_where_a_skip_connection_bypasses_the_layer(
    model: str, request: pytest.FixtureRequest
) -> None:
    """The matrix's two exclude_parallel settings really differ on these models (and the results say how)."""
    s: Setup = request.getfixturevalue(model)
    conditions = [{s.mid: _ids(s, s.mid), "y": [s.targets[0]]}]
    sole = run_compat(s, conditions, exclude_parallel=True).heatmap
    around = run_compat(s, conditions, exclude_parallel=False).heatmap
    assert float((sole - around).abs().max()) > 1e-3 * float(around.abs().max())


def test_generate_with_init_rel_rows_per_condition(fashion_pair: Setup) -> None:
    """zennit-crp's generate takes an init_rel tensor of batch_size rows, one per condition of a batch."""
    s = fashion_pair
    conditions = [{s.mid: [c], "y": [s.targets[0]]} for c in (*s.channels[s.mid], 5)]
    init_rel = torch.rand(2, 10, generator=torch.Generator().manual_seed(11))
    kwargs: dict[str, Any] = {"batch_size": 2, "init_rel": init_rel, "exclude_parallel": False, "verbose": False}
    ours = list(CondAttribution(s.model).generate(s.data[:1], conditions, s.composite(), **kwargs))
    data = s.data[:1].clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crp = crp_attribution.CondAttribution(s.model, no_param_grad=False)
        expected = list(crp.generate(data, conditions, s.composite(), **kwargs))
    assert len(ours) == len(expected) == 2
    for mine, theirs in zip(ours, expected, strict=True):
        assert_close(mine.heatmap, theirs.heatmap, "heatmap")

    # one row per sample (glocal's form) is also accepted: each sample starts from its own row
    per_sample = torch.rand(len(s.data), 10, generator=torch.Generator().manual_seed(12))
    kwargs["init_rel"], kwargs["batch_size"] = per_sample, 3
    chunks = list(CondAttribution(s.model).generate(s.data, conditions, s.composite(), **kwargs))
    whole = run_compat(s, conditions, init_rel=per_sample, exclude_parallel=False)
    assert_close(torch.cat([chunk.heatmap for chunk in chunks]), whole.heatmap, "heatmap, one init row per sample")


def test_arguments_in_zennit_crp_style(fashion: Setup) -> None:
    s = fashion
    result = run_compat(s, [{s.mid: _ids(s, s.mid), "y": [0]}], record_layer="conv1", on_device="cpu")
    assert set(result.relevances) == {"conv1", s.mid}
    assert result.activations["conv1"].shape[0] == result.heatmap.shape[0] == len(s.data)
    with pytest.raises(LayerError, match="mask_map has no entry"):
        run_compat(s, [{s.mid: [0], "y": [0]}], mask_map={"conv1": compat.ChannelConcept.mask})
    with pytest.raises(LayerError, match="convv2"):
        run_compat(s, [{"convv2": [0], "y": [0]}])


# -- mask_map ------------------------------------------------------------------------------------------------------


def test_mask_rf_on_a_start_layer_like_zennit_crp_references(fashion_pair: Setup) -> None:
    """zennit-crp's receptive-field heatmaps: ``mask_rf`` with ``{channel: neuron}`` values, paired, start_layer."""
    s = fashion_pair
    channel = s.channels[s.mid][0]
    conditions = [{s.mid: {channel: neuron}} for neuron in (17, 40)]
    for mask_map in (crp_concepts.ChannelConcept.mask_rf, compat.ChannelConcept.mask_rf):
        kwargs: dict[str, Any] = {"mask_map": mask_map, "start_layer": s.mid, "exclude_parallel": False}
        expected = run_crp(s, conditions, record_layer=["conv1"], **kwargs)
        ours = run_compat(s, conditions, record_layer=["conv1"], **kwargs)
        assert_close(ours.heatmap, expected.heatmap, "heatmap")
        for name, relevance in expected.relevances.items():
            assert_close(ours.relevances[name], relevance, f"relevance of {name}")
        assert ((ours.relevances[s.mid] != 0).flatten(1).sum(1) == 1).all()  # one neuron per row


@pytest.mark.parametrize("form", ["crp_default", "dict", "custom"])
def test_mask_map_forms(fashion: Setup, form: str) -> None:
    s = fashion

    def halves(batch_id: int, concept_ids: list[int], layer_name: str | None = None) -> compat.MaskFunction:
        def mask_fct(grad: torch.Tensor) -> torch.Tensor:  # channels, and only the upper half of the map
            mask = torch.zeros_like(grad[batch_id])
            mask[concept_ids, : grad.shape[2] // 2] = 1
            grad[batch_id] = grad[batch_id] * mask
            return grad

        return mask_fct

    mask_map: Any = {
        "crp_default": crp_concepts.ChannelConcept.mask,
        "dict": {s.mid: compat.ChannelConcept.mask, s.low: halves},
        "custom": halves,
    }[form]
    conditions = [{s.mid: [c], s.low: s.channels[s.low], "y": [s.targets[0]]} for c in s.channels[s.mid]]
    kwargs: dict[str, Any] = {"mask_map": mask_map, "exclude_parallel": False, "record_layer": s.record}
    expected = run_crp(s, conditions, **kwargs)
    ours = run_compat(s, conditions, **kwargs)
    assert_close(ours.heatmap, expected.heatmap, "heatmap")
    for name, relevance in expected.relevances.items():
        assert_close(ours.relevances[name], relevance, f"relevance of {name}")


# -- zennit-crp's bugs, not reproduced -------------------------------------------------------------------------------


def test_order_follows_the_conditions_when_their_layers_differ(fashion_pair: Setup) -> None:
    """zennit-crp (exclude_parallel=True) groups conditions by layer set and re-orders the rows; glocal does not."""
    s = fashion_pair
    t = s.targets[0]
    conditions = [{s.mid: s.channels[s.mid][:1], "y": [t]}, {"y": [t]}, {s.mid: s.channels[s.mid][1:], "y": [t]}]
    ours = run_compat(s, conditions, record_layer=["conv1"])
    grid = ours.heatmap.view(len(s.data), len(conditions), *ours.heatmap.shape[1:])
    for m, condition in enumerate(conditions):
        expected = run_crp(s, [condition], record_layer=["conv1"])  # one condition at a time: no re-ordering
        assert_close(grid[:, m], expected.heatmap, f"heatmap of condition {m}")
    mixed_up = run_crp(s, conditions, record_layer=["conv1"]).heatmap  # the bug this test is about
    assert mixed_up.shape != ours.heatmap.shape or not torch.allclose(mixed_up, ours.heatmap)


def test_generate_attributes_every_sample(fashion_pair: Setup) -> None:
    """zennit-crp's generate uses only the first sample; glocal's yields every sample's batches, sample-major."""
    s = fashion_pair
    t = s.targets[0]
    conditions = [{s.mid: [c], "y": [t]} for c in (*s.channels[s.mid], 5)]
    kwargs: dict[str, Any] = {"record_layer": s.record, "exclude_parallel": False}
    generator = CondAttribution(s.model).generate(
        s.data, conditions, s.composite(), batch_size=2, verbose=False, **kwargs
    )
    chunks = list(generator)
    assert [len(chunk.heatmap) for chunk in chunks] == [2, 1, 2, 1]
    whole = run_compat(s, conditions, **kwargs)
    assert_close(torch.cat([chunk.heatmap for chunk in chunks]), whole.heatmap, "generate vs call: heatmap")
    for name in whole.relevances:
        joined = torch.cat([chunk.relevances[name] for chunk in chunks])
        assert_close(joined, whole.relevances[name], f"generate vs call: relevance of {name}")
        assert_close(torch.cat([chunk.activations[name] for chunk in chunks]), whole.activations[name], name)
    assert_close(torch.cat([chunk.prediction for chunk in chunks]), whole.prediction, "prediction")

    crp = crp_attribution.CondAttribution(s.model, no_param_grad=False)
    for sample in range(len(s.data)):
        data = s.data[sample : sample + 1].clone().requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = list(crp.generate(data, conditions, s.composite(), batch_size=2, verbose=False, **kwargs))
        ours = chunks[2 * sample : 2 * sample + 2]
        for theirs, mine in zip(expected, ours, strict=True):
            assert_close(mine.heatmap, theirs.heatmap, f"generate heatmap, sample {sample}")
            for name, relevance in theirs.relevances.items():
                assert_close(mine.relevances[name], relevance, f"generate relevance of {name}, sample {sample}")


def test_generate_accepts_conditions_on_different_layers(fashion_pair: Setup) -> None:
    s = fashion_pair
    t = s.targets[0]
    conditions = [{s.mid: s.channels[s.mid][:1], "y": [t]}, {"y": [t]}, {s.top: s.channels[s.top][:1], "y": [t]}]
    chunks = list(CondAttribution(s.model).generate(s.data, conditions, s.composite(), batch_size=2, verbose=False))
    whole = run_compat(s, conditions)
    assert_close(torch.cat([chunk.heatmap for chunk in chunks]), whole.heatmap, "heatmap")


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def assert_untouched(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    for name, module in model.named_modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(module, hooks, {}), f"{hooks} left on {name or 'the model'}"
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), f"{name} changed (a canonizer was not undone)"
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert all(parameter.grad is None for parameter in model.parameters())


@pytest.mark.parametrize("requires_grad", [False, True])
def test_model_and_data_are_left_alone(fashion: Setup, requires_grad: bool) -> None:
    """no_param_grad=True (the default) must not switch off the model's requires_grad; data.grad stays empty."""
    s = fashion
    before = _parameters(s.model)
    data = s.data.clone().requires_grad_(requires_grad)
    attribution = CondAttribution(s.model, no_param_grad=True, overwrite_data_grad=True)
    result = attribution(data, _single(s)[0], s.composite(), record_layer=s.record)
    assert result.heatmap.abs().sum() > 0
    list(attribution.generate(data, _single(s)[0], s.composite(), batch_size=1, verbose=False))
    assert data.grad is None and data.requires_grad is requires_grad
    assert_untouched(s.model, before)


def test_no_hooks_left_after_an_exception_inside_the_engine(fashion: Setup) -> None:
    s = fashion
    before = _parameters(s.model)
    attribution = CondAttribution(s.model)
    with pytest.raises(ConceptError):  # channel 99 of a 16-channel layer, found after the forward pass
        attribution(s.data, [{s.mid: [99], "y": [0]}], s.composite())
    assert_untouched(s.model, before)

    def failing(batch_id: int, concept_ids: Any, layer_name: str | None = None) -> compat.MaskFunction:
        raise RuntimeError("a user's mask function failed")

    with pytest.raises(RuntimeError, match="mask function failed"):
        attribution(s.data, [{s.mid: [1], "y": [0]}], s.composite(), mask_map=failing)
    assert_untouched(s.model, before)

    conditions = [{s.mid: [1], "y": [0]}, {s.mid: [99], "y": [0]}]
    results = attribution.generate(s.data, conditions, s.composite(), batch_size=1, verbose=False)
    with pytest.raises(ConceptError):
        for _ in results:
            pass
    assert_untouched(s.model, before)

    abandoned = attribution.generate(s.data, _single(s)[0], s.composite(), batch_size=1, verbose=False)
    next(abandoned)
    abandoned.close()
    assert_untouched(s.model, before)


# -- glocal's engine: relevance at a side branch with exclude_parallel=True -----------------------------------------


@pytest.mark.parametrize("api", ["native", "compat"])
def test_side_branch_gets_no_relevance_with_exclude_parallel(fashion: Setup, api: str) -> None:
    """With sole_path, a recorded layer on a branch parallel to the conditioned layer gets no relevance (whatever
    the order of the branches in forward())."""
    s = fashion
    conditions = [{s.mid: s.channels[s.mid][:1], "y": [s.targets[0]]}]
    expected = run_crp(s, conditions, record_layer=["parallel.0"])
    assert float(expected.relevances["parallel.0"].abs().max()) == 0.0
    if api == "compat":
        ours = run_compat(s, conditions, record_layer=["parallel.0"]).relevances["parallel.0"]
    else:
        ours = Attributor(s.model, s.composite())(s.data, conditions, record=["parallel.0"]).relevances["parallel.0"]
    assert_close(ours, expected.relevances["parallel.0"], "relevance of parallel.0")


# -- ChannelConcept and get_layer_names ------------------------------------------------------------------------------


@pytest.fixture
def relevance() -> Iterator[torch.Tensor]:
    yield torch.randn(5, 4, 3, 3, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("abs_norm", [True, False])
def test_channel_concept_attribute(relevance: torch.Tensor, abs_norm: bool) -> None:
    mask = (torch.rand(relevance.shape, generator=torch.Generator().manual_seed(8)) > 0.5).float()
    for m in (None, mask):
        expected = crp_concepts.ChannelConcept().attribute(relevance, mask=m, abs_norm=abs_norm)
        assert_close(compat.ChannelConcept().attribute(relevance, mask=m, abs_norm=abs_norm), expected, "attribute")
    linear = relevance.flatten(1)
    expected = crp_concepts.ChannelConcept().attribute(linear, abs_norm=abs_norm)
    assert_close(compat.ChannelConcept().attribute(linear, abs_norm=abs_norm), expected, "attribute, linear")


@pytest.mark.parametrize("max_target", ["sum", "max"])
def test_channel_concept_reference_sampling(relevance: torch.Tensor, max_target: str) -> None:
    for abs_norm in (True, False):
        expected = crp_concepts.ChannelConcept().reference_sampling(relevance, max_target=max_target, abs_norm=abs_norm)
        ours = compat.ChannelConcept().reference_sampling(relevance, max_target=max_target, abs_norm=abs_norm)
        for mine, theirs in zip(ours, expected, strict=True):
            assert torch.equal(mine, theirs) if not mine.is_floating_point() else torch.allclose(mine, theirs)
    with pytest.raises(ValueError, match="max_target"):
        compat.ChannelConcept().reference_sampling(relevance, max_target="mean")


def test_channel_concept_masks_and_rf_indices(relevance: torch.Tensor) -> None:
    for batch_id, ids in ((0, [1, 3]), (2, []), (4, 2)):
        expected = crp_concepts.ChannelConcept.mask(batch_id, ids)(relevance.clone())
        assert torch.equal(compat.ChannelConcept.mask(batch_id, ids)(relevance.clone()), expected)
    c_n_map = {1: [0, 4], 3: 8}
    expected = crp_concepts.ChannelConcept.mask_rf(3, c_n_map)(relevance.clone())
    assert torch.equal(compat.ChannelConcept.mask_rf(3, c_n_map)(relevance.clone()), expected)
    for shape in ((4, 3, 3), (7,)):
        expected_indices = crp_concepts.ChannelConcept().get_rf_indices(shape)
        assert list(compat.ChannelConcept().get_rf_indices(shape)) == list(expected_indices)
    untouched = relevance.clone()
    compat.ChannelConcept.mask(0, [1])(untouched)
    assert torch.equal(untouched, relevance)  # unlike zennit-crp's, the mask does not change its argument


def test_get_layer_names_matches(fashion: Setup, resnet18: Setup) -> None:
    for setup in (fashion, resnet18):
        for types in ([torch.nn.Conv2d], [torch.nn.Conv2d, torch.nn.Linear], [torch.nn.BatchNorm2d]):
            assert compat.get_layer_names(setup.model, types) == crp_helper.get_layer_names(setup.model, types)


def test_glocal_channel_concept_is_used_for_the_default_mask(fashion: Setup) -> None:
    """The default mask_map runs on glocal's vectorised ChannelConcept, not on the adapter."""
    translator = Translator(compat.ChannelConcept.mask, "y")
    translator.condition({"conv2": [1], "y": [0]})
    assert isinstance(translator.concepts["conv2"], ChannelConcept)
    translator = Translator(crp_concepts.ChannelConcept.mask, "y")
    translator.condition({"conv2": [1]})
    assert isinstance(translator.concepts["conv2"], ChannelConcept)
