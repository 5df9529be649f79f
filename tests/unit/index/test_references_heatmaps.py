"""Computing references: heatmaps per mode and receptive-field boxes on a tiny net."""

from __future__ import annotations

import pytest
import torch
from two_conv_net import LAYER, SIZE, two_conv_net
from zennit.composites import EpsilonPlus, LayerMapComposite
from zennit.rules import Epsilon, Pass

from glocal import Attributor, PerSample
from glocal.index.references import receptive_field_boxes, reference_heatmaps


def _epsilon() -> LayerMapComposite:
    """LRP-epsilon everywhere: relevance is nonzero wherever input and weights are (no sign filtering as in z+)."""
    return LayerMapComposite(
        layer_map=[(torch.nn.ReLU, Pass()), (torch.nn.Conv2d, Epsilon()), (torch.nn.Linear, Epsilon())]
    )


@pytest.fixture
def data() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(4, 3, SIZE, SIZE)


TARGETS = [0, 2, 1, 2]


def test_relmax_heatmaps_equal_per_sample_engine_calls(data: torch.Tensor) -> None:
    attributor = Attributor(two_conv_net(), EpsilonPlus())
    heatmaps = reference_heatmaps(attributor, data, LAYER, 3, TARGETS, mode="relevance")
    assert heatmaps.shape == (4, SIZE, SIZE)
    for n, target in enumerate(TARGETS):
        single = attributor(data[n : n + 1], {LAYER: [3], "y": [target]}).heatmap
        assert single is not None
        torch.testing.assert_close(heatmaps[n], single[0], rtol=1e-5, atol=1e-7)
    # the target matters (relevance does not start from the activation, zennit-crp issue #11)
    other = reference_heatmaps(attributor, data, LAYER, 3, [(t + 1) % 3 for t in TARGETS], mode="relevance")
    assert not torch.allclose(heatmaps, other)


def test_actmax_heatmaps_equal_start_layer_calls(data: torch.Tensor) -> None:
    attributor = Attributor(two_conv_net(), EpsilonPlus())
    heatmaps = reference_heatmaps(attributor, data, LAYER, 1, mode="activation")
    for n in range(data.shape[0]):
        # ActMax starts from the positive part of the channel's activation (layer "1" is a conv before its ReLU)
        positive = attributor(
            data[n : n + 1], {LAYER: [1]}, start_layer=LAYER, init_rel=lambda a: a.clamp(min=0)
        ).heatmap
        assert positive is not None
        torch.testing.assert_close(heatmaps[n], positive[0], rtol=1e-5, atol=1e-7)
        raw = attributor(data[n : n + 1], {LAYER: [1]}, start_layer=LAYER).heatmap
        assert raw is not None and not torch.allclose(heatmaps[n], raw[0])
    relmax = reference_heatmaps(attributor, data, LAYER, 1, TARGETS, mode="relevance")
    assert not torch.allclose(heatmaps, relmax)


def test_relmax_needs_one_target_per_sample(data: torch.Tensor) -> None:
    attributor = Attributor(two_conv_net(), EpsilonPlus())
    with pytest.raises(ValueError, match="targets"):
        reference_heatmaps(attributor, data, LAYER, 0, mode="relevance")
    with pytest.raises(ValueError, match="one value per sample"):
        reference_heatmaps(attributor, data, LAYER, 0, [0], mode="relevance")
    with pytest.raises(ValueError, match="mode"):
        reference_heatmaps(attributor, data, LAYER, 0, TARGETS, mode="max")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["activation", "relevance"])
@pytest.mark.parametrize(("row", "column"), [(5, 6), (0, 0), (11, 4), (3, 11)])
def test_box_is_the_known_receptive_field(data: torch.Tensor, mode: str, row: int, column: int) -> None:
    # two 3x3 convs: the unit at (row, column) of layer "1" sees rows row-2..row+2 and columns column-2..column+2
    attributor = Attributor(two_conv_net(), _epsilon())
    channel = 2
    targets = TARGETS if mode == "relevance" else None
    boxes = receptive_field_boxes(
        attributor,
        data,
        LAYER,
        channel,
        [row * SIZE + column] * data.shape[0],
        targets,
        mode,  # type: ignore[arg-type]
        threshold=0.0,
        padding=0,
    )
    expected = (max(row - 2, 0), max(column - 2, 0), min(row + 3, SIZE), min(column + 3, SIZE))
    if mode == "activation":  # started from the unit's positive activation: none when the unit is not active
        with torch.no_grad():
            active = two_conv_net()[:2](data)[:, channel, row, column] > 0
        assert active.any() and not active.all()
        assert boxes == [expected if on else (0, 0, SIZE, SIZE) for on in active.tolist()]
    else:  # a unit whose ReLU is off gets no relevance: then the whole sample is kept
        assert all(box in (expected, (0, 0, SIZE, SIZE)) for box in boxes)
        assert expected in boxes


def test_box_padding_and_threshold(data: torch.Tensor) -> None:
    attributor = Attributor(two_conv_net(), _epsilon())
    positions = [5 * SIZE + 6, 1 * SIZE + 0, 11 * SIZE + 0, 3 * SIZE + 11]  # active units of channel 2
    padded = receptive_field_boxes(attributor, data, LAYER, 2, positions, mode="activation", threshold=0.0, padding=1)
    assert padded == [(2, 3, 9, 10), (0, 0, 5, 4), (8, 0, 12, 4), (0, 8, 7, 12)]
    tight = receptive_field_boxes(attributor, data, LAYER, 2, positions, mode="activation", threshold=0.5, padding=0)
    for (top, left, bottom, right), (p_top, p_left, p_bottom, p_right) in zip(tight, padded, strict=True):
        assert p_top <= top < bottom <= p_bottom and p_left <= left < right <= p_right


def test_boxes_do_not_depend_on_batching(data: torch.Tensor) -> None:
    attributor = Attributor(two_conv_net(), EpsilonPlus())
    relevance = attributor(data, {"y": PerSample([[t] for t in TARGETS])}, record=[LAYER]).relevances[LAYER]
    positions = [int(p) for p in relevance[:, 3].flatten(1).argmax(1)]  # the most relevant unit of channel 3
    for mode, targets in (("relevance", TARGETS), ("activation", None)):
        batched = receptive_field_boxes(attributor, data, LAYER, 3, positions, targets, mode)  # type: ignore[arg-type]
        single = [
            receptive_field_boxes(
                attributor,
                data[n : n + 1],
                LAYER,
                3,
                [positions[n]],
                None if targets is None else [targets[n]],
                mode,  # type: ignore[arg-type]
            )[0]
            for n in range(data.shape[0])
        ]
        assert batched == single
        assert all(bottom - top <= 5 + 4 and right - left <= 5 + 4 for top, left, bottom, right in batched)


def test_box_outside_the_map_is_an_error(data: torch.Tensor) -> None:
    attributor = Attributor(two_conv_net(), EpsilonPlus())
    with pytest.raises(ValueError, match="outside layer"):
        receptive_field_boxes(attributor, data[:1], LAYER, 0, [SIZE * SIZE], mode="activation")
