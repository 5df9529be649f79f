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
@pytest.mark.parametrize("batch", [4, 11])
def test_batches_and_merges_equal_brute_force(seed, batch):
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
        for start in range(0, len(shard), batch):
            ids = torch.tensor(shard[start : start + batch])
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


def test_offer_keeps_ties_at_the_kth_entry_and_ignores_empty_candidates():
    """A candidate equal to the k-th score enters when its id is smaller; candidates below it never do."""
    state = TopK.empty(2, 2)
    rows = torch.tensor([0, 1])
    state.offer(rows, torch.tensor([[3.0, 1.0], [2.0, 2.0]]), torch.tensor([[5, 9], [5, 9]]), torch.zeros(2, 2).long())
    assert state.ids.tolist() == [[5, 9], [5, 9]]
    # row 0: 1.0 ties the k-th (id 9) with a smaller id 4 -> enters; 0.5 is below -> dropped
    # row 1: an empty candidate (id -1) with a high score is ignored; 2.0 with id 7 beats id 9 at the tie
    state.offer(
        rows,
        torch.tensor([[1.0, 0.5], [9.0, 2.0]]),
        torch.tensor([[4, 1], [-1, 7]]),
        torch.tensor([[11, 12], [13, 14]]),
    )
    assert state.ids.tolist() == [[5, 4], [5, 7]]
    assert state.positions.tolist() == [[0, 11], [0, 14]]
    before = [t.clone() for t in (state.scores, state.ids, state.positions)]
    state.offer(rows, torch.tensor([[0.1], [-5.0]]), torch.tensor([[0], [0]]), torch.zeros(2, 1).long())
    assert all(torch.equal(a, b) for a, b in zip(before, (state.scores, state.ids, state.positions), strict=True))
