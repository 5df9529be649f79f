"""The concept atlas equals plain loops over samples that call the engine one sample at a time and count by hand."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from PIL import Image
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import EpsilonPlus, EpsilonPlusFlat

from glocal import Attributor, ConditionError, InputError, LayerError, TargetError
from glocal.attribution.concepts import ChannelConcept
from glocal.index import build_index
from glocal.structure.atlas import (
    AtlasEntry,
    ConceptAtlas,
    Fragmentation,
    centre_square,
    concept_atlas,
    fragment,
    fragment_atlas,
)
from glocal.viz.atlas import atlas_figure, atlas_thumbnails

SKIP_LAYERS = ["conv1", "conv2", "parallel.0", "linear1"]


class Labelled(torch.utils.data.Dataset):
    """``(input, int label)`` items."""

    def __init__(self, inputs: torch.Tensor, labels: list[int]) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inputs[index], self.labels[index]


def composite() -> EpsilonPlus:
    return EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])


@pytest.fixture
def skip64(skip_net):
    """The skip net in float64, so batched and one-sample runs rank concepts identically."""
    return skip_net.double()


@pytest.fixture
def digits64() -> tuple[torch.Tensor, list[int]]:
    generator = torch.Generator().manual_seed(3)
    inputs = torch.rand(7, 1, 16, 16, dtype=torch.float64, generator=generator)
    labels = [0, 2, 1, 2, 0, 1, 2]
    return inputs, labels


# -- the slow, obvious way ------------------------------------------------------------------------------------------


def hand_ballot(shares: torch.Tensor, k: int) -> list[int]:
    """The k largest positive shares, largest first, lower id first among equals."""
    ranked = sorted(range(len(shares)), key=lambda c: (-float(shares[c]), c))
    return [c for c in ranked[:k] if shares[c] > 0]


def hand_entries(
    ballots: list[list[int]], shares: list[torch.Tensor], count: int
) -> list[tuple[int, int, float, float]]:
    """(concept, votes, mean share, voter share), sorted as the atlas sorts."""
    n = len(ballots)
    rows = []
    for c in range(count):
        voters = [i for i, ballot in enumerate(ballots) if c in ballot]
        if not voters:
            continue
        mean = sum(float(s[c]) for s in shares) / n
        voter = sum(float(shares[i][c]) for i in voters) / len(voters)
        rows.append((c, len(voters), mean, voter))
    rows.sort(key=lambda row: (-row[1], -row[2], row[0]))
    return rows


def assert_entries(entries: tuple[AtlasEntry, ...], expected: list[tuple[int, int, float, float]]) -> None:
    assert [(e.concept, e.votes) for e in entries] == [(row[0], row[1]) for row in expected]
    for entry, (_, _, mean, voter) in zip(entries, expected, strict=True):
        assert entry.mean_share == pytest.approx(mean, rel=1e-9, abs=1e-12)
        assert entry.voter_share == pytest.approx(voter, rel=1e-9, abs=1e-12)


def plain_shares(attributor, inputs, targets, layers, normalization="abs") -> dict[str, list[torch.Tensor]]:
    """Per layer, each sample's concept shares from its own engine call."""
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    for n in range(inputs.shape[0]):
        result = attributor(inputs[n : n + 1], {"y": [targets[n]]}, record=layers, heatmap=False)
        for layer in layers:
            relevance = ChannelConcept().relevance(result.relevances[layer])[0]
            total = relevance.abs().sum() if normalization == "abs" else relevance.sum()
            out[layer].append(relevance / total)
    return out


def regional_shares(attributor, inputs, targets, layer, masks) -> list[torch.Tensor]:
    """Per concept: its conditional heatmap summed inside the region (one engine call per sample, one condition
    ``{layer: [c], "y": [target]}`` per concept)."""
    out = []
    count = attributor(inputs[:1], {"y": [0]}, record=[layer]).relevances[layer].shape[1]
    for n in range(inputs.shape[0]):
        heatmaps = attributor(inputs[n : n + 1], [{layer: [c], "y": [targets[n]]} for c in range(count)]).heatmap
        inside = (heatmaps * masks[n]).sum((1, 2))
        out.append(inside / inside.abs().sum())
    return out


