"""A scan's statistics equal those computed sample by sample with the engine."""

from __future__ import annotations

import torch
from zennit.composites import EpsilonPlusFlat

from glocal import Attributor, Condition, PerSample
from glocal.data import fixed_batches
from glocal.index.scan import ScanState, run_scan
from glocal.index.statistics import LayerStatistics


def test_batches_cover_the_dataset_once_across_ranks():
    everything = sorted(i for rank in range(3) for batch in fixed_batches(23, 4, rank, 3) for i in batch)
    assert everything == list(range(23))
    assert fixed_batches(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_scan_equals_per_sample_reference(conv_net):
    torch.manual_seed(5)
    images = torch.rand(13, 3, 8, 8)
    labels = torch.randint(0, 5, (13,))
    dataset = torch.utils.data.TensorDataset(images, labels)
    layers = ["2", "5"]
    state = run_scan(conv_net, EpsilonPlusFlat(), dataset, layers, k=3, batch_size=4, progress=False)
    assert state.samples_done == 13 and state.batches_done == 4

    reference = {name: LayerStatistics(8, 5, 3) for name in layers}
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    for i in range(13):
        result = attributor(images[i : i + 1], {"y": [int(labels[i])]}, record=layers, heatmap=False)
        for name in layers:
            reference[name].update(
                torch.tensor([i]), result.relevances[name], result.activations[name], [[int(labels[i])]]
            )
    assert state.statistics is not None
    for name in layers:
        ours, theirs = state.statistics[name].arrays(), reference[name].arrays()
        for key in ours:
            if key.endswith("ids") or key.endswith("positions") or key.endswith("count"):
                assert (ours[key] == theirs[key]).all(), (name, key)
            else:
                torch.testing.assert_close(
                    torch.from_numpy(ours[key]), torch.from_numpy(theirs[key]), rtol=1e-4, atol=1e-7
                )


def test_scan_with_predictions_and_resume_equals_one_pass(conv_net):
    torch.manual_seed(6)
    dataset = torch.utils.data.TensorDataset(torch.rand(10, 3, 8, 8))
    whole = run_scan(
        conv_net, EpsilonPlusFlat(), dataset, ["5"], k=2, batch_size=3, targets="prediction", progress=False
    )
    # interrupted after two batches, then continued from the saved state
    first = run_scan(
        conv_net,
        EpsilonPlusFlat(),
        torch.utils.data.Subset(dataset, range(6)),
        ["5"],
        k=2,
        batch_size=3,
        targets="prediction",
        progress=False,
    )
    partial = ScanState(["5"], 2, statistics=first.statistics, batches_done=2, samples_done=6)
    resumed = run_scan(
        conv_net,
        EpsilonPlusFlat(),
        dataset,
        ["5"],
        k=2,
        batch_size=3,
        targets="prediction",
        state=partial,
        progress=False,
    )
    assert whole.statistics is not None and resumed.statistics is not None
    for key, value in whole.statistics["5"].arrays().items():
        assert (resumed.statistics["5"].arrays()[key] == value).all(), key


def test_scan_hashes_every_batch_as_it_streams(conv_net):
    from glocal.index.fingerprint import batch_digests

    torch.manual_seed(7)
    dataset = torch.utils.data.TensorDataset(torch.rand(11, 3, 8, 8), torch.randint(0, 5, (11,)))
    shares = [
        run_scan(conv_net, EpsilonPlusFlat(), dataset, ["5"], k=2, batch_size=3, rank=r, world=2, progress=False)
        for r in range(2)
    ]
    assert [len(s.digests) for s in shares] == [2, 2]
    for rank, share in enumerate(shares):  # rank r scanned batches r, r + 2: the digests a reader computes for them
        expected = batch_digests(dataset, 3, [rank, rank + 2], progress=False)
        assert [bytes(row) for row in expected] == share.digests


def test_index_of_plain_gradients(conv_net, tmp_path):
    """composite=None indexes plain gradients, as Attributor(model, None) computes them."""
    from glocal.index import ConceptIndex, build_index

    torch.manual_seed(6)
    images = torch.rand(6, 3, 8, 8)
    labels = torch.randint(0, 5, (6,))
    dataset = torch.utils.data.TensorDataset(images, labels)
    build_index(conv_net, None, dataset, ["5"], tmp_path / "plain", k=6, batch_size=4, progress=False)
    index = ConceptIndex.open(tmp_path / "plain", model=conv_net, composite=None)
    targets = PerSample([[int(label)] for label in labels])  # each sample's relevance from its own label
    result = Attributor(conv_net, None)(images, Condition(targets=targets), record=["5"], heatmap=False)
    sums = result.relevances["5"].flatten(2).sum(2)  # (samples, channels)
    for channel in range(sums.shape[1]):
        ids, scores, _ = index.samples("5", channel, mode="relmax_sum")
        expected = [int(i) for i in sums[:, channel].argsort(descending=True) if sums[i, channel] > 0]
        assert ids == expected, channel
        torch.testing.assert_close(
            torch.tensor(scores, dtype=torch.float64), sums[expected, channel].double(), rtol=1e-4, atol=1e-7
        )
