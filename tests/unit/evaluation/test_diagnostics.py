"""glocal.diagnose on tiny models whose relevance flow is worked out by hand (the working is in the comments)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from zennit.attribution import Gradient
from zennit.composites import EpsilonPlus, LayerMapComposite
from zennit.rules import Epsilon
from zennit.types import Convolution

from glocal import Attributor, Condition, GlocalWarning, InputError, PerSample
from glocal.evaluation.diagnostics import diagnose
from glocal.lrp.composites import auto

EXACT = [(torch.nn.Linear, Epsilon(epsilon=1e-9)), (Convolution, Epsilon(epsilon=1e-9))]


def epsilon_only() -> LayerMapComposite:
    """The epsilon rule (tiny epsilon) on dense and conv layers, nothing on anything else."""
    return LayerMapComposite(list(EXACT))


def linear(weight: list[list[float]], bias: list[float] | None = None) -> torch.nn.Linear:
    layer = torch.nn.Linear(len(weight[0]), len(weight), bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


class AddNet(torch.nn.Module):
    """``l3(h + l2(h))`` with ``h = l1(x)``: a residual add written in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.l1 = linear([[1.0, 0.5], [0.5, 1.0]])
        self.l2 = linear([[1.0, 1.0], [0.0, 2.0]])
        self.l3 = linear([[1.0, 3.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.l1(x)
        return self.l3(h + self.l2(h))


def test_a_residual_add_creates_relevance_and_is_named():
    # All weights and inputs positive, no biases, epsilon 1e-9: every layer conserves. The logit y arrives at the sum
    # h + l2(h); autograd hands y to both summands: h gets y directly and y again through l2, so 2y arrives at l1's
    # output and the heatmap sums to 2y. The add sends 2y for the y that arrives: change +1, in/out 2.
    diagnosis = diagnose(AddNet(), epsilon_only(), torch.rand(5, 2) + 0.5, progress=False)
    assert diagnosis.kept == pytest.approx(2.0, rel=1e-6)
    assert diagnosis.kept_per_sample == pytest.approx([2.0] * 5, rel=1e-6)
    rows = {row.name: row for row in diagnosis.flow}
    assert rows["l1"].relevance_out == pytest.approx(2.0, rel=1e-6)
    assert rows["l2"].relevance_out == pytest.approx(1.0, rel=1e-6)
    assert rows["l3"].relevance_in == pytest.approx(1.0, rel=1e-6)
    (finding,) = [f for f in diagnosis.findings if f.kind != "completeness"]
    assert (finding.location, finding.kind) == ("(model): add", "addition")
    assert finding.change == pytest.approx(1.0, rel=1e-6)
    assert finding.ratio == pytest.approx(2.0, rel=1e-6)
    assert "zennit.layer.Sum" in (finding.fix or "")
    assert not diagnosis.conservative
    assert any("addition" in message for message in diagnosis.warnings)  # the engine's CanonizerWarning, recorded


def clipping_net(functional: bool = False) -> torch.nn.Module:
    class Clip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l0 = linear([[10.0], [1.0]])
            self.act = torch.nn.ReLU6()
            self.l2 = linear([[1.0, 1.0]])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.l0(x)
            return self.l2(F.relu6(h) if functional else self.act(h))

    return Clip().eval()


@pytest.mark.parametrize("functional", [False, True])
def test_a_saturating_relu6_without_rule_loses_relevance_where_it_clips(functional):
    # x = 1: h = (10, 1), relu6(h) = (6, 1), y = 7. The epsilon rule of l2 gives (6, 1) to relu6's output. ReLU6's
    # gradient is 0 at 10 (saturated) and 1 at 1, so (0, 1) reaches h: 6 of 7 lost, in/out 1/7; l0 hands on 1.
    diagnosis = diagnose(clipping_net(functional), epsilon_only(), torch.ones(1, 1), progress=False)
    assert diagnosis.kept == pytest.approx(1 / 7, rel=1e-6)
    (finding,) = diagnosis.findings
    assert finding.kind == "clipping"
    assert finding.location == ("(model): relu6" if functional else "act")
    assert finding.change == pytest.approx(-6 / 7, rel=1e-6)
    assert finding.ratio == pytest.approx(1 / 7, rel=1e-6)


def test_relu6_under_a_composite_with_the_pass_rule_conserves():
    # composite="auto" (no convolution: epsilon on dense layers, Pass on activations): relevance (6, 1) passes the
    # ReLU6 unchanged, and l0 (one input) hands all 7 to x.
    diagnosis = diagnose(clipping_net(), "auto", torch.ones(1, 1), progress=False)
    assert diagnosis.kept == pytest.approx(1.0, rel=1e-5)
    assert diagnosis.findings == ()
    assert diagnosis.conservative


def bias_conv() -> torch.nn.Sequential:
    conv = torch.nn.Conv2d(1, 1, 2)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(2.0)
    return torch.nn.Sequential(conv, torch.nn.Flatten()).eval()


def test_a_bias_under_the_epsilon_rule_absorbs_its_share():
    # A 2x2 conv of ones with bias 2 on a 2x2 image of ones: z = 4 + 2 = 6, the pixels get 4/6 of 6 = 4; on an image
    # of twos: z = 8 + 2 = 10, the pixels get 8. Kept per sample 4/6 and 8/10; over both (4 + 8) / (6 + 10) = 0.75,
    # so the conv loses 0.25 of the logits, a quarter of what arrives at it.
    images = torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])
    diagnosis = diagnose(bias_conv(), epsilon_only(), images, progress=False)
    assert diagnosis.kept_per_sample == pytest.approx([4 / 6, 8 / 10], rel=1e-6)
    assert diagnosis.kept == pytest.approx(0.75, rel=1e-6)
    absorbed = [f for f in diagnosis.findings if f.kind == "absorption"]
    assert [f.location for f in absorbed] == ["0"]
    assert absorbed[0].change == pytest.approx(-0.25, rel=1e-6)
    assert absorbed[0].ratio == pytest.approx(0.75, rel=1e-6)
    assert "bias" in absorbed[0].detail and "glocal.lrp.bias_rules" in (absorbed[0].fix or "")


def test_a_constant_factor_in_forward_is_an_operation_finding():
    # y = 0.5 * l(x): the backward pass multiplies the relevance by 0.5 on its way through the multiplication.
    class Half(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = linear([[1.0, 2.0]])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.l(x) * 0.5

    diagnosis = diagnose(Half(), epsilon_only(), torch.ones(2, 2), progress=False)
    assert diagnosis.kept == pytest.approx(0.5, rel=1e-6)
    (finding,) = diagnosis.findings
    assert (finding.location, finding.kind) == ("(model): mul", "operation")
    assert finding.change == pytest.approx(-0.5, rel=1e-6)


def clean_net() -> torch.nn.Sequential:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.ReLU(), torch.nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        for module in (net[0], net[2]):
            module.weight.abs_()
    return net.eval()


def test_a_clean_net_has_no_findings():
    diagnosis = diagnose(clean_net(), epsilon_only(), torch.rand(6, 3) + 0.1, progress=False)
    assert diagnosis.kept == pytest.approx(1.0, rel=1e-6)
    assert diagnosis.findings == ()
    assert diagnosis.conservative
    assert [row.name for row in diagnosis.flow] == ["0", "1", "2"]
    assert all(row.ratio == pytest.approx(1.0, rel=1e-6) for row in diagnosis.flow)


def test_an_unmerged_batch_norm_is_named_and_auto_merges_it():
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8, 2)
    ).eval()
    with torch.no_grad():
        net[1].running_mean.fill_(0.1)
    images = torch.rand(3, 1, 4, 4)
    plain = diagnose(net, EpsilonPlus(), images, completeness=False, progress=False)
    assert [(f.location, f.kind) for f in plain.findings if f.kind == "batch_norm"] == [("1", "batch_norm")]
    merged = diagnose(net, "auto", images, completeness=False, progress=False)
    assert not [f for f in merged.findings if f.kind == "batch_norm"]


