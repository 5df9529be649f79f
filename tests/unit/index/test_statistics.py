"""Per-layer scan statistics against brute-force references on small random data."""

from __future__ import annotations

import pytest
import torch

from glocal.index.statistics import MODES, LayerStatistics, concept_scores


def brute_top(values: torch.Tensor, k: int) -> list[list[int]]:
    return [sorted(range(values.shape[0]), key=lambda i: (-float(values[i, c]), i))[:k] for c in range(values.shape[1])]


def test_statistics_equal_brute_force_and_merge_exactly():
    generator = torch.Generator().manual_seed(0)
    n, concepts, classes, k = 40, 5, 3, 4
    relevance = torch.randn(n, concepts, 3, 3, generator=generator)
    activation = torch.randn(n, concepts, 3, 3, generator=generator)  # signed, as a convolution before its ReLU
    labels = torch.randint(0, classes, (n,), generator=generator)
    ids = torch.arange(100, 100 + n)

    whole = LayerStatistics(concepts, classes, k, class_k=k)
    halves = [LayerStatistics(concepts, classes, k, class_k=k), LayerStatistics(concepts, classes, k, class_k=k)]
    for start in range(0, n, 8):
        batch = slice(start, start + 8)
        args = (ids[batch], relevance[batch], activation[batch], [[int(y)] for y in labels[batch]])
        whole.update(*args)
        halves[(start // 8) % 2].update(*args)
    merged = halves[1].merge(halves[0])

    rel = relevance.flatten(2).double()
    act = activation.flatten(2).double()
    total = rel.sum(-1).abs().sum(-1, keepdim=True)
    expected = {
        "relmax_sum": rel.sum(-1),
        "relmax_max": rel.max(-1).values,
        "relmax_sum_norm": rel.sum(-1) / total,
        "relmax_max_norm": rel.max(-1).values / total,
        "actmax_sum": act.clamp(min=0).sum(-1),
        "actmax_max": act.clamp(min=0).max(-1).values,
        "actmax_sum_norm": act.sum(-1) / act.sum(-1).abs().sum(-1, keepdim=True),
        "actmax_max_norm": act.max(-1).values / act.max(-1).values.abs().sum(-1, keepdim=True),
        "actmax_sum_raw": act.sum(-1),
        "actmax_max_raw": act.max(-1).values,
    }
    for stats in (whole, merged):
        for mode in MODES:
            top_ids = brute_top(expected[mode].float(), k)
            assert (stats.top[mode].ids - 100).tolist() == top_ids, mode
            positions = rel.argmax(-1) if mode.startswith("rel") else act.argmax(-1)
            for c in range(concepts):
                for slot, sample in enumerate(top_ids[c]):
                    assert stats.top[mode].positions[c, slot] == positions[sample, c]
        for label in range(classes):
            members = (labels == label).nonzero().flatten()
            # per-sample concept sums are float32 (their sum over samples float64)
            torch.testing.assert_close(
                stats.class_relevance[label], expected["relmax_sum"][members].sum(0), rtol=1e-6, atol=1e-6
            )
            assert stats.class_count[label] == len(members)
            scores = expected["relmax_sum"][members].float()
            for c in range(concepts):
                ranked = sorted(range(len(members)), key=lambda i: (-float(scores[i, c]), int(members[i])))[:k]
                assert (stats.class_entries(label, c)[0] - 100).tolist() == [int(members[i]) for i in ranked]
    # the flat arrays round-trip
    again = LayerStatistics.from_arrays(whole.arrays())
    for name, value in whole.arrays().items():
        assert (again.arrays()[name] == value).all(), name


def test_multi_label_class_statistics_use_per_class_relevance():
    relevance = torch.tensor([[[1.0], [2.0]]])  # one sample, two concepts, one position
    per_class = torch.tensor([[[[0.25], [0.5]], [[0.75], [1.5]]]])  # (N, L=2, C, P)
    stats = LayerStatistics(concepts=2, classes=3, k=1)
    stats.update(torch.tensor([7]), relevance, relevance, [[0, 2]], class_relevance=per_class)
    torch.testing.assert_close(
        stats.class_relevance, torch.tensor([[0.25, 0.5], [0.0, 0.0], [0.75, 1.5]], dtype=torch.float64)
    )
    assert stats.class_count.tolist() == [1, 0, 1]
    assert concept_scores(relevance, relevance)["relmax_sum"][0].tolist() == [[1.0, 2.0]]


def test_positive_actmax_ranks_by_what_a_relu_passes_on():
    # one concept, two positions; sample 0: +3 and -5 (raw sum -2), sample 1: +1 and +1 (raw sum 2), sample 2: all < 0
    activation = torch.tensor([[[3.0, -5.0]], [[1.0, 1.0]], [[-1.0, -2.0]]])
    scores = concept_scores(torch.zeros_like(activation), activation)
    assert scores["actmax_sum"][0].flatten().tolist() == [3.0, 2.0, 0.0]
    assert scores["actmax_max"][0].flatten().tolist() == [3.0, 1.0, 0.0]
    assert scores["actmax_sum_raw"][0].flatten().tolist() == [-2.0, 2.0, -3.0]
    assert scores["actmax_sum"][1].flatten().tolist() == [0, 0, 0]  # the most active unit


def test_normalised_actmax_equals_zennit_crp():
    crp_concepts = pytest.importorskip("crp.concepts")
    generator = torch.Generator().manual_seed(1)
    activation = torch.randn(12, 6, 4, 4, generator=generator)
    scores = concept_scores(torch.zeros_like(activation), activation)
    for target in ("sum", "max"):
        for norm, mode in ((True, f"actmax_{target}_norm"), (False, f"actmax_{target}_raw")):
            order, values, positions = crp_concepts.ChannelConcept().reference_sampling(
                activation, max_target=target, abs_norm=norm
            )
            ours, where = scores[mode]
            # zennit-crp sorts each concept's samples; the same scores (bitwise, float32) at the same units
            assert torch.equal(ours.float().gather(0, order), values), mode
            assert torch.equal(where.gather(0, order), positions), mode
