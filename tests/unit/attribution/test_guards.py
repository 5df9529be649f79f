"""The user's model and data are left exactly as they were; bad input gets a clear error that changes nothing."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlus, EpsilonPlusFlat
from zennit.torchvision import ResNetCanonizer

from glocal import (
    Attributor,
    CanonizerWarning,
    ConceptError,
    ConceptExplainer,
    ConditionError,
    ConservationWarning,
    GlocalWarning,
    GradientDisabledError,
    InputError,
    LayerError,
    TargetError,
)


def model_state(model: torch.nn.Module) -> dict:
    """Everything glocal could leave behind on a model."""
    return {
        "hooks": [
            (name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for name, m in model.named_modules()
        ],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "forward": [m.__dict__.get("forward") for m in model.modules()],  # canonizers override forward per instance
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [type(m) for m in model.modules()],
    }


def assert_unchanged(before: dict, model: torch.nn.Module) -> None:
    after = model_state(model)
    for key in ("hooks", "requires_grad", "grads", "training", "forward", "modules"):
        assert before[key] == after[key], key
    assert before["state"].keys() == after["state"].keys()
    for name, value in before["state"].items():
        assert torch.equal(value, after["state"][name]), name


def test_model_unchanged_after_normal_use(skip_net, digits):
    frozen = copy.deepcopy(skip_net)
    for p in frozen.parameters():
        p.requires_grad_(False)
    for model in (skip_net, frozen):
        before = model_state(model)
        data = digits.clone()
        result = Attributor(model, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))(
            data, [{"conv2": [1], "y": [0]}], record=["linear1"]
        )
        assert result.heatmap is not None
        assert_unchanged(before, model)
        assert torch.equal(data, digits) and data.grad is None and not data.requires_grad


def test_model_unchanged_after_exception_inside_engine(skip_net, digits):
    before = model_state(skip_net)
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    with pytest.raises(TargetError):  # raised after the forward pass, with every hook attached
        attributor(digits, {"conv2": [1], "y": [7]})
    assert_unchanged(before, skip_net)

    def failing_init(output: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("user code failed")

    with pytest.raises(RuntimeError, match="user code failed"):
        attributor(digits, {"y": [0]}, init_rel=failing_init)
    assert_unchanged(before, skip_net)


def test_model_unchanged_after_abandoned_generator(skip_net, digits):
    before = model_state(skip_net)
    attributor = Attributor(skip_net, EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]))
    chunks = attributor.iterate(digits, [{"conv2": [c], "y": [0]} for c in range(4)], chunk_size=1)
    next(chunks)
    chunks.close()  # what happens when a loop breaks early or the generator is garbage collected
    del chunks
    assert_unchanged(before, skip_net)


def test_resnet_canonizer_restored():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=4).eval()
    before = model_state(model)
    Attributor(model, EpsilonPlus(canonizers=[ResNetCanonizer()]))(
        torch.rand(1, 3, 32, 32), {"layer2.0.conv1": [3], "y": [1]}
    )
    assert_unchanged(before, model)


def test_training_mode_warns_and_is_restored(skip_net, digits):
    skip_net.train()
    before = model_state(skip_net)
    with pytest.warns(GlocalWarning, match=r"training mode.*model.eval\(\)"):
        training = Attributor(skip_net, EpsilonPlus())(digits, {"y": [0]})
    assert_unchanged(before, skip_net)  # running statistics not updated, training flags back
    evaluated = Attributor(skip_net.eval(), EpsilonPlus())(digits, {"y": [0]})
    torch.testing.assert_close(training.heatmap, evaluated.heatmap)


def test_warnings_point_at_the_users_line(skip_net, digits):
    """However deep inside glocal a warning arises, it names the caller's file and line, not glocal's."""
    skip_net.train()
    attributor = Attributor(skip_net, EpsilonPlus())
    with pytest.warns(GlocalWarning, match="training mode") as caught, attributor.session(digits, layers=["conv2"]):
        pass  # raised in the session's set-up, through contextlib
    assert skip_net.training
    skip_net.eval()
    with pytest.warns(GlocalWarning, match="have no effect") as more:
        attributor(digits, {"y": [0], "conv1": [1]}, start_layer="conv2")
    session = attributor.session(digits, layers=["conv1"], start_layer="conv2")
    with session as run, pytest.warns(GlocalWarning, match="have no effect") as inside:
        run.attribute({"y": [0], "conv1": [1]})
    for record in [*caught, *more, *inside]:
        assert record.filename == __file__, record.filename


def test_no_warning_in_eval_mode(skip_net, digits):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # skip_net's random batch norms are unmerged and absorb relevance: those warnings are right (test_conservation)
        warnings.simplefilter("ignore", CanonizerWarning)
        warnings.simplefilter("ignore", ConservationWarning)
        Attributor(skip_net, EpsilonPlus())(digits, {"y": [0]})


# -- bad input ------------------------------------------------------------------------------------------------------


def test_unknown_layer_suggests_close_names(skip_net, digits):
    before = model_state(skip_net)
    with pytest.raises(LayerError, match=r"no layer named 'conv_2'.*Did you mean 'conv2'"):
        Attributor(skip_net, EpsilonPlus())(digits, {"conv_2": [0], "y": [0]})
    with pytest.raises(LayerError, match=r"'linear'.*Did you mean"):
        Attributor(skip_net, EpsilonPlus())(digits, {"y": [0]}, record=["linear"])
    assert_unchanged(before, skip_net)


def test_concept_id_out_of_range(skip_net, digits):
    before = model_state(skip_net)
    with pytest.raises(ConceptError, match=r"concept id 9 is out of range: this layer has 4 channels \(ids 0 to 3\)"):
        Attributor(skip_net, EpsilonPlus())(digits, {"conv2": [9], "y": [0]})
    assert_unchanged(before, skip_net)


def test_target_out_of_range(skip_net, digits):
    with pytest.raises(TargetError, match=r"target 3 is out of range: the model has 3 outputs \(0 to 2\)"):
        Attributor(skip_net, EpsilonPlus())(digits, {"y": [3]})
    with pytest.raises(TargetError, match="out of range"):
        ConceptExplainer(skip_net, EpsilonPlus())(digits, "conv2", target=5)
    with pytest.raises(TargetError, match="got 2 targets for 3 samples"):
        ConceptExplainer(skip_net, EpsilonPlus())(digits, "conv2", target=[0, 1])


def test_wrong_input_shape_and_dtype(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus())
    with pytest.raises(InputError, match=r"floating point.*data.float\(\) / 255"):
        attributor((digits * 255).to(torch.uint8), {"y": [0]})
    with pytest.raises(InputError, match=r"batch shaped \(N, \.\.\.\)"):
        attributor(torch.rand(16), {"y": [0]})
    with pytest.raises(InputError, match=r"the model failed on input of shape \(3, 3, 16, 16\)"):
        attributor(torch.rand(3, 3, 16, 16), {"y": [0]})
    with pytest.raises(InputError, match=r"torch\.Tensor"):
        attributor(digits.numpy(), {"y": [0]})  # type: ignore[arg-type]
    before = model_state(skip_net)
    with pytest.raises(InputError):
        attributor(torch.rand(3, 3, 16, 16), {"y": [0]})
    assert_unchanged(before, skip_net)


def test_no_grad_is_refused_with_the_fix(skip_net, digits):
    with torch.no_grad(), pytest.raises(GradientDisabledError, match=r"torch.no_grad\(\).*torch.enable_grad\(\)"):
        Attributor(skip_net, EpsilonPlus())(digits, {"y": [0]})
    with torch.inference_mode(), pytest.raises(GradientDisabledError, match="inference_mode"):
        Attributor(skip_net, EpsilonPlus())(digits, {"y": [0]})


def test_sole_path_through_parallel_layers_cannot_be_met(skip_net, digits):
    before = model_state(skip_net)
    with pytest.raises(ConditionError, match=r"not on one path.*sole_path=False"):
        Attributor(skip_net, EpsilonPlus())(digits, {"conv2": [0], "parallel.0": [1], "y": [0]})
    assert_unchanged(before, skip_net)
    # the same condition is fine when relevance may flow around the layers
    result = Attributor(skip_net, EpsilonPlus())(digits, {"conv2": [0], "parallel.0": [1], "y": [0]}, sole_path=False)
    assert result.heatmap is not None


def test_missing_targets(skip_net, digits):
    with pytest.raises(ConditionError, match="has no targets"):
        Attributor(skip_net, EpsilonPlus())(digits, {"conv2": [0]})


def test_reused_module_cannot_be_conditioned(digits):
    relu = torch.nn.ReLU()
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), relu, torch.nn.Conv2d(2, 2, 3), relu, torch.nn.Flatten(), torch.nn.Linear(288, 2)
    )
    with pytest.raises(LayerError, match="runs 2 times in one forward pass"):
        Attributor(model.eval(), EpsilonPlusFlat())(digits, {"1": [0], "y": [0]})


class _WithUnusedLayer(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(392, 2))
        self.unused = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_layer_that_does_not_run(digits):
    with pytest.raises(ConditionError, match="did not run in the forward pass"):
        Attributor(_WithUnusedLayer().eval(), EpsilonPlusFlat())(digits, {"unused": [0], "y": [0]})