def sequential_net() -> torch.nn.Sequential:
    torch.manual_seed(3)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 5, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(5 * 4 * 4, 3),
    ).eval()


def test_the_flow_equals_zennits_gradient_with_tensor_hooks(images):
    # The slow, obvious way: zennit's own Gradient attributor with a tensor hook on each module's output. In a
    # sequential model the relevance module i sends down is what arrives at module i - 1 (the heatmap for i = 0).
    model, composite = sequential_net(), EpsilonPlus()
    images = torch.rand(3, 3, 8, 8)
    arriving: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(module, args, output):
            output.register_hook(lambda grad: arriving.__setitem__(index, grad.flatten(1).sum(1).double()))

        return hook

    with torch.no_grad():
        output = model(images)
    targets = output.argmax(1)
    logits = output[torch.arange(3), targets].double()
    with Gradient(model, composite) as attributor:
        handles = [module.register_forward_hook(keep(i)) for i, module in enumerate(model)]
        try:  # the relevance starts from each sample's logit, as in glocal
            _, heatmap = attributor(images, torch.eye(3)[targets] * logits[:, None].float())
        finally:
            for handle in handles:
                handle.remove()
    weight = logits.abs().sum()

    def fraction(values: torch.Tensor) -> float:
        return float((logits.sign() * values).sum() / weight)

    sent = [heatmap.flatten(1).sum(1).double(), *(arriving[i] for i in range(len(model) - 1))]
    diagnosis = diagnose(model, composite, images, targets="prediction", completeness=False, progress=False)
    assert [row.name for row in diagnosis.flow] == [str(i) for i in range(len(model))]
    for i, row in enumerate(diagnosis.flow):
        assert row.relevance_out == pytest.approx(fraction(arriving[i]), rel=1e-4, abs=1e-6)
        assert row.relevance_in == pytest.approx(fraction(sent[i]), rel=1e-4, abs=1e-6)
    assert diagnosis.kept == pytest.approx(fraction(sent[0]), rel=1e-4)


