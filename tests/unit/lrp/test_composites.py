"""composite="auto": the architecture read from the model's structure, and the composite each one gets."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from residual_net import residual
from zennit.canonizers import NamedMergeBatchNorm
from zennit.composites import EpsilonPlus, EpsilonPlusFlat
from zennit.rules import ZBox

from glocal import Attributor, CanonizerWarning, ConceptExplainer, ConservationWarning, PerSample
from glocal.lrp.composites import ARCHITECTURES, SampleBox, auto, box_composite, detect
from real_models import MNIST_MEAN, MNIST_STD, mnist_cnn, mnist_digits

torchvision = pytest.importorskip("torchvision")


def fashion() -> torch.nn.Module:
    from parity.parity_models import fashion_model

    return fashion_model()


def kept(model: torch.nn.Module, composite: object, data: torch.Tensor) -> torch.Tensor:
    """Each sample's heatmap sum over its predicted logit (the fraction of relevance the heatmap keeps)."""
    with torch.no_grad():
        output = model(data)
    targets = output.argmax(1)
    result = Attributor(model, composite)(data, {"y": PerSample([[int(t)] for t in targets])})
    assert result.heatmap is not None
    return result.heatmap.flatten(1).sum(1) / output[torch.arange(len(targets)), targets]


# -- detection ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "architecture", "merges"),
    [("vgg11", "vgg", 0), ("vgg11_bn", "vgg_bn", 8), ("resnet18", "resnet", 20), ("mobilenet_v2", "mobilenet_v2", 52)],
)
def test_torchvision_architectures(name, architecture, merges):
    model = getattr(torchvision.models, name)(weights=None)
    choice = auto(model)
    assert choice.architecture == architecture
    assert len(choice.structure.merges) == merges == len(choice.structure.batch_norms)  # each follows a conv
    assert choice.reason.startswith(ARCHITECTURES[architecture][1])


def test_resnet_and_mobilenet_residual_adds_are_seen():
    assert len(auto(torchvision.models.resnet18(weights=None)).structure.additions or ()) == 8  # 2 blocks x 4 stages
    assert len(auto(torchvision.models.mobilenet_v2(weights=None)).structure.additions or ()) == 10


def test_mnist_cnn_is_a_plain_cnn():
    choice = auto(mnist_cnn())
    assert choice.architecture == "cnn"
    assert choice.structure.batch_norms == () and choice.structure.additions == ()


def test_fashion_cnn_merges_every_batch_norm_by_data_flow():
    """bn1 and bn2 are attributes, not Sequential neighbours: only the data flow shows what they follow."""
    choice = auto(fashion())
    assert choice.architecture == "cnn_bn"
    assert set(choice.structure.merges) == {(("conv1",), "bn1"), (("conv2",), "bn2"), (("parallel.0",), "parallel.1")}
    assert "3 of 3 batch norms merged" in choice.reason
    (canonizer,) = choice.composite.canonizers
    assert isinstance(canonizer, NamedMergeBatchNorm)


def test_mlp_is_generic():
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    choice = auto(mlp)
    assert choice.architecture == "generic"
    assert choice.structure.merges == ((("0",), "1"),)


def test_uncovered_residual_add_is_named_in_the_reason():
    choice = auto(residual())
    assert choice.architecture == "cnn"
    assert len(choice.structure.additions or ()) == 1
    assert "1 functional addition(s) that no canonizer covers" in choice.reason
    assert auto(residual(summed=True)).structure.additions == ()


def test_untraceable_model_falls_back_to_the_module_tree():
    class Branching(torch.nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) if x.sum() > 0 else -super().forward(x)  # data-dependent: fx fails

    model = Branching(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.ReLU())
    choice = auto(model)
    assert not choice.structure.traced and choice.structure.additions is None
    assert choice.architecture == "cnn_bn" and choice.structure.merges == ((("0",), "1"),)
    assert detect(model) == "cnn_bn"


# -- the composites at work --------------------------------------------------------------------------------------


def test_auto_conserves_on_the_real_mnist_cnn():
    """Measured on 512 digits: every heatmap keeps 0.952 to 1.014 of its logit (the biases take or give the rest)."""
    model = mnist_cnn()
    digits, _ = mnist_digits(32)
    fraction = kept(model, "auto", digits)
    assert fraction.min() > 0.95 and fraction.max() < 1.02
    assert fraction.median() > 0.99


