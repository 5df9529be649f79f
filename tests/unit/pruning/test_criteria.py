"""Every channel criterion against a slow, obvious implementation on a tiny model (one sample at a time), and the
model left as it was."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from zennit.composites import EpsilonPlusFlat

from glocal.errors import InputError, LayerError
from glocal.pruning import CRITERIA, channel_scores

crp_attribution = pytest.importorskip("crp.attribution")

LAYERS = ["0", "2", "5"]


def tiny_net() -> torch.nn.Sequential:
    """Conv (3 channels) -> ReLU (in place) -> conv (4) -> ReLU -> flatten -> linear (5 features) -> ReLU -> 3."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3),
        torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 5),
        torch.nn.ReLU(),
        torch.nn.Linear(5, 3),
    ).eval()


@pytest.fixture
def net() -> torch.nn.Sequential:
    return tiny_net()


@pytest.fixture
def data() -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(9, 1, 8, 8, generator=generator)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    return torch.utils.data.TensorDataset(images, labels)


def outputs(model: torch.nn.Module, x: torch.Tensor, layers: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model output and the layers' outputs (copied before any in-place op), with gradients."""
    kept: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def keep(name: str, out: torch.Tensor) -> torch.Tensor:
        kept[name] = out
        return out.clone()

    handles = [modules[n].register_forward_hook(lambda _m, _i, o, n=n: keep(n, o)) for n in layers]
    try:
        y = model(x.requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    return y, kept


def slow_plain(model, data, layers, criterion, classes=None, signed=False):
    """One sample at a time: activation by hand, gradient and Taylor by torch.autograd.grad."""
    totals = {n: 0.0 for n in layers}
    for x, label in data:
        if classes is not None and int(label) not in classes:
            continue
        y, kept = outputs(model, x[None].clone(), layers)
        for n in layers:
            a = kept[n][0]
            if criterion == "activation":
                value = a.abs().reshape(a.shape[0], -1).mean(1)
            else:
                (g,) = torch.autograd.grad(y[0, int(label)], kept[n], retain_graph=True)
                g = g[0]
                value = (g if criterion == "gradient" else a * g).reshape(a.shape[0], -1).sum(1)
                value = value if signed else value.abs()
            totals[n] = totals[n] + value.detach().double()
    return totals


def slow_relevance(model, data, layers, composite, classes=None, signed=False):
    """zennit-crp's CondAttribution, one sample at a time, relevance at each layer from the label's logit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attribution = crp_attribution.CondAttribution(copy.deepcopy(model))
    totals = {n: 0.0 for n in layers}
    for x, label in data:
        if classes is not None and int(label) not in classes:
            continue
        result = attribution(
            x[None].clone().requires_grad_(True), [{"y": [int(label)]}], composite, record_layer=layers
        )
        for n in layers:
            r = result.relevances[n][0].reshape(result.relevances[n].shape[1], -1).sum(1).double()
            totals[n] = totals[n] + (r if signed else r.abs())
    return totals


def assert_close(scores, expected, rtol=1e-5):
    assert list(scores.scores) == list(expected)
    for name, value in expected.items():
        actual = scores.scores[name]
        assert actual.dtype == torch.float64
        assert float(value.abs().max()) > 0  # not trivially equal
        torch.testing.assert_close(actual, value, rtol=rtol, atol=1e-7 * float(value.abs().max()))


@pytest.mark.parametrize("criterion", ["activation", "gradient", "taylor"])
@pytest.mark.parametrize("signed", [False, True])
def test_plain_criteria_match_one_sample_at_a_time(net, data, criterion, signed):
    scores = channel_scores(
        net, data, LAYERS, criterion=criterion, signed=signed, normalise=False, batch_size=4, progress=False
    )
    assert scores.samples == 9
    assert_close(scores, slow_plain(net, data, LAYERS, criterion, signed=signed))


@pytest.mark.parametrize("signed", [False, True])
def test_relevance_matches_zennit_crp_one_sample_at_a_time(net, data, signed):
    scores = channel_scores(
        net, data, LAYERS, composite=EpsilonPlusFlat(), signed=signed, normalise=False, batch_size=4, progress=False
    )
    assert_close(scores, slow_relevance(net, data, LAYERS, EpsilonPlusFlat(), signed=signed), rtol=1e-4)


def test_classes_count_only_their_samples(net, data):
    scores = channel_scores(
        net, data, LAYERS, criterion="taylor", classes=[2, 0], normalise=False, batch_size=2, progress=False
    )
    assert scores.samples == 6 and scores.classes == (0, 2)
    assert_close(scores, slow_plain(net, data, LAYERS, "taylor", classes={0, 2}))
    relevance = channel_scores(
        net, data, LAYERS, composite=EpsilonPlusFlat(), classes=[1], normalise=False, progress=False
    )
    assert relevance.samples == 3
    assert_close(relevance, slow_relevance(net, data, LAYERS, EpsilonPlusFlat(), classes={1}), rtol=1e-4)


def test_weight_is_the_l1_norm_per_output_channel(net):
    scores = channel_scores(net, torch.zeros(1, 1, 8, 8), ["0", "5"], criterion="weight", normalise=False)
    # conv "0": weight (3, 1, 3, 3), one row of 9 per channel; linear "5": weight (5, 64)
    expected = {
        "0": net[0].weight.detach().abs().sum((1, 2, 3)).double(),
        "5": net[5].weight.detach().abs().sum(1).double(),
    }
    assert_close(scores, expected)
    assert scores.samples == 0
    with pytest.raises(LayerError, match=r"ReLU.*Conv1d/2d/3d or Linear"):
        channel_scores(net, torch.zeros(1, 1, 8, 8), ["1"], criterion="weight")


def test_random_is_seeded_uniform_layer_after_layer(net, data):
    scores = channel_scores(net, data, LAYERS, criterion="random", seed=7, normalise=False, progress=False)
    generator = torch.Generator().manual_seed(7)
    expected = {
        n: torch.rand(c, generator=generator, dtype=torch.float64) for n, c in zip(LAYERS, [3, 4, 5], strict=True)
    }
    for name in LAYERS:
        assert torch.equal(scores.scores[name], expected[name])
    again = channel_scores(net, data, LAYERS, criterion="random", seed=8, normalise=False, progress=False)
    assert not torch.equal(again.scores["0"], scores.scores["0"])


def test_normalise_divides_by_the_l1_sum(net, data):
    raw = channel_scores(net, data, LAYERS, criterion="gradient", signed=True, normalise=False, progress=False)
    normalised = channel_scores(net, data, LAYERS, criterion="gradient", signed=True, progress=False)
    assert normalised.normalised and normalised.signed
    for name in LAYERS:
        torch.testing.assert_close(normalised.scores[name], raw.scores[name] / raw.scores[name].abs().sum())
        assert float(normalised.scores[name].abs().sum()) == pytest.approx(1.0)


def test_targets_prediction_and_explicit(net, data):
    images = data.tensors[0]
    with torch.no_grad():
        predicted = net(images).argmax(1)
    by_prediction = channel_scores(net, images, ["2"], criterion="gradient", normalise=False, progress=False)
    explicit = channel_scores(
        net, data, ["2"], criterion="gradient", targets=predicted.tolist(), normalise=False, progress=False
    )
    assert torch.equal(by_prediction.scores["2"], explicit.scores["2"])
    relabelled = torch.utils.data.TensorDataset(images, predicted)
    assert_close(by_prediction, slow_plain(net, relabelled, ["2"], "gradient"))


def test_model_is_left_as_it_was(net, data):
    net[0].weight.requires_grad_(False)
    net[5].weight.grad = torch.ones_like(net[5].weight)
    net[2].train()
    marker = net[7].register_forward_hook(lambda *args: None)
    state = copy.deepcopy(net.state_dict())
    for criterion in CRITERIA:
        channel_scores(net, data, LAYERS, criterion=criterion, composite=EpsilonPlusFlat(), progress=False)
    assert not net[0].weight.requires_grad and net[2].weight.requires_grad
    assert torch.equal(net[5].weight.grad, torch.ones_like(net[5].weight)) and net[0].weight.grad is None
    assert net[2].training and not net[0].training
    assert list(net[7]._forward_hooks) == [marker.id]
    assert all(not m._forward_hooks and not m._forward_pre_hooks for i, m in enumerate(net) if i != 7)
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())


def test_hooks_are_removed_after_an_error(net):
    data = [(torch.rand(1, 8, 8), 5)]  # label 5 of a 3-class model
    with pytest.raises(IndexError):
        channel_scores(net, data, LAYERS, criterion="gradient", progress=False)
    assert all(not m._forward_hooks for m in net.modules())


def test_bad_arguments_say_what_to_do(net, data):
    with pytest.raises(ValueError, match="criterion must be one of"):
        channel_scores(net, data, LAYERS, criterion="magnitude")
    with pytest.raises(LayerError, match="nope"):
        channel_scores(net, data, ["nope"], progress=False)
    with pytest.raises(InputError, match="labelled data"):
        channel_scores(net, torch.rand(2, 1, 8, 8), LAYERS, targets="label", progress=False)


def test_to_dict_is_json(net, data):
    import json

    scores = channel_scores(net, data, ["0"], criterion="activation", classes=[1], progress=False)
    document = json.loads(json.dumps(scores.to_dict()))
    assert document["criterion"] == "activation" and document["classes"] == [1] and document["samples"] == 3


@pytest.mark.parametrize("criterion", ["relevance", "activation", "taylor"])
def test_one_forward_pass_per_batch_for_all_layers(net, data, criterion):
    calls = []
    handle = net[7].register_forward_hook(lambda *args: calls.append(1))
    try:
        channel_scores(
            net, data, LAYERS, criterion=criterion, composite=EpsilonPlusFlat(), batch_size=4, progress=False
        )
    finally:
        handle.remove()
    assert len(calls) == 3  # 9 samples in batches of 4: three passes, whatever the number of layers and channels