def test_completeness_holds_on_a_sequential_net_per_channel_and_at_once():
    model, images = sequential_net(), torch.rand(2, 3, 8, 8)
    at_once = diagnose(model, EpsilonPlus(), images, progress=False)
    channelwise = diagnose(model, EpsilonPlus(), images, channelwise=True, progress=False)
    assert [c.layer for c in at_once.completeness] == ["0", "3"]
    rows = {row.name: row for row in at_once.flow}
    for a, b in zip(at_once.completeness, channelwise.completeness, strict=True):
        assert b.exact and not a.exact
        assert a.deviation < 1e-5 and b.deviation < 1e-5
        assert a.channel_heatmaps == pytest.approx(a.heatmap, rel=1e-5)
        assert b.channel_heatmaps == pytest.approx(a.channel_heatmaps, rel=1e-5)
        # the relevance at the layer (recorded by the engine) is what the flow's tap saw arriving at its output
        assert a.arriving == pytest.approx(rows[a.layer].relevance_out, rel=1e-5)


def bypass_heatmap(model: torch.nn.Module, composite, images: torch.Tensor, layer: str) -> torch.Tensor:
    """The heatmap of the relevance that goes around ``layer``: zennit's Gradient with the relevance arriving at
    ``layer``'s output set to zero."""
    module = dict(model.named_modules())[layer]

    def block(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        output.register_hook(torch.zeros_like)

    with torch.no_grad():
        output = model(images)
    targets = output.argmax(1)
    start = torch.eye(output.shape[1])[targets] * output[torch.arange(len(targets)), targets][:, None]
    with Gradient(model, composite) as attributor:
        handle = module.register_forward_hook(block)  # after zennit's hooks: it sees the output the model uses
        try:
            _, heatmap = attributor(images, start)
        finally:
            handle.remove()
    return heatmap


def test_completeness_fails_by_the_share_that_bypasses_the_layer(skip_net, digits):
    # SkipNet adds a parallel branch to conv1 -> conv2. With sole_path the channels of conv2 carry everything but the
    # relevance through the parallel branch, so sum_c H_c = H - H_bypass and the deviation is |H_bypass| / |H|.
    composite = auto(skip_net).composite
    diagnosis = diagnose(skip_net, composite, digits, layers=["conv2"], targets="prediction", progress=False)
    targets = PerSample([[t] for t in diagnosis_targets(skip_net, digits)])
    plain = Attributor(skip_net, composite)(digits, Condition(targets=targets)).heatmap
    bypass = bypass_heatmap(skip_net, composite, digits, "conv2").sum(1)
    expected = float(((bypass.flatten(1).abs().sum(1)) / plain.flatten(1).abs().sum(1)).max())
    (completeness,) = diagnosis.completeness
    assert completeness.deviation == pytest.approx(expected, rel=1e-4)
    assert 0.05 < expected < 0.95  # a real part of the heatmap goes around conv2
    assert [f.location for f in diagnosis.findings if f.kind == "completeness"] == ["conv2"]


def diagnosis_targets(model: torch.nn.Module, data: torch.Tensor) -> list[int]:
    with torch.no_grad():
        return model(data).argmax(1).tolist()


def test_without_sole_path_the_channels_count_the_bypass_once_each(skip_net, digits):
    # What diagnose does not use, documented: with sole_path=False each channel's conditional heatmap also carries
    # the whole bypass, so the channels' heatmaps sum to H + (C - 1) * H_bypass.
    composite = auto(skip_net).composite
    targets = diagnosis_targets(skip_net, digits)
    attributor = Attributor(skip_net, composite)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GlocalWarning)
        plain = attributor(digits, Condition(targets=targets[0])).heatmap
        channels = attributor(digits, [Condition(targets=targets[0], layers={"conv2": [c]}) for c in range(4)],
                              sole_path=False).heatmap  # fmt: skip
    bypass = bypass_heatmap(skip_net, composite, digits, "conv2").sum(1)
    summed = channels.view(digits.shape[0], 4, *channels.shape[1:]).sum(1)
    # bypass_heatmap explains each sample's predicted class; use sample 0's target for all, so compare sample 0 only
    assert torch.allclose(summed[0], plain[0] + 3 * bypass[0], atol=1e-5 * float(plain[0].abs().max()))


