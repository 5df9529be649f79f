"""CanonizerWarning and ConservationWarning: they fire exactly when relevance is not conserved, once, and can be
silenced; a dtype other than the model's is named as a dtype problem."""

from __future__ import annotations

import warnings

import pytest
import torch
from residual_net import residual
from zennit.composites import EpsilonPlus

from glocal import (
    Attributor,
    CanonizerWarning,
    ChannelConcept,
    Condition,
    ConservationWarning,
    GlocalWarning,
    InputError,
    PerSample,
)
from glocal.lrp.conservation import TOLERANCE, KeptRelevance
from real_models import mnist_cnn, mnist_digits


@pytest.fixture
def data() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(4, 1, 8, 8)


def caught(call) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        call()
    return [r for r in records if issubclass(r.category, GlocalWarning)]


def of(records: list[warnings.WarningMessage], category: type[Warning]) -> list[str]:
    return [str(r.message) for r in records if r.category is category]


# -- the kept fraction, by hand --------------------------------------------------------------------------------------


def test_kept_fraction_weights_rows_by_their_starting_relevance():
    kept = KeptRelevance()
    # rows start from 2, -1 and 0 and keep 1, -0.5 and 5: (1 * 1 + (-0.5) * (-1) + 5 * 0) / (2 + 1 + 0) = 0.5
    kept.add(torch.tensor([[2.0], [-1.0], [0.0]]), torch.tensor([[0.5, 0.5], [-0.25, -0.25], [5.0, 0.0]]))
    assert kept.fraction() == pytest.approx(0.5)
    assert kept.message() is None  # |0.5 - 1| is not more than the tolerance
    kept.add(torch.tensor([[1.0]]), torch.tensor([[0.0, 0.0]]))  # a row that keeps nothing: 1.5 / 4
    assert kept.fraction() == pytest.approx(0.375)
    message = kept.message()
    assert message is not None and "keep 0.375 of the relevance" in message and "4 rows" in message
    assert "absorbed" in message and "category=glocal.ConservationWarning" in message
    assert KeptRelevance().fraction() is None
    nothing = KeptRelevance()
    nothing.add(torch.zeros(2, 3), torch.ones(2, 3))
    assert nothing.fraction() is None and nothing.message() is None
    assert TOLERANCE == 0.5
    one = KeptRelevance()
    one.add(torch.tensor([[1.0]]), torch.tensor([[0.0, 0.1]]))
    assert "(1 row; summed" in (one.message() or "")  # singular for a single row


# -- the warnings on models ------------------------------------------------------------------------------------------


def test_uncovered_residual_add_warns_once_with_numbers(data):
    model = residual()
    attributor = Attributor(model, "auto")
    first = caught(lambda: attributor(data, {"y": [0]}))
    (structure,) = of(first, CanonizerWarning)
    assert "1 addition(s) of two computed tensors" in structure and "category=glocal.CanonizerWarning" in structure
    (conservation,) = of(first, ConservationWarning)
    kept = float(conservation.split("keep ")[1].split(" ")[0])
    assert 1.9 < kept <= 2.0  # the add hands the whole relevance to both summands: twice the output, less dead units
    assert "created on the way down" in conservation and "zennit.layer.Sum" in conservation
    assert caught(lambda: attributor(data, {"y": [1]})) == []  # once per attributor


def test_the_same_model_with_a_sum_module_conserves_and_stays_silent(data):
    model = residual(summed=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GlocalWarning)
        result = Attributor(model, "auto")(data, {"y": [0]})
    with torch.no_grad():
        logits = model(data)[:, 0]
    assert result.heatmap is not None
    torch.testing.assert_close(result.heatmap.flatten(1).sum(1), logits, rtol=1e-4, atol=0)


def test_conditioned_rows_compare_to_their_own_start(data):
    """Below conv1 (inside the residual branch) nothing is doubled: rows conditioned on it conserve their start."""
    model = residual()
    attributor = Attributor(model, "auto")
    conditions = [Condition(targets=0, layers={"conv1": [c]}) for c in range(4)]
    records = caught(lambda: attributor(data, conditions, record=["conv1"]))
    assert of(records, ConservationWarning) == []
    assert len(of(records, CanonizerWarning)) == 1
    assert of(caught(lambda: attributor(data, {"y": [0]})), ConservationWarning)  # the plain rows are doubled