# -- the atlas ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalization", ["abs", "signed"])
def test_atlas_equals_plain_loop(skip64, digits64, normalization):
    inputs, labels = digits64
    attributor = Attributor(skip64, composite())
    atlas = concept_atlas(
        attributor, Labelled(inputs, labels), SKIP_LAYERS, k=2, batch_size=3, normalization=normalization
    )
    assert atlas.targets == tuple(labels) and atlas.k == 2 and not atlas.regional and atlas.region is None
    assert atlas.class_counts == {0: 2, 1: 2, 2: 3}
    all_shares = plain_shares(attributor, inputs, labels, SKIP_LAYERS, normalization)
    for layer in SKIP_LAYERS:
        shares = all_shares[layer]
        ballots = [hand_ballot(s, 2) for s in shares]
        assert atlas.n_concepts[layer] == len(shares[0])
        assert [[c for c in row if c >= 0] for row in atlas.ballots[layer].tolist()] == ballots
        assert_entries(atlas.entries[layer], hand_entries(ballots, shares, len(shares[0])))
        for label in (0, 1, 2):
            members = [n for n in range(len(labels)) if labels[n] == label]
            expected = hand_entries([ballots[n] for n in members], [shares[n] for n in members], len(shares[0]))
            assert_entries(atlas.class_entries[layer][label], expected)
        # derived views agree with the entries
        votes = atlas.votes(layer)
        assert votes.sum() == sum(len(b) for b in ballots)
        assert atlas.top(layer, 1) == [atlas.entries[layer][0].concept]
        concept = atlas.entries[layer][0].concept
        assert atlas.voters(layer, concept) == [n for n, ballot in enumerate(ballots) if concept in ballot]


def test_prediction_targets_use_the_argmax(conv_net, images):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    atlas = concept_atlas(attributor, images, ["2", "5"], targets="prediction", k=3)
    assert list(atlas.targets) == conv_net(images).argmax(1).tolist()
    auto = concept_atlas(attributor, images, ["2", "5"], k=3)  # a tensor has no labels: auto means prediction
    assert auto.targets == atlas.targets
    assert auto.to_dict() == atlas.to_dict()


def test_explicit_targets_and_data_loader(skip64, digits64):
    inputs, labels = digits64
    attributor = Attributor(skip64, composite())
    chosen = [1, 1, 0, 2, 2, 0, 1]
    loader = torch.utils.data.DataLoader(Labelled(inputs, labels), batch_size=4, shuffle=False)
    atlas = concept_atlas(attributor, loader, ["conv2"], targets=chosen, k=1, batch_size=2)
    assert atlas.targets == tuple(chosen)
    shares = plain_shares(attributor, inputs, chosen, ["conv2"])["conv2"]
    ballots = [hand_ballot(s, 1) for s in shares]
    assert_entries(atlas.entries["conv2"], hand_entries(ballots, shares, 4))
    by_tensor = concept_atlas(attributor, inputs, ["conv2"], targets=torch.tensor(chosen), k=1, batch_size=2)
    assert by_tensor.to_dict() == atlas.to_dict()