def model_state(model: torch.nn.Module) -> dict:
    return {
        "hooks": [
            (name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for name, m in model.named_modules()
        ],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "modules": [name for name, _ in model.named_modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def assert_unchanged(before: dict, model: torch.nn.Module) -> None:
    after = model_state(model)
    for key in ("hooks", "requires_grad", "grads", "training", "modules"):
        assert before[key] == after[key], key
    for name, value in before["state"].items():
        assert torch.equal(value, after["state"][name]), name


def test_the_model_is_unchanged_after_diagnose_and_after_an_exception(skip_net, digits):
    skip_net.train()
    before = model_state(skip_net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diagnosis = diagnose(skip_net, "auto", digits, progress=False)
    assert not [w for w in caught if issubclass(w.category, GlocalWarning)]  # reported, not emitted
    assert any("training mode" in message for message in diagnosis.warnings)
    assert_unchanged(before, skip_net)

    bad = [digits[0], digits[1], torch.zeros(1, 5, 5)]  # the second batch cannot run
    with pytest.raises(InputError):
        diagnose(skip_net, "auto", bad, batch_size=2, progress=False)
    assert_unchanged(before, skip_net)
    assert torch.overrides._get_current_function_mode() is None  # the recording mode is gone too


def test_data_as_a_labelled_dataset_uses_the_labels(skip_net, digits):
    labels = [2, 0, 1]
    dataset = torch.utils.data.TensorDataset(digits, torch.tensor(labels))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    from_loader = diagnose(skip_net, "auto", loader, completeness=False, progress=False)
    from_tensor = diagnose(skip_net, "auto", digits, targets=labels, completeness=False, progress=False)
    assert from_loader.kept_per_sample == pytest.approx(from_tensor.kept_per_sample, rel=1e-5)
    assert from_loader.samples == 3


def test_result_is_json_and_prints_a_table():
    diagnosis = diagnose(AddNet(), epsilon_only(), torch.rand(2, 2) + 0.5, progress=False)
    data = json.loads(json.dumps(diagnosis.to_dict()))
    assert data["findings"][0]["kind"] == "addition"
    assert data["flow"][0]["ratio"] == pytest.approx(1.0, rel=1e-6)
    text = str(diagnosis)
    assert "(model): add" in text and "addition" in text and "l1" in text and "Fix:" in text


def test_bad_arguments_get_clear_errors():
    with pytest.raises(InputError, match="needs data"):
        diagnose(clean_net(), "auto")
    with pytest.raises(ValueError, match="tolerance"):
        diagnose(clean_net(), "auto", torch.rand(2, 3), tolerance=-1)
    with pytest.raises(KeyError, match="no layer named"):
        diagnose(clean_net(), "auto", torch.rand(2, 3), layers=["nope"])
