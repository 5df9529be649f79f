"""Concept paths equal plain loops; bad paths raise; results round-trip through JSON and draw."""

from __future__ import annotations

import pytest
import torch
from zennit.composites import EpsilonPlus, EpsilonPlusFlat

from glocal import Attributor
from glocal.errors import InputError
from glocal.structure.paths import ConceptPath, concept_path


def _relevances(attributor, sample, condition, layer):
    relevance = attributor(sample, condition, record=[layer], heatmap=False).relevances[layer][0]
    return relevance.flatten(1).sum(1).double() if relevance.dim() > 1 else relevance.double()


def test_steps_equal_plain_loops(conv_net, images):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    sample, target = images[:1], 1
    top = int(_relevances(attributor, sample, {"y": [target]}, "8").argmax())
    path = concept_path(attributor, sample, [("8", top)], target=target, k=3, follow=2)
    assert [step.layer for step in path.steps] == ["8", "5", "2"]
    assert [step.followed for step in path.steps] == [False, True, True]
    layers = {"8": "5", "5": "2", "2": "0"}
    for index, step in enumerate(path.steps):
        above = {layer: [c] for layer, c in path.chain[:index]}
        condition = {"y": [target], **above, step.layer: [step.concept]}
        torch.testing.assert_close(step.heatmap, attributor(sample, condition).heatmap[0])
        arriving = _relevances(attributor, sample, {"y": [target], **above}, step.layer)
        assert step.relevance == pytest.approx(float(arriving[step.concept]), rel=1e-5, abs=1e-8)
        lower = _relevances(attributor, sample, condition, layers[step.layer])
        ranked = [c for c in lower.argsort(descending=True, stable=True).tolist() if lower[c] != 0][:3]
        assert [c.concept for c in step.candidates] == ranked  # concepts without relevance are no candidates
        assert [c.relevance for c in step.candidates] == pytest.approx([float(lower[c]) for c in ranked])
        if index + 1 < len(path.steps):  # followed: the most relevant candidate
            assert path.chain[index + 1] == (step.candidates[0].layer, step.candidates[0].concept)
    share = path.steps[1].relevance / path.steps[0].relevance
    assert path.steps[1].share == pytest.approx(share)


def test_text_paths_and_bad_paths(skip_net, digits):
    attributor = Attributor(skip_net, EpsilonPlus())
    path = concept_path(attributor, digits[:1], "linear1:3 -> conv2:1", target=0, k=2)
    assert str(path) == "linear1:3 -> conv2:1" and len(path.steps[1].candidates) == 2
    assert all(c.layer == "conv1" for c in path.steps[1].candidates)
    assert {c.layer for c in path.steps[0].candidates} <= {"conv2", "parallel.0"}
    with pytest.raises(InputError, match="does not feed"):
        concept_path(attributor, digits[:1], "conv2:1 -> linear1:3")
    with pytest.raises(InputError, match="does not feed"):
        concept_path(attributor, digits[:1], "conv2:1 -> parallel.0:0")  # parallel branches


def test_path_figure(conv_net, images, tmp_path):
    pytest.importorskip("matplotlib")
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    path = concept_path(attributor, images[:1], "8:2", follow=2)
    figure = path.figure(inputs=images[:1])
    figure.savefig(tmp_path / "path.png")
    assert len(figure.axes) == 4 and (tmp_path / "path.png").stat().st_size > 1000


def test_a_step_that_skips_layers_has_its_conditional_relevance(conv_net, images):
    """A path may jump over layers (here 8 -> 2, past 5): the step's relevance is still R(2:c | 8:c0)."""
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    sample = images[:1]
    top = int(_relevances(attributor, sample, {"y": [1]}, "8").argmax())
    low = int(_relevances(attributor, sample, {"y": [1], "8": [top]}, "2").argmax())
    path = concept_path(attributor, sample, [("8", top), ("2", low)], target=1, k=2)
    expected = _relevances(attributor, sample, {"y": [1], "8": [top]}, "2")[low]
    assert path.steps[1].relevance == pytest.approx(float(expected), rel=1e-5)
    assert path.steps[1].share == pytest.approx(float(expected) / path.steps[0].relevance, rel=1e-5)
    assert [c.layer for c in path.steps[1].candidates] == ["0", "0"]


def test_json_round_trip_with_and_without_heatmaps(conv_net, images, tmp_path):
    attributor = Attributor(conv_net, EpsilonPlusFlat())
    path = concept_path(attributor, images[:1], [("8", 3)], target=1, k=3, follow=2, candidate_heatmaps=True)
    loaded = ConceptPath.from_json(path.to_json(tmp_path / "path.json", heatmaps=True))
    assert loaded == path and str(loaded) == str(path)  # every step and candidate value (heatmaps below)
    for ours, theirs in zip(loaded.steps, path.steps, strict=True):
        torch.testing.assert_close(ours.heatmap, theirs.heatmap, rtol=0, atol=0)
        for mine, other in zip(ours.candidates, theirs.candidates, strict=True):
            assert other.heatmap is not None
            torch.testing.assert_close(mine.heatmap, other.heatmap, rtol=0, atol=0)
    plain = ConceptPath.from_json(path.to_json())  # heatmaps are left out by default
    assert plain == path and all(step.heatmap is None for step in plain.steps)
    plain.figure()  # drawn with empty boxes where heatmaps were not saved
    with pytest.raises(InputError, match="to_dict's form"):
        ConceptPath.from_dict({"target": 1})


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.conv(x))


def test_a_path_from_a_block_follows_the_blocks_outputs():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), _Block(), _Block(), torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 2)
    ).eval()
    attributor = Attributor(model, EpsilonPlus())
    sample = torch.rand(1, 1, 8, 8)
    top = int(_relevances(attributor, sample, {"y": [1]}, "2").argmax())
    path = concept_path(attributor, sample, [("2", top)], target=1, k=2, follow=2, progress=False)
    assert [step.layer for step in path.steps] == ["2", "1", "0"]  # block, block, the conv before them
    below = _relevances(attributor, sample, {"y": [1], "2": [top]}, "1")
    assert path.steps[1].relevance == pytest.approx(float(below.max()), rel=1e-5)
