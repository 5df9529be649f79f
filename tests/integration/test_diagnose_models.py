"""glocal.diagnose names what breaks conservation in real models, and finds nothing where nothing is broken.

Small on purpose: one photo or a few digits each, completeness off where it is not the point (the numbers on more
data are in docs/diagnose.md, from benchmarks/diagnose_models.py).
"""

from __future__ import annotations

import pytest
import torch
from zennit.composites import EpsilonPlus, EpsilonPlusFlat

import fashion_mnist
from glocal import diagnose
from real_models import mnist_cnn, mnist_digits, mobilenet_v2, photos

MOBILENET_RESIDUAL_BLOCKS = [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]  # blocks with stride 1 and equal channels


def kinds(diagnosis, kind: str) -> list[str]:
    return [f.location for f in diagnosis.findings if f.kind == kind]


def test_mobilenet_v2_without_canonizer_has_its_residual_adds_and_batch_norms_named():
    model, image = mobilenet_v2(), photos(("chelsea",))[..., ::2, ::2]  # 112 x 112: the structure is the same
    bare = diagnose(model, EpsilonPlusFlat(), image, completeness=False, progress=False)
    assert kinds(bare, "addition") == [f"'features.{i}': add" for i in MOBILENET_RESIDUAL_BLOCKS]
    assert all(f.ratio == pytest.approx(2.0, rel=1e-4) for f in bare.findings if f.kind == "addition")
    assert len(kinds(bare, "batch_norm")) == 52
    assert bare.kept > 1.2  # created at the adds
    assert all("MobileNetV2Canonizer" in (f.fix or "") for f in bare.findings if f.kind == "addition")

    default = diagnose(model, "auto", image, completeness=False, progress=False)
    assert default.findings == ()
    assert 0.99 < default.kept <= 1.0


def test_resnet18_without_its_canonizer_doubles_the_relevance_at_each_block():
    from torchvision.models import resnet18
    from zennit.torchvision import ResNetCanonizer

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    images = torch.randn(1, 3, 64, 64)
    bare = diagnose(model, EpsilonPlusFlat(), images, completeness=False, progress=False)
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert kinds(bare, "addition") == [f"'{block}': add_" for block in blocks]  # out += identity
    assert 200 < bare.kept < 260  # 2^8 times what the rules keep
    covered = diagnose(model, EpsilonPlusFlat(canonizers=[ResNetCanonizer()]), images, completeness=False,
                       progress=False)  # fmt: skip
    assert kinds(covered, "addition") == []
    assert 0.9 < covered.kept <= 1.0


@pytest.mark.skipif(not fashion_mnist.available(), reason="needs ../shared/data")
def test_fashion_mnist_batch_norms_without_canonizer_and_a_skip_branch_without_an_add():
    model = fashion_mnist.load_model()
    data = torch.utils.data.TensorDataset(fashion_mnist.load_images(16), fashion_mnist.load_labels(16))
    bare = diagnose(model, EpsilonPlus(), data, completeness=False, progress=False)
    assert sorted(kinds(bare, "batch_norm")) == ["bn1", "bn2", "parallel.1"]
    default = diagnose(model, "auto", data, progress=False)
    assert kinds(default, "addition") == [] and kinds(default, "batch_norm") == []  # the skip branch goes through Sum
    assert default.conservative
    assert sorted(kinds(default, "completeness")) == ["conv1", "conv2", "parallel.0"]  # each sits in a branch


def test_the_mnist_cnn_is_well_behaved():
    model = mnist_cnn()
    images, labels = mnist_digits(16)
    diagnosis = diagnose(model, "auto", torch.utils.data.TensorDataset(images, labels), progress=False)
    assert diagnosis.findings == ()
    assert diagnosis.conservative and diagnosis.kept == pytest.approx(1.0, abs=0.02)
    assert [c.layer for c in diagnosis.completeness] == ["conv_layers.0", "conv_layers.3", "conv_layers.6"]
    assert all(c.deviation < 1e-4 for c in diagnosis.completeness)
