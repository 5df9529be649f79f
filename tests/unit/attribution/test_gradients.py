"""One run, many backward passes: members batched into one vectorised pass, and relevance reused across calls.

Both are pure speed-ups; every test compares against the plain computation (one backward pass per member, nothing
kept between calls) and checks that the shortcut was really taken.
"""

from __future__ import annotations

import pytest
import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonAlpha2Beta1, EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat, GuidedBackprop

import glocal.attribution.gradients
from glocal import Attributor, Condition
from glocal.attribution.gradients import Gradients


@pytest.fixture(autouse=True)
def quick_passes(monkeypatch):
    """Every member pass counts as quick, so that batching does not depend on how fast this machine is."""
    monkeypatch.setattr(glocal.attribution.gradients, "_BATCH_BELOW_SECONDS", float("inf"))


@pytest.fixture
def plain(monkeypatch):
    """Switch both shortcuts off: one backward pass per member, nothing kept between calls."""

    def switch() -> None:
        monkeypatch.setattr(glocal.attribution.gradients, "_BATCHED_ELEMENTS", 0)
        monkeypatch.setattr(glocal.attribution.gradients, "_KEPT_ELEMENTS", 0)

    return switch


class _Spy:
    """Counts the engine's backward passes: plain ones (``Gradients.grad``) and vectorised ones (members per call)."""

    def __init__(self, monkeypatch) -> None:
        self.plain = 0
        self.batched: list[int] = []
        grad, batched = Gradients.grad, Gradients.batched

        def counting_grad(gradients, source, targets, relevance):
            self.plain += bool(targets)
            return grad(gradients, source, targets, relevance)

        def counting_batched(gradients, source, names, pending):
            if len(pending) > 1 and names and gradients.batch_members:
                self.batched.append(len(pending))
            return batched(gradients, source, names, pending)

        monkeypatch.setattr(Gradients, "grad", counting_grad)
        monkeypatch.setattr(Gradients, "batched", counting_batched)


def _composites():
    return {
        "epsilon-plus-flat": EpsilonPlusFlat(),
        "epsilon-gamma-box": EpsilonGammaBox(low=0.0, high=1.0),
        "alpha2-beta1": EpsilonAlpha2Beta1(),
        "guided backprop (zennit's own hooks)": GuidedBackprop(),
    }


@pytest.mark.parametrize("name", list(_composites()))
def test_batched_members_equal_one_pass_each(conv_net, images, plain, monkeypatch, name):
    conditions = [{"5": [c], "y": [1]} for c in range(6)] + [{"5": [0, 3], "y": [2]}]
    attributor = Attributor(conv_net, _composites()[name])
    spy = _Spy(monkeypatch)
    batched = attributor(images, conditions, record=["2"])
    assert spy.batched == [5], "after the first member's pass (timed: quick), the other five share one pass"
    plain()
    expected = attributor(images, conditions, record=["2"])
    torch.testing.assert_close(batched.heatmap, expected.heatmap, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.relevances["2"], expected.relevances["2"], rtol=1e-5, atol=1e-6)
    assert expected.heatmap.abs().sum() > 0
    assert all(p.grad is None for p in conv_net.parameters())