def test_auto_on_the_fashion_cnn_keeps_what_its_merged_biases_leave():
    """Bias-free rules on a CNN with merged batch norms: the biases take no share (z+ with the biases kept 0.93 of
    these 32 logits, 0.67 in the worst 5 % of 256 images; bias-free 1.002, and 0.96 in the worst 5 %)."""
    model = fashion()
    from parity.parity_models import fashion_images

    data = fashion_images(32)
    with torch.no_grad():
        logits = model(data).max(1).values
    fraction = kept(model, "auto", data)
    total = float((fraction * logits).sum() / logits.sum())
    assert 0.98 < total < 1.02  # measured: 1.002


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn", "resnet18"])
def test_auto_conserves_on_random_torchvision_models(name):
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    if name.startswith("vgg"):  # a small classifier keeps the test quick; the architecture stays torchvision's VGG
        model.classifier = torch.nn.Sequential(
            torch.nn.Linear(512 * 7 * 7, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
        for layer in model.classifier[::2]:
            torch.nn.init.zeros_(layer.bias)  # as torchvision initialises VGG's classifier
    if name != "vgg11":  # batch-norm statistics as training leaves them: their merged biases are not zero
        generator = torch.Generator().manual_seed(2)
        for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            features = norm.num_features
            norm.running_mean.copy_(torch.randn(features, generator=generator) * 0.5)
            norm.running_var.copy_(torch.rand(features, generator=generator) + 0.5)
            norm.weight.data.copy_(torch.rand(features, generator=generator) + 0.5)
            norm.bias.data.copy_(torch.randn(features, generator=generator) * 0.2)
    torch.manual_seed(1)
    data = torch.rand(2, 3, 32, 32)
    fraction = kept(model, "auto", data)
    # measured: VGG 0.9999; with batch norms the bias-free rules keep 1.000 (VGG11-BN) and 1.008 (ResNet18), where z+
    # counting the merged biases keeps 0.60 and 0.71 of these logits
    assert ((fraction - 1).abs() < 0.05).all(), fraction
    if name == "resnet18":  # without the canonizer each residual add doubles the relevance: 241x measured
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert (kept(model, EpsilonPlusFlat(), data) > 100).all()


def test_sample_box_equals_zbox_when_each_digit_reaches_the_pixel_bounds():
    """A digit with a black (0) and a white (255) pixel has exactly the pixel range as its own box."""
    model = mnist_cnn()
    digits, _ = mnist_digits(64)
    low, high = (0 - MNIST_MEAN) / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD
    full = (digits.amin((1, 2, 3)) - low).abs().lt(1e-5) & (digits.amax((1, 2, 3)) - high).abs().lt(1e-5)
    digits = digits[full][:8]
    assert len(digits) == 8
    condition = {"y": [3]}
    sample_box = Attributor(model, box_composite(SampleBox(), []))(digits, condition).heatmap
    bounded = Attributor(model, box_composite(ZBox(low=low, high=high), []))(digits, condition).heatmap
    torch.testing.assert_close(sample_box, bounded)
    assert auto(model, low=low, high=high).architecture == "cnn"
    given = Attributor(model, auto(model, low=low, high=high).composite)(digits, condition).heatmap
    torch.testing.assert_close(given, bounded)


def test_explicit_composites_win_and_bad_strings_are_refused():
    model = mnist_cnn()
    composite = EpsilonPlus()
    attributor = Attributor(model, composite)
    assert attributor.composite is composite and attributor.choice is None
    assert Attributor(model, None).composite is None
    chosen = Attributor(model, "auto")
    assert chosen.choice is not None and chosen.choice.architecture == "cnn"
    assert chosen.composite is chosen.choice.composite
    with pytest.raises(ValueError, match="'auto'"):
        Attributor(model, "epsilon_plus")


def test_concept_explainer_takes_auto_and_leaves_the_model_unchanged():
    model = fashion()
    before = copy.deepcopy(model.state_dict())
    from parity.parity_models import fashion_images

    with warnings.catch_warnings():
        warnings.simplefilter("error", CanonizerWarning)  # auto merges all three batch norms
        warnings.simplefilter("ignore", ConservationWarning)
        explanation = ConceptExplainer(model, "auto")(fashion_images(4), "conv2", select=3)
    assert explanation.concept_heatmaps.shape == (4, 3, 28, 28)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    assert not hasattr(model.conv1, "canonizer_sum")


def test_index_built_and_opened_with_auto(tmp_path):
    from glocal.index import ConceptIndex, build_index
    from parity.parity_models import fashion_images

    model = fashion()
    images = fashion_images(8)
    dataset = torch.utils.data.TensorDataset(images, torch.arange(8) % 10)
    index = build_index(model, "auto", dataset, ["conv2"], tmp_path / "index", k=2, batch_size=4, progress=False)
    rules = index.manifest["composite"]["rules"]
    # both convolutions that read the input (the main and the skip branch) get the (bias-free) box rule
    assert rules["conv1"]["rule"].endswith("BiasFreeZBox") and rules["parallel.0"]["rule"].endswith("BiasFreeZBox")
    assert rules["conv2"]["rule"].endswith("BiasFreeGamma")
    assert index.manifest["composite"]["canonizers"] == ["zennit.canonizers.NamedMergeBatchNorm"]
    ConceptIndex.open(tmp_path / "index", model=model, composite="auto")  # the same composite: no mismatch


def test_modules_the_docs_name_are_reachable_after_import_glocal():
    import subprocess
    import sys

    code = (
        "import glocal; glocal.lrp.canonizers.MobileNetV2Canonizer; glocal.lrp.composites.auto; "
        "glocal.lrp.bias_rules.mobilenet_v2_composite; glocal.lrp.composites.ARCHITECTURES['resnet']; "
        # glocal 0.1's paths, as its docs wrote them, still work (with a DeprecationWarning)
        "glocal.canonizers.MobileNetV2Canonizer; glocal.composites.auto; glocal.bias_rules.mobilenet_v2_composite"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
