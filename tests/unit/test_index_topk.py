"""Streaming top-k equals a brute-force sort, under any batching, merge order and ties."""

from __future__ import annotations

import random

import pytest
import torch

from glocal.index import TopK


def brute_force(scores: torch.Tensor, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per column: sample ids sorted by (score descending, id ascending), first k."""
    ids, values = [], []
    for column in scores.T.tolist():
        ranked = sorted(range(len(column)), key=lambda i: (-column[i], i))[:k]
        ids.append(ranked)
        values.append([column[i] for i in ranked])
    return ids, values


@pytest.mark.parametrize("seed", range(5))
def test_batches_and_merges_equal_brute_force(seed):
    generator = torch.Generator().manual_seed(seed)
    n, concepts, k = 57, 6, 5
    # few distinct values so that ties are common
    scores = torch.randint(0, 7, (n, concepts), generator=generator).float()
    positions = torch.randint(0, 49, (n, concepts), generator=generator)
    expected_ids, expected_scores = brute_force(scores, k)

    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    cuts = sorted(rng.sample(range(1, n), 6))
    shards = [order[a:b] for a, b in zip([0, *cuts], [*cuts, n], strict=True)]
    states = []
    for shard in shards:
        state = TopK.empty(concepts, k)
        for start in range(0, len(shard), 4):
            ids = torch.tensor(shard[start : start + 4])
            state.update(scores[ids], ids, positions[ids])
        states.append(state)
    rng.shuffle(states)
    merged = states[0]
    for state in states[1:]:
        merged = merged.merge(state)

    assert merged.ids.tolist() == expected_ids
    assert merged.scores.tolist() == expected_scores
    # each kept sample carries its own position
    for concept in range(concepts):
        for slot, sample in enumerate(merged.ids[concept].tolist()):
            assert merged.positions[concept, slot] == positions[sample, concept]


def test_fewer_samples_than_k_and_nan():
    state = TopK.empty(2, 4)
    state.update(
        torch.tensor([[1.0, float("nan")], [2.0, 0.5]]), torch.tensor([3, 8]), torch.zeros(2, 2, dtype=torch.long)
    )
    assert state.ids.tolist() == [[8, 3, -1, -1], [8, 3, -1, -1]]
    assert state.scores[0, :2].tolist() == [2.0, 1.0]
    assert state.scores[1, 1] == -torch.inf  # NaN ranks last


def test_row_blocks_for_class_statistics():
    """Class c's concepts occupy rows c * C to (c + 1) * C."""
    concepts, classes = 3, 2
    state = TopK.empty(concepts * classes, 1)
    scores = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 1.0], [0.5, 5.0, 0.0]])
    labels = [0, 1, 0]
    for c in range(classes):
        chosen = torch.tensor([i for i, y in enumerate(labels) if y == c])
        state.update(
            scores[chosen], chosen, torch.zeros(len(chosen), concepts, dtype=torch.long), first_row=c * concepts
        )
    assert state.ids[:, 0].tolist() == [0, 2, 0, 1, 1, 1]