@pytest.mark.parametrize("sole_path", [True, False])
def test_batched_members_around_a_skip_connection(skip_net, digits, plain, monkeypatch, sole_path):
    """With sole_path=False, relevance bypasses conv2 through the parallel branch; members add it to their part."""
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    conditions = [Condition(targets=(2,), layers={"linear1": (1,), "conv2": (c,)}) for c in range(4)]
    spy = _Spy(monkeypatch)
    batched = attributor(digits, conditions, record=["conv1", "parallel.0"], sole_path=sole_path)
    assert spy.batched == [3]
    plain()
    expected = attributor(digits, conditions, record=["conv1", "parallel.0"], sole_path=sole_path)
    for key in ("conv1", "parallel.0"):
        torch.testing.assert_close(batched.relevances[key], expected.relevances[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(batched.heatmap, expected.heatmap, rtol=1e-5, atol=1e-6)
    bypass = expected.relevances["parallel.0"].abs().sum()
    assert (bypass > 0) == (not sole_path), "the parallel branch gets relevance only when it may bypass conv2"


class _Opaque(torch.autograd.Function):
    """An identity whose backward leaves torch (``.tolist()``): it cannot be vectorised."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.tensor(grad.tolist(), dtype=grad.dtype)


class _OpaqueNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.head = torch.nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        return self.head(self.conv(_Opaque.apply(x)).relu().flatten(1))


def test_slow_member_passes_are_not_batched(conv_net, images, monkeypatch):
    """Where one member's pass takes longer than the threshold, its fixed costs do not matter: one pass each."""
    monkeypatch.setattr(glocal.attribution.gradients, "_BATCH_BELOW_SECONDS", 0.0)
    spy = _Spy(monkeypatch)
    with Attributor(conv_net, EpsilonPlusFlat()).session(images, layers=["5"]) as run:
        run.attribute([{"5": [c], "y": [1]} for c in range(4)])
        assert run._gradients.pass_seconds is not None and run._gradients.pass_seconds > 0
    assert spy.batched == [] and spy.plain == 1 + 4


def test_model_that_cannot_be_vectorised_falls_back_to_one_pass_each(images, plain):
    torch.manual_seed(0)
    model = _OpaqueNet().eval()
    conditions = [{"conv": [c], "y": [0]} for c in range(4)]
    attributor = Attributor(model, EpsilonPlusFlat())
    with attributor.session(images, layers=["conv"]) as run:
        fallen = run.attribute(conditions)
        assert run._gradients.batch_members is False
    plain()
    expected = attributor(images, conditions)
    torch.testing.assert_close(fallen.heatmap, expected.heatmap)


def test_next_level_starts_where_the_previous_ended(skip_net, digits, plain, monkeypatch):
    """An attribution graph's second level: the relevance arriving at conv2 (given linear1) was recorded by the
    first level, so the second needs no backward pass above conv2 and one vectorised pass for its members."""
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    first = Condition(targets=(2,), layers={"linear1": (2,)})
    second = [Condition(targets=(2,), layers={"linear1": (2,), "conv2": (c,)}) for c in range(4)]
    layers = ["linear1", "conv2", "parallel.0", "conv1"]

    def levels():
        with attributor.session(digits, layers=layers, heatmap=False, input_grad=False) as run:
            one = run.attribute(first, record=["conv2", "parallel.0"])
            before = spy.plain, len(spy.batched)
            two = run.attribute(second, record=["conv1"])
            return one, two, (spy.plain - before[0], len(spy.batched) - before[1])

    spy = _Spy(monkeypatch)
    one, two, passes = levels()
    assert passes == (0, 1)
    plain()
    spy = _Spy(monkeypatch)
    one_plain, two_plain, passes_plain = levels()
    assert passes_plain == (1 + len(second), 0)
    torch.testing.assert_close(one.relevances["conv2"], one_plain.relevances["conv2"])
    torch.testing.assert_close(two.relevances["conv1"], two_plain.relevances["conv1"], rtol=1e-5, atol=1e-6)
    # linearity: the members (all channels of conv2) add up to the first level's condition alone
    whole = attributor(digits, first, record=["conv1"], heatmap=False).relevances["conv1"]
    parts = two.relevances["conv1"].view(len(digits), len(second), *whole.shape[1:]).sum(1)
    torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-6)
    assert whole.abs().sum() > 0


def test_kept_relevance_is_capped(skip_net, digits, monkeypatch):
    """Past the cap, member results are no longer kept (the prefix above conv2 is then computed again)."""
    monkeypatch.setattr(glocal.attribution.gradients, "_KEPT_ELEMENTS", 0)
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    spy = _Spy(monkeypatch)
    with attributor.session(digits, layers=["linear1", "conv2", "conv1"], heatmap=False, input_grad=False) as run:
        run.attribute({"linear1": [2], "y": [2]}, record=["conv2"])
        assert run._gradients.kept_elements == 0
        before = spy.plain
        run.attribute([{"linear1": [2], "conv2": [c], "y": [2]} for c in range(3)], record=["conv1"])
        assert spy.plain - before == 1
