"""Fingerprints tell apart models, composites (rule parameters, canonizers) and datasets that differ."""

from __future__ import annotations

import copy

import numpy as np
import torch
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlus

from glocal.index.fingerprint import composite_fingerprint, dataset_fingerprint, differences, model_fingerprint


def test_same_model_same_fingerprint(conv_net: torch.nn.Sequential) -> None:
    assert model_fingerprint(conv_net) == model_fingerprint(copy.deepcopy(conv_net))


def test_one_changed_weight_changes_fingerprint(conv_net: torch.nn.Sequential) -> None:
    changed = copy.deepcopy(conv_net)
    with torch.no_grad():
        changed[0].weight[0, 0, 0, 0] += 1e-3
    before, after = model_fingerprint(conv_net), model_fingerprint(changed)
    assert before["parameters"] == after["parameters"]
    assert before["sha256"] != after["sha256"]
    assert differences({"model": before}, {"model": after}) == [
        f"model.sha256: index has {before['sha256'][:12]}…, given model has {after['sha256'][:12]}…"
    ]


def test_buffers_are_covered(skip_net: torch.nn.Module) -> None:
    changed = copy.deepcopy(skip_net)
    changed.bn1.running_mean += 1.0
    assert model_fingerprint(skip_net)["sha256"] != model_fingerprint(changed)["sha256"]


def test_equal_composites_agree(conv_net: torch.nn.Sequential) -> None:
    assert composite_fingerprint(EpsilonPlus(epsilon=1e-6), conv_net) == composite_fingerprint(
        EpsilonPlus(epsilon=1e-6), conv_net
    )


def test_rule_parameter_difference_names_the_module(conv_net: torch.nn.Sequential) -> None:
    small = composite_fingerprint(EpsilonPlus(epsilon=1e-6), conv_net)
    large = composite_fingerprint(EpsilonPlus(epsilon=1e-3), conv_net)
    assert small != large
    lines = differences({"composite": small}, {"composite": large})
    # the epsilon rule sits on the two linear layers, modules "8" and "10"; the conv layers' ZPlus is unchanged
    assert [line.split(":")[0] for line in lines] == ["composite.rules.10.behaviour", "composite.rules.8.behaviour"]
    assert all("given composite has" in line for line in lines)


def test_tiny_epsilon_difference_is_seen(conv_net: torch.nn.Sequential) -> None:
    assert composite_fingerprint(EpsilonPlus(epsilon=1e-6), conv_net) != composite_fingerprint(
        EpsilonPlus(epsilon=1e-7), conv_net
    )


def test_canonizer_difference_is_seen(conv_net: torch.nn.Sequential) -> None:
    plain = composite_fingerprint(EpsilonPlus(), conv_net)
    merged = composite_fingerprint(EpsilonPlus(canonizers=[SequentialMergeBatchNorm()]), conv_net)
    assert plain["rules"] == merged["rules"]
    lines = differences({"composite": plain}, {"composite": merged})
    assert len(lines) == 1 and lines[0].startswith("composite.canonizers: index has [], given composite has [")


def test_fingerprint_leaves_model_without_hooks(conv_net: torch.nn.Sequential) -> None:
    composite_fingerprint(EpsilonPlus(), conv_net)
    for module in conv_net.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks and not module._backward_hooks


def test_dataset_with_one_changed_sample_differs() -> None:
    generator = torch.Generator().manual_seed(0)
    data = [(torch.rand(3, 4, 4, generator=generator), i % 3) for i in range(16)]
    same = [(x.clone(), y) for x, y in data]
    changed = [(x.clone(), y) for x, y in data]
    changed[7][0][1, 2, 3] += 0.5
    relabelled = [*data[:5], (data[5][0], 0), *data[6:]]  # sample 5 had label 2
    fingerprint = dataset_fingerprint(data)
    assert fingerprint["length"] == 16 and fingerprint["samples"] == list(range(16))
    assert dataset_fingerprint(same) == fingerprint
    assert dataset_fingerprint(changed)["sha256"] != fingerprint["sha256"]
    assert dataset_fingerprint(relabelled)["sha256"] != fingerprint["sha256"]


def test_dataset_samples_are_evenly_spaced_and_nested_types_hash() -> None:
    import numpy as np

    data = [{"image": np.full((2, 2), i, dtype=np.uint8), "meta": (i, "x", 1.5)} for i in range(100)]
    fingerprint = dataset_fingerprint(data)
    assert len(fingerprint["samples"]) == 16 and fingerprint["samples"][0] == 0 and fingerprint["samples"][-1] == 99
    assert dataset_fingerprint(data[:99])["length"] == 99
    assert dataset_fingerprint([])["samples"] == []


def test_no_differences_for_equal() -> None:
    assert differences({"a": {"b": 1}}, {"a": {"b": 1}}) == []
    assert differences({"a": {"b": 1}}, {"a": {}}) == ["a.b: index has 1, given a has none"]


def test_exact_dataset_fingerprint_sees_every_sample_and_not_the_split() -> None:
    from glocal.index.fingerprint import batch_digests, combine_digests

    generator = torch.Generator().manual_seed(3)
    data = [(torch.rand(2, 3, generator=generator), i % 4) for i in range(50)]
    exact = combine_digests(50, 8, batch_digests(data, 8, progress=False))
    # two ranks (batches 0, 2, 4, 6 and 1, 3, 5), interleaved again: the same digests
    ranks = [batch_digests(data, 8, range(r, 7, 2), progress=False) for r in range(2)]
    interleaved = np.zeros((7, 32), dtype=np.uint8)
    interleaved[0::2], interleaved[1::2] = ranks
    assert combine_digests(50, 8, interleaved) == exact
    changed = list(data)
    changed[37] = (data[37][0] + 1e-6, data[37][1])  # not one of the 16 samples of the quick fingerprint
    assert dataset_fingerprint(changed) == dataset_fingerprint(data)
    assert combine_digests(50, 8, batch_digests(changed, 8, progress=False)) != exact
    relabelled = list(data)
    relabelled[11] = (data[11][0], 9)
    assert combine_digests(50, 8, batch_digests(relabelled, 8, progress=False)) != exact


def test_fingerprints_and_cache_keys_name_glocal_classes_by_their_0_1_paths():
    """Indexes and reference caches made before the package was split into subpackages still match: the names in a
    fingerprint are those glocal 0.1 wrote (its auto composite for MobileNetV2 gave exactly these)."""
    import torchvision

    from glocal import ChannelConcept
    from glocal.index.fingerprint import stable_name
    from glocal.index.references import min_max_image
    from glocal.lrp.composites import auto

    model = torchvision.models.mobilenet_v2(weights=None).eval()
    fingerprint = composite_fingerprint(auto(model).composite, model)
    assert fingerprint["canonizers"] == ["glocal.canonizers.MobileNetV2Canonizer"]
    rules = {entry["rule"] for entry in fingerprint["rules"].values()}
    assert rules == {"glocal.bias_rules.BiasFreeGamma", "glocal.bias_rules.BiasFreeZBox", "zennit.rules.Epsilon"} | {
        "zennit.rules.Pass"
    }
    assert stable_name(min_max_image) == "glocal.references.min_max_image"
    assert stable_name(ChannelConcept) == stable_name(ChannelConcept()) == "glocal.concepts.ChannelConcept"
    assert stable_name(torch.nn.Conv2d) == "torch.nn.modules.conv.Conv2d"  # other packages' names as they are
