"""Masks compute what the pruned network computes, and leave the model exactly as it was."""

from __future__ import annotations

import copy

import pytest
import torch

from glocal.errors import InputError, LayerError
from glocal.pruning import ChannelScores, PruningPlan, masked, pruned_copy


def plan(**removed: tuple[tuple[int, ...], int]) -> PruningPlan:
    """A plan from ``layer=(removed channels, channel count)``."""
    return PruningPlan({n: c for n, (_, c) in removed.items()}, {n: r for n, (r, _) in removed.items()}, "test")


def no_hooks(model: torch.nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_masks_equal_zeroed_weights_on_a_plain_conv_net(conv_net, images):
    # conv "0" loses channels 1 and 4 of 6, conv "5" channel 0 of 8, linear "8" features 2, 3 of 10. Without batch
    # norms, zeroing those channels' weights and biases is the same network (the next layers then read zeros).
    p = plan(**{"0": ((1, 4), 6), "5": ((0,), 8), "8": ((2, 3), 10)})
    oracle = copy.deepcopy(conv_net)
    with torch.no_grad():
        for index, channels in ((0, [1, 4]), (5, [0]), (8, [2, 3])):
            oracle[index].weight[channels] = 0
            oracle[index].bias[channels] = 0
        expected = oracle(images)
    with masked(conv_net, p, images[:1]) as model, torch.no_grad():
        assert model is conv_net
        actual = model(images)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(actual, conv_net(images))


@pytest.mark.parametrize("layers", [{"conv1": ((0, 2), 4)}, {"conv2": ((1,), 4), "linear1": ((0, 5, 7), 8)}])
def test_masked_equals_the_physical_copy_on_a_skip_net(skip_net, digits, layers):
    p = plan(**layers)
    small = pruned_copy(skip_net, p, digits[:1])
    with masked(skip_net, p, digits[:1]) as model, torch.no_grad():
        actual = model(digits)
    with torch.no_grad():
        expected = small.model(digits)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert no_hooks(skip_net)


def test_coupled_skip_channels_are_masked_together(skip_net, digits):
    # conv2's output is added to the parallel branch's: removing its channel 1 removes the sum's channel 1, so the
    # parallel conv and both batch norms lose channel 1 too, and linear1 the 36 features (6 x 6) of channel 1
    p = plan(conv2=((1,), 4))
    small = pruned_copy(skip_net, p, digits[:1]).model
    assert small.parallel[0].out_channels == 3 and small.parallel[1].num_features == 3 and small.bn2.num_features == 3
    assert small.linear1.in_features == 3 * 36
    seen = {}
    with masked(skip_net, p, digits[:1]) as model, torch.no_grad():
        hook = skip_net.sum.register_forward_hook(lambda _m, _i, out: seen.update(sum=out))
        model(digits)
        hook.remove()
    assert torch.all(seen["sum"][:, 1] == 0) and torch.all(seen["sum"][:, [0, 2, 3]] != 0)


def test_masks_are_exactly_reversible_also_after_an_error(skip_net, digits):
    state = copy.deepcopy(skip_net.state_dict())
    with torch.no_grad():
        before = skip_net(digits)
    p = plan(conv1=((0, 3), 4), linear1=((1,), 8))
    with pytest.raises(RuntimeError, match="inside"), masked(skip_net, p, digits[:1]):
        raise RuntimeError("inside the block")
    with masked(skip_net, p, digits[:1]) as model:
        model(digits).sum().backward()  # gradients flow through masked channels too
    skip_net.zero_grad(set_to_none=True)
    with torch.no_grad():
        after = skip_net(digits)
    assert torch.equal(before, after)
    assert no_hooks(skip_net)
    assert all(torch.equal(state[k], v) for k, v in skip_net.state_dict().items())


def test_refusals(conv_net, skip_net, images, digits):
    with pytest.raises(LayerError, match="model's output"), masked(conv_net, plan(**{"10": ((0,), 5)}), images[:1]):
        pass
    # conv2 and the parallel conv are coupled: the union of their planned channels would be all four
    with pytest.raises(InputError, match="all 4 output channels"):
        pruned_copy(skip_net, plan(conv2=((0, 1), 4), **{"parallel.0": ((2, 3), 4)}), digits[:1])
    with (
        pytest.raises(LayerError, match=r"ReLU.*cannot be removed"),
        masked(conv_net, plan(**{"1": ((0,), 6)}), images[:1]),
    ):
        pass
    with pytest.raises(LayerError, match="plan has 5 channels"), masked(conv_net, plan(**{"0": ((0,), 5)}), images[:1]):
        pass
    with (
        pytest.raises(InputError, match="failed on the example inputs"),
        masked(conv_net, plan(**{"0": ((0,), 6)}), torch.rand(1, 5, 8, 8)),
    ):
        pass
    assert no_hooks(conv_net) and no_hooks(skip_net)


def test_a_model_torch_pruning_cannot_trace_gets_a_clear_error(conv_net, images, monkeypatch):
    import torch_pruning

    def fail(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(torch_pruning.DependencyGraph, "build_dependency", fail)
    with pytest.raises(InputError, match=r"torch-pruning could not trace the model.*unsupported operation"):
        pruned_copy(conv_net, plan(**{"0": ((0,), 6)}), images[:1])


def test_physical_copy_counts_by_hand_and_leaves_the_model(digits):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    net.train()
    state = copy.deepcopy(net.state_dict())
    x = torch.rand(1, 1, 8, 8)
    result = pruned_copy(net, plan(**{"0": ((1, 2), 4)}), x)
    # parameters: conv 4 * 9 + 4 = 40, linear 144 * 3 + 3 = 435 -> 475; after: 2 * 9 + 2 = 20, 72 * 3 + 3 = 219
    assert (result.parameters_before, result.parameters_after) == (475, 239)
    # MACs as torch-pruning counts them: conv 4 * 36 * 9 + bias 4 * 36, ReLU 4 * 36, linear 144 * 3 + bias 3
    assert result.flops_before == 4 * 36 * 9 + 144 + 144 + 432 + 3
    assert result.flops_after == 2 * 36 * 9 + 72 + 72 + 216 + 3
    assert result.model[0].out_channels == 2 and result.model[3].in_features == 72
    assert result.model.training and net.training  # modes kept on both
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    # the kept channels' weights are the original ones (channels 0 and 3; features 0-35 and 108-143)
    assert torch.equal(result.model[0].weight, net[0].weight[[0, 3]])
    assert torch.equal(result.model[3].weight, torch.cat([net[3].weight[:, :36], net[3].weight[:, 108:]], 1))
    assert result.sparsity == 0.5
    assert result.to_dict()["parameters_after"] == 239 and "model" not in result.to_dict()


def test_plans_from_scores_work_end_to_end(conv_net, images):
    from glocal.pruning import channel_scores, prune_plan

    scores = channel_scores(conv_net, images, ["0", "2", "5", "8"], criterion="weight")
    assert isinstance(scores, ChannelScores)
    p = prune_plan(scores, 0.3, scope="global")
    small = pruned_copy(conv_net, p, images[:1])
    with masked(conv_net, p, images[:1]) as model, torch.no_grad():
        torch.testing.assert_close(model(images), small.model(images), rtol=1e-5, atol=1e-5)
    assert small.parameters_after < small.parameters_before and small.flops_after < small.flops_before