@pytest.mark.parametrize("kind", ["square", "per_sample"])
def test_regional_votes_equal_brute_force(skip64, digits64, kind):
    inputs, labels = digits64
    attributor = Attributor(skip64, composite())
    data, layers = Labelled(inputs, labels), ["conv2", "parallel.0"]
    if kind == "square":
        region, masks = centre_square(6), [centre_square(6)(inputs)] * len(labels)
    else:
        generator = torch.Generator().manual_seed(4)
        region = (torch.rand(len(labels), 16, 16, generator=generator) > 0.5).double()
        masks = list(region)
    atlas = concept_atlas(attributor, data, layers, k=2, region=region, batch_size=4)
    assert atlas.regional
    assert atlas.region == ("CentreSquare(size=6)" if kind == "square" else "per-sample masks of shape (7, 16, 16)")
    for layer in layers:
        shares = regional_shares(attributor, inputs, labels, layer, masks)
        ballots = [hand_ballot(s, 2) for s in shares]
        assert [[c for c in row if c >= 0] for row in atlas.ballots[layer].tolist()] == ballots
        expected = hand_entries(ballots, shares, len(shares[0]))
        assert [(e.concept, e.votes) for e in atlas.entries[layer]] == [(r[0], r[1]) for r in expected]
        for entry, row in zip(atlas.entries[layer], expected, strict=True):
            assert entry.mean_share == pytest.approx(row[2], rel=1e-6, abs=1e-9)
            assert entry.voter_share == pytest.approx(row[3], rel=1e-6, abs=1e-9)
    if kind == "square":  # the same region as one (H, W) tensor, or one per sample
        as_mask = concept_atlas(attributor, data, layers, k=2, region=masks[0], batch_size=4)
        per_sample = concept_atlas(attributor, data, layers, k=2, region=torch.stack(masks), batch_size=4)
        as_dicts = [{**a.to_dict(), "region": None} for a in (as_mask, per_sample, atlas)]
        assert as_dicts[0] == as_dicts[1] == as_dicts[2]
        assert per_sample.region == "per-sample masks of shape (7, 16, 16)"


def test_regional_and_vote_only_atlases_load_back(conv_net, images, tmp_path):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    regional = concept_atlas(attributor, images, ["5", "8"], k=3, region=centre_square(4), progress=False)
    loaded = ConceptAtlas.from_json(regional.to_json())
    assert loaded.region == regional.region == "CentreSquare(size=4)" and loaded.to_dict() == regional.to_dict()
    votes = ConceptAtlas.from_votes({"conv": [3, 1, 0, 0]}, k=2)
    again = ConceptAtlas.from_dict(json.loads(votes.to_json()))
    assert again.to_dict() == votes.to_dict() and again.ballots["conv"].shape == (0, 2)
    with pytest.raises(InputError, match="to_dict's form"):
        ConceptAtlas.from_dict({"layers": ["conv"]})