def test_filters_silence_each_category(data):
    attributor = Attributor(residual(), "auto")
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=ConservationWarning)
        warnings.filterwarnings("ignore", category=CanonizerWarning)
        attributor(data, {"y": [0]})
    assert [r for r in records if issubclass(r.category, GlocalWarning)] == []


def test_no_check_without_heatmaps_or_without_rules(data):
    model = residual()
    records = caught(lambda: Attributor(model, "auto")(data, {"y": [0]}, record=["conv1"], heatmap=False))
    assert of(records, ConservationWarning) == [] and len(of(records, CanonizerWarning)) == 1
    assert caught(lambda: Attributor(model, None)(data, {"y": [0]})) == []  # plain gradients: nothing to conserve


def test_real_mnist_cnn_with_auto_is_silent_for_plain_conditioned_and_parallel_rows():
    model = mnist_cnn()
    digits, labels = mnist_digits(16)
    targets = PerSample([[int(label)] for label in labels])
    conditions = [Condition(targets=targets)] + [
        Condition(targets=targets, layers={"conv_layers.3": [c]}) for c in range(0, 64, 8)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", GlocalWarning)
        attributor = Attributor(model, "auto")
        result = attributor(digits, conditions, record=["conv_layers.3"])
        attributor(digits, conditions[1:3], sole_path=False)
        attributor(digits, {"conv_layers.6": [5]}, start_layer="conv_layers.6")
    # each conditioned heatmap keeps 0.96 to 1.00 of the relevance its concept started from (2048 rows measured)
    assert result.heatmap is not None
    heatmaps = result.grid(result.heatmap).flatten(2).sum(2)[:, 1:]  # (N, 8)
    start = ChannelConcept().relevance(result.grid(result.relevances["conv_layers.3"])[:, 0])[:, 0:64:8]
    live = start.abs() > 1e-3 * start.abs().max()  # channel 16 is dead on these digits: 0 / 0
    assert live.sum() >= 100  # of 128
    ratio = heatmaps[live] / start[live]
    assert ratio.min() > 0.95 and ratio.max() < 1.005


def test_fashion_cnn_warns_for_an_image_whose_heatmap_departs_and_not_for_a_batch():
    """Image 45 of the validation set (an uncertain prediction, logit 0.42) has a heatmap summing to -0.81 times its
    logit under auto's bias-free rules (-6.3 under z+ with the merged biases: they outweighed it); a batch of 16
    keeps about all of its relevance."""
    from parity.parity_models import fashion_images, fashion_model

    model = fashion_model()
    images = fashion_images(48)
    records = caught(lambda: Attributor(model, "auto")(images[45:46], {"y": [int(model(images[45:46]).argmax())]}))
    (message,) = of(records, ConservationWarning)
    assert "keep -0.8" in message and "reversed" in message
    assert "detected the architecture 'cnn_bn'" in message and "Try composite='auto'" not in message
    assert of(records, CanonizerWarning) == []  # auto merged all three batch norms
    predictions = model(images[:16]).argmax(1)
    quiet = caught(lambda: Attributor(model, "auto")(images[:16], {"y": PerSample([[int(p)] for p in predictions])}))
    assert quiet == []
    (unmerged,) = of(caught(lambda: Attributor(model, EpsilonPlus())(images[:2], {"y": [0]})), CanonizerWarning)
    assert "3 batch norm(s) that no canonizer merges ('parallel.1', 'bn1', 'bn2')" in unmerged


def test_a_dtype_other_than_the_models_is_named(data):
    model = residual()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    with pytest.raises(InputError, match=r"dtype torch\.float64, but its parameters are torch\.float32"):
        Attributor(model, "auto")(data.double(), {"y": [0]})
    with pytest.raises(InputError, match=r"data\.to\(torch\.float32\)"):
        Attributor(model, EpsilonPlus())(data.half(), {"y": [0]})
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    result = Attributor(model.double(), "auto")(data.double(), {"y": [0]})  # same dtype: fine
    assert result.heatmap is not None and result.heatmap.dtype == torch.float64

    class Converting(torch.nn.Module):  # a model that converts its input itself takes any dtype
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(64, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.flatten(1).float())

    result = Attributor(Converting(), "auto")(data.double(), {"y": [0]})
    assert result.heatmap is not None and result.heatmap.dtype == torch.float64
