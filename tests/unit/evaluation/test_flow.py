"""The flow recorder measures without changing anything: same heatmaps with and without it, no hooks left."""

from __future__ import annotations

import pytest
import torch
from zennit.composites import EpsilonPlus

from glocal import Attributor, Condition, InputError
from glocal.evaluation.flow import IN, OUT, FlowRecorder


def recorded(model: torch.nn.Module, composite, data: torch.Tensor, target: int):
    attributor = Attributor(model, composite)
    with attributor.attached([]) as start, FlowRecorder(model) as recorder:
        run = recorder.forward(lambda: start(data), lambda r: r.output, lambda r: r.input)
        with recorder.recording(data.shape[0]):
            result = run.attribute(Condition(targets=target))
        return result, dict(recorder.sums), list(zip(recorder.operations, recorder.op_sums, strict=True))


def hook_counts(model: torch.nn.Module) -> list[tuple[int, int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()]


@pytest.mark.filterwarnings("ignore::glocal.GlocalWarning")
@pytest.mark.parametrize("which", ["skip_net", "conv_net"])
def test_heatmaps_are_the_same_with_and_without_the_recorder(which, request):
    model = request.getfixturevalue(which)  # conv_net has in-place ReLUs, skip_net a Sum module and batch norms
    data = torch.rand(3, 1, 16, 16) if which == "skip_net" else torch.rand(3, 3, 8, 8)
    for composite in ("auto", EpsilonPlus()):
        plain = Attributor(model, composite)(data, Condition(targets=1))
        result, sums, _ = recorded(model, composite, data, 1)
        assert torch.equal(result.heatmap, plain.heatmap)
        assert sums  # and it did record
    assert hook_counts(model) == [(0, 0, 0)] * len(list(model.modules()))


def test_a_sequential_models_taps_chain_up():
    # In a Sequential the relevance module i sends to its input is exactly what arrives at module i - 1's output.
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 5),
        torch.nn.ReLU(inplace=True),
        torch.nn.Linear(5, 3),
        torch.nn.Tanh(),
        torch.nn.Linear(3, 2),
    ).eval()
    data = torch.rand(4, 4)
    result, sums, operations = recorded(model, EpsilonPlus(), data, 0)
    for i in range(1, len(model)):
        assert torch.allclose(sums[str(i), IN], sums[str(i - 1), OUT])
    assert torch.allclose(sums["0", IN], result.input_relevance.double().sum(1))
    assert torch.allclose(sums["4", OUT], model(data)[:, 0].detach().double())
    assert operations == []  # nothing is written in a Sequential's forward


def test_an_operation_between_modules_is_recorded_with_its_neighbours():
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(2, 2, bias=False)
            self.b = torch.nn.Linear(2, 2, bias=False)
            self.c = torch.nn.Linear(2, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(self.a(x) + self.b(x))

    torch.manual_seed(0)
    net = Net().eval()
    _, sums, operations = recorded(net, EpsilonPlus(), torch.rand(2, 2), 0)
    ((operation, (arriving, sent)),) = operations
    assert (operation.module, operation.function, operation.node) == ("", "add", "AddBackward0")
    assert set(operation.producers) == {"a", "b"} and operation.operands == 2
    assert torch.allclose(arriving, sums["c", IN])
    assert torch.allclose(sent, 2 * arriving)  # both summands get all of it


def test_hooks_are_removed_after_an_exception(skip_net):
    attributor = Attributor(skip_net, "auto")
    with pytest.raises(InputError), attributor.attached([]) as start, FlowRecorder(skip_net) as recorder:
        recorder.forward(lambda: start(torch.rand(2, 3, 16, 16)), lambda r: r.output, lambda r: r.input)
    assert hook_counts(skip_net) == [(0, 0, 0)] * len(list(skip_net.modules()))
    assert torch.overrides._get_current_function_mode() is None


def test_a_rule_that_glocal_leaves_to_zennits_own_hooks_is_measured_too():
    # ReLUGuidedBackprop is not a BasicHook: glocal registers zennit's own hook for it, which wraps the module's input
    # and output in autograd nodes of its own. The taps sit outside them and see what the rule sends.
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon, ReLUGuidedBackprop

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2)).eval()
    composite = LayerMapComposite([(torch.nn.ReLU, ReLUGuidedBackprop()), (torch.nn.Linear, Epsilon())])
    data = torch.randn(5, 4)
    plain = Attributor(model, composite)(data, Condition(targets=0))
    result, sums, _ = recorded(model, composite, data, 0)
    assert torch.equal(result.input_relevance, plain.input_relevance)
    assert torch.allclose(sums["1", IN], sums["0", OUT]) and torch.allclose(sums["2", IN], sums["1", OUT])
    assert torch.allclose(sums["0", IN], result.input_relevance.double().sum(1))