def test_centre_square_mask():
    assert centre_square(2)(torch.zeros(2, 3, 4, 4)).tolist() == [
        [0, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
    ]
    odd = centre_square(3)(torch.zeros(1, 1, 5, 6))
    assert odd.shape == (5, 6) and odd.sum() == 9
    assert odd[1:4, 1:4].sum() == 9  # (5 - 3) // 2 = 1 rows above, (6 - 3) // 2 = 1 column left
    assert centre_square(5)(torch.zeros(1, 1, 5, 5)).sum() == 25
    with pytest.raises(InputError, match="does not fit"):
        centre_square(6)(torch.zeros(1, 1, 5, 8))
    for size in (0, -1, 2.5):
        with pytest.raises(ValueError, match="positive number of pixels"):
            centre_square(size)  # type: ignore[arg-type]


# -- agreement ------------------------------------------------------------------------------------------------------


def test_agreement_on_hand_made_atlases():
    first = ConceptAtlas.from_votes({"a": [5, 3, 2, 0, 0], "b": [1, 1, 0]}, k=2)
    second = ConceptAtlas.from_votes({"a": [0, 4, 4, 2, 0], "b": [2, 2, 0]}, k=2)
    scores = first.agreement(second)
    # layer a: tops {0, 1} and {1, 2} (tie 4-4 broken by id): 1 shared of 3
    assert scores["a"]["jaccard"] == pytest.approx(1 / 3)
    # votes as distributions: (.5, .3, .2, 0, 0) and (0, .4, .4, .2, 0): min-sum 0 + .3 + .2 + 0 + 0
    assert scores["a"]["vote_overlap"] == pytest.approx(0.5)
    # ranks (5, 4, 3, 1.5, 1.5) and (1.5, 4.5, 4.5, 3, 1.5); centred (2, 1, 0, -1.5, -1.5), (-1.5, 1.5, 1.5, 0, -1.5)
    # products sum -3 + 1.5 + 0 + 0 + 2.25 = 0.75; norms sqrt(4 + 1 + 0 + 2.25 + 2.25) and sqrt(4 * 2.25)
    assert scores["a"]["rank_correlation"] == pytest.approx(0.75 / math.sqrt(9.5 * 9))
    # layer b: same top set, proportional votes; ranks equal
    assert scores["b"] == {"jaccard": 1.0, "vote_overlap": pytest.approx(1.0), "rank_correlation": pytest.approx(1.0)}
    assert first.agreement(second, top=1)["a"]["jaccard"] == 0.0  # {0} against {1}
    assert first.agreement(first)["a"] == {"jaccard": 1.0, "vote_overlap": 1.0, "rank_correlation": 1.0}
    flat = ConceptAtlas.from_votes({"a": [1, 1, 1, 1, 1]})
    assert math.isnan(first.agreement(flat)["a"]["rank_correlation"])
    empty = ConceptAtlas.from_votes({"a": [0, 0, 0, 0, 0]})
    assert empty.agreement(empty)["a"]["jaccard"] == 1.0 and empty.agreement(first)["a"]["vote_overlap"] == 0.0
    with pytest.raises(InputError, match="share no layer"):
        first.agreement(ConceptAtlas.from_votes({"c": [1]}))
    with pytest.raises(InputError, match="concepts in one atlas"):
        first.agreement(ConceptAtlas.from_votes({"a": [1, 2]}))


def test_agreement_of_a_regional_and_the_global_atlas(conv_net, images):
    """Agreement runs on computed atlases too: scores in range, and an atlas agrees fully with itself."""
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    overall = concept_atlas(attributor, images, ["5"], k=2)
    regional = concept_atlas(attributor, images, ["5"], k=2, region=torch.ones(8, 8))
    scores = overall.agreement(regional)["5"]
    assert set(scores) == {"jaccard", "vote_overlap", "rank_correlation"}
    assert 0.0 <= scores["jaccard"] <= 1.0 and 0.0 <= scores["vote_overlap"] <= 1.0
    assert regional.agreement(regional)["5"] == {
        "jaccard": 1.0,
        "vote_overlap": pytest.approx(1.0),
        "rank_correlation": pytest.approx(1.0),
    }


# -- fragmentation --------------------------------------------------------------------------------------------------


def hand_fragment(attributor, inputs, targets, layer, concept, lower, samples):
    """Mean over ``samples`` of each lower concept's share of the concept's relevance, all lower layers together."""
    total = None
    for n in samples:
        result = attributor(inputs[n : n + 1], {layer: [concept], "y": [targets[n]]}, record=lower, heatmap=False)
        relevance = torch.cat([ChannelConcept().relevance(result.relevances[name])[0] for name in lower])
        scale = relevance.abs().sum()
        shares = relevance / scale if scale > 0 else relevance  # no relevance: all shares 0
        total = shares if total is None else total + shares
    assert total is not None
    return total / len(samples)


def test_fragment_equals_brute_force(skip64, digits64):
    inputs, labels = digits64
    attributor = Attributor(skip64, composite())
    result = fragment(attributor, Labelled(inputs, labels), "linear1", 1, k=4, batch_size=3)  # 0 on 4 samples
    assert result.lower_layers == ("conv2", "parallel.0")  # traced: both branches feed linear1, in forward order
    expected = hand_fragment(attributor, inputs, labels, "linear1", 1, list(result.lower_layers), range(7))
    owners = [(name, c) for name in result.lower_layers for c in range(4)]
    ranked = sorted(range(len(owners)), key=lambda i: (-float(expected[i]), i))[:4]
    assert [(p.layer, p.concept) for p in result.parts] == [owners[i] for i in ranked]
    for part, i in zip(result.parts, ranked, strict=True):
        assert part.mean_share == pytest.approx(float(expected[i]), rel=1e-9, abs=1e-12)
    assert result.layer_shares["conv2"] == pytest.approx(float(expected[:4].sum()))
    assert result.layer_shares["parallel.0"] == pytest.approx(float(expected[4:].sum()))
    assert result.n_samples == 7
    assert Fragmentation.from_dict(json.loads(json.dumps(result.to_dict()))) == result

    # explicit lower layers, predictions as targets
    predicted = skip64(inputs).argmax(1).tolist()
    own = fragment(attributor, inputs, "conv2", 1, lower_layers=["conv1"], k=2)
    expected = hand_fragment(attributor, inputs, predicted, "conv2", 1, ["conv1"], range(7))
    assert [p.concept for p in own.parts] == sorted(range(4), key=lambda c: (-float(expected[c]), c))[:2]
    assert own.parts[0].mean_share == pytest.approx(float(expected.max()))


def test_fragment_atlas_uses_each_concepts_voters(skip64, digits64):
    inputs, labels = digits64
    attributor = Attributor(skip64, composite())
    data = Labelled(inputs, labels)
    atlas = concept_atlas(attributor, data, ["conv2"], k=2)
    fragments = fragment_atlas(attributor, data, atlas, "conv2", top=3, k=3, batch_size=4)
    assert list(fragments) == atlas.top("conv2", 3)
    for concept, result in fragments.items():
        voters = atlas.voters("conv2", concept)
        assert result.n_samples == len(voters) and result.lower_layers == ("conv1",)
        expected = hand_fragment(attributor, inputs, labels, "conv2", concept, ["conv1"], voters)
        assert [p.concept for p in result.parts] == sorted(range(4), key=lambda c: (-float(expected[c]), c))[:3]
        for part in result.parts:
            assert part.mean_share == pytest.approx(float(expected[part.concept]), rel=1e-9, abs=1e-12)
    with pytest.raises(InputError, match="atlas's own data"):
        fragment_atlas(attributor, Labelled(inputs[:3], labels[:3]), atlas, "conv2")


# -- references and pictures ----------------------------------------------------------------------------------------


def test_references_thumbnails_figure_and_json(skip_net, tmp_path):
    generator = torch.Generator().manual_seed(6)
    inputs = torch.rand(12, 1, 16, 16, generator=generator)
    data = Labelled(inputs, [n % 3 for n in range(12)])
    attributor = Attributor(skip_net, composite())
    index = build_index(skip_net, composite(), data, ["conv2"], tmp_path / "index", k=4, batch_size=4, progress=False)
    atlas = concept_atlas(attributor, data, ["conv2", "linear1"], k=2, index=index, references=3)
    assert (
        atlas.to_dict()
        == concept_atlas(attributor, data, ["conv2", "linear1"], k=2).with_references(index, 3).to_dict()
    )
    for entry in atlas.entries["conv2"]:
        assert entry.references == tuple(index.samples("conv2", entry.concept, "relmax_sum", 3)[0])
    for label, group in atlas.class_entries["conv2"].items():
        for entry in group:
            assert entry.references == tuple(index.class_samples("conv2", entry.concept, label, 3)[0])
    assert all(entry.references == () for entry in atlas.entries["linear1"])  # not indexed
    restored = json.loads(json.dumps(atlas.to_dict()))
    assert restored["entries"]["conv2"][0]["references"] == list(atlas.entries["conv2"][0].references)
    assert restored["class_counts"] == {"0": 4, "1": 4, "2": 4}
    loaded = ConceptAtlas.from_json(atlas.to_json(tmp_path / "atlas.json"))
    assert loaded.to_dict() == atlas.to_dict()
    assert loaded.entries == atlas.entries and loaded.class_entries == atlas.class_entries  # references included
    assert all(torch.equal(loaded.ballots[layer], atlas.ballots[layer]) for layer in atlas.layers)
    assert loaded.agreement(atlas)["conv2"]["jaccard"] == 1.0

    thumbnails = atlas_thumbnails(atlas, index, data, attributor, top=3, n=4, size=16)
    assert set(thumbnails) == {("conv2", c) for c in atlas.top("conv2", 3)}
    assert all(isinstance(picture, Image.Image) for picture in thumbnails.values())

    pytest.importorskip("matplotlib")
    figure = atlas_figure(atlas, top=3, thumbnails=thumbnails)
    assert len(figure.axes) == 2 + len(thumbnails)  # one bar chart per layer, one picture per thumbnail
    class_figure = atlas_figure(atlas, ["linear1"], top=4, target=1, class_names=["a", "b", "c"])
    assert len(class_figure.axes) == 1 and "class 1 (b)" in class_figure.texts[0].get_text()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    assert Image.open(buffer).size[0] > 300


# -- errors and side effects ----------------------------------------------------------------------------------------


def model_state(model: torch.nn.Module) -> dict:
    return {
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "forward": [m.__dict__.get("forward") for m in model.modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
    }


def assert_unchanged(before: dict, model: torch.nn.Module) -> None:
    after = model_state(model)
    for key in ("hooks", "requires_grad", "grads", "training", "forward"):
        assert before[key] == after[key], key
    for name, value in before["state"].items():
        assert torch.equal(value, after["state"][name]), name


def test_bad_inputs_raise_clear_errors(skip_net, digits):
    attributor = Attributor(skip_net, composite())
    with pytest.raises(LayerError, match="no layer named 'conv3'"):
        concept_atlas(attributor, digits, ["conv3"])
    with pytest.raises(InputError, match="no layers"):
        concept_atlas(attributor, digits, [])
    with pytest.raises(ValueError, match="k must be a positive number"):
        concept_atlas(attributor, digits, ["conv2"], k=0)
    with pytest.raises(InputError, match=r"\(H, W\) mask for all samples or one per sample \(3, H, W\)"):
        concept_atlas(attributor, digits, ["conv2"], region=torch.ones(2, 16, 16))
    with pytest.raises(InputError, match=r"spatial shape is \(16, 16\)"):
        concept_atlas(attributor, digits, ["conv2"], region=torch.ones(8, 8))
    with pytest.raises(InputError, match="needs labelled data"):
        concept_atlas(attributor, digits, ["conv2"], targets="label")
    with pytest.raises(InputError, match="one output unit"):
        concept_atlas(attributor, digits, ["conv2"], targets=[0, 1])
    with pytest.raises(ValueError, match="targets must be"):
        concept_atlas(attributor, digits, ["conv2"], targets="labels")
    with pytest.raises(ValueError, match="normalization"):
        concept_atlas(attributor, digits, ["conv2"], normalization="max")
    with pytest.raises(InputError, match="tensor of inputs"):
        concept_atlas(attributor, object(), ["conv2"])
    with pytest.raises(InputError, match="no samples"):
        concept_atlas(attributor, digits[:0], ["conv2"])
    with pytest.raises(InputError, match="must be floating point"):
        concept_atlas(attributor, (digits * 255).to(torch.uint8), ["conv2"])
    with pytest.raises(ConditionError, match="reads the input directly"):
        fragment(attributor, digits, "conv1", 0)
    with pytest.raises(ConditionError, match="runs after"):
        fragment(attributor, digits, "conv1", 0, lower_layers=["conv2"])
    with pytest.raises(InputError, match="itself"):
        fragment(attributor, digits, "conv2", 0, lower_layers=["conv2"])
    atlas = concept_atlas(attributor, digits, ["conv2"], k=1)
    with pytest.raises(LayerError, match="no layer 'conv1'"):
        atlas.top("conv1")
    with pytest.raises(InputError, match="no sample has target"):
        atlas.layer_entries("conv2", target=9)


def test_model_unchanged_after_an_exception(skip_net, digits):
    before = model_state(skip_net)
    attributor = Attributor(skip_net, composite())

    def wrong_region(inputs: torch.Tensor) -> torch.Tensor:
        return torch.ones(5, 5)

    with pytest.raises(InputError, match="region mask has shape"):  # raised inside the attached session
        concept_atlas(attributor, digits, ["conv2"], region=wrong_region)
    assert_unchanged(before, skip_net)
    with pytest.raises(TargetError, match="out of range"):
        concept_atlas(attributor, digits, ["conv2"], targets=[0, 1, 7])
    assert_unchanged(before, skip_net)
    with pytest.raises(TargetError, match="out of range"):
        fragment(attributor, digits, "conv2", 0, targets=[7, 7, 7])
    assert_unchanged(before, skip_net)
    concept_atlas(attributor, digits, SKIP_LAYERS, region=centre_square(4))
    assert_unchanged(before, skip_net)
