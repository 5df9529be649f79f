"""Receptive fields found by probing, against fields worked out by hand; the raw-channel positions they give."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glocal.errors import GlocalWarning, InputError, LayerError
from glocal.parts import ReceptiveField, channel_positions, receptive_field


def snapshot(model: nn.Module) -> dict:
    """What a model could be left with: state, flags, gradients, hooks, dtypes."""
    return {
        "state": {key: value.clone() for key, value in model.state_dict().items()},
        "training": [module.training for module in model.modules()],
        "grad": [(parameter.requires_grad, parameter.grad) for parameter in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
    }


def assert_unchanged(before: dict, model: nn.Module) -> None:
    after = snapshot(model)
    assert before["training"] == after["training"] and before["hooks"] == after["hooks"]
    assert before["grad"] == after["grad"]
    assert before["state"].keys() == after["state"].keys()
    assert all(torch.equal(before["state"][key], after["state"][key]) for key in before["state"])
    assert all(before["state"][key].dtype == after["state"][key].dtype for key in before["state"])


def _seeded(*layers: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(*layers).eval()


def _field(model: nn.Module, layer: str, size: int = 24) -> ReceptiveField:
    return receptive_field(model, layer, torch.zeros(1, 1, size, size))


def test_valid_convolution():
    # k = 3, no padding: cell i reads input rows i, i + 1, i + 2, centred on i + 1
    assert _field(_seeded(nn.Conv2d(1, 2, 3)), "0") == ReceptiveField((1.0, 1.0), (1.0, 1.0), (3, 3))


def test_strided_padded_convolutions():
    # k = 3, stride 2, padding 1: cell i reads rows 2i - 1 .. 2i + 1, centred on 2i
    model = _seeded(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, stride=2, padding=1))
    assert _field(model, "0") == ReceptiveField((2.0, 2.0), (0.0, 0.0), (3, 3))
    # the second reads first-layer cells 2i - 1 .. 2i + 1, i.e. rows 2(2i - 1) - 1 .. 2(2i + 1) + 1 = 4i - 3 .. 4i + 3
    assert _field(model, "2") == ReceptiveField((4.0, 4.0), (0.0, 0.0), (7, 7))


def test_max_pooling_and_dilation():
    # one channel: max pooling passes gradient to one cell per window, so this needs the union over random inputs
    # conv k = 3 then 2 x 2 pooling: cell i pools conv cells 2i, 2i + 1, which read rows 2i .. 2i + 3 (centre 2i + 1.5)
    model = _seeded(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.MaxPool2d(2))
    assert _field(model, "2") == ReceptiveField((2.0, 2.0), (1.5, 1.5), (4, 4))
    # dilation 2, k = 3: rows i, i + 2, i + 4, centred on i + 2, spanning 5
    assert _field(_seeded(nn.Conv2d(1, 1, 3, dilation=2)), "0") == ReceptiveField((1.0, 1.0), (2.0, 2.0), (5, 5))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.conv = nn.Conv2d(2, 2, 3, padding=2, dilation=2)
        self.relu = nn.ReLU()
        self.out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.out(x + self.conv(self.relu(x)))


def test_residual_block_takes_the_wider_branch():
    # stem: rows 2i - 1 .. 2i + 1; the dilated branch reads stem cells i - 2 .. i + 2, i.e. rows 2i - 5 .. 2i + 5
    # (11 rows); the identity branch only the stem's 3 rows: the union is the dilated branch's
    torch.manual_seed(0)
    model = _Residual().eval()
    assert _field(model, "out") == ReceptiveField((2.0, 2.0), (0.0, 0.0), (11, 11))


def test_non_square_inputs_and_axes():
    # stride (1, 2), kernel (3, 1), no padding: rows i .. i + 2 (centre i + 1), column 2j (one column)
    model = _seeded(nn.Conv2d(2, 3, (3, 1), stride=(1, 2)))
    field = receptive_field(model, "0", torch.zeros(1, 2, 12, 20))
    assert field == ReceptiveField((1.0, 2.0), (1.0, 0.0), (3, 1))
    assert field.centres(torch.tensor([[4, 5]])).tolist() == [[5.0, 10.0]]
    assert field.to_dict() == {"scale": [1.0, 2.0], "offset": [1.0, 0.0], "size": [3, 1]}


def test_large_field_is_found_on_an_enlarged_input():
    # four valid k = 5 convs: field 17; on a 16 x 16 input no cell sees its whole field, on 32 x 32 the middle ones do
    model = _seeded(*[nn.Conv2d(1, 1, 5, padding=2) for _ in range(4)])
    assert _field(model, "3", size=16) == ReceptiveField((1.0, 1.0), (0.0, 0.0), (17, 17))


def test_fixed_size_map_falls_back_to_the_proportional_map():
    # adaptive pooling to 4 x 4 does not follow the input: (i + 0.5) * 16 / 4 - 0.5 = 4i + 1.5
    model = _seeded(nn.Conv2d(1, 1, 3, padding=1), nn.AdaptiveAvgPool2d(4))
    with pytest.warns(GlocalWarning, match="proportional"):
        field = _field(model, "1", size=16)
    assert field.scale == (4.0, 4.0) and field.offset == (1.5, 1.5)


def test_bad_layers_and_inputs():
    model = _seeded(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(LayerError, match=r"\(N, C, H, W\)"):
        receptive_field(model, "2", torch.zeros(1, 1, 8, 8))
    with pytest.raises(LayerError, match="no layer named"):
        receptive_field(model, "conv", torch.zeros(1, 1, 8, 8))
    with pytest.raises(InputError, match="example"):
        receptive_field(model, "0", torch.zeros(1, 8, 8))
    with pytest.raises(InputError, match="data"):
        channel_positions(model, torch.zeros(8, 8), "0")


def test_the_model_is_left_as_it_was():
    model = _seeded(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).train()
    model[2].requires_grad_(False)
    before = snapshot(model)
    receptive_field(model, "1", torch.zeros(1, 1, 8, 8))
    channel_positions(model, torch.rand(3, 1, 8, 8), "1")
    assert_unchanged(before, model)
    with pytest.raises(LayerError):
        channel_positions(model, torch.rand(3, 1, 8, 8), "3", field=ReceptiveField((1.0, 1.0), (0.0, 0.0), (1, 1)))
    assert_unchanged(before, model)
    assert model.training and all(p.dtype == torch.float32 for p in model.parameters())


def test_channel_positions_find_a_bright_pixel():
    # channel 0 copies the input, channel 1 its negative, through a valid 3 x 3 conv whose only weight is the centre:
    # map cell (i, j) = pixel (i + 1, j + 1), so the bright pixel's cell maps back to exactly that pixel
    conv = nn.Conv2d(1, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1, 1] = 1.0
        conv.weight[1, 0, 1, 1] = -1.0
    model = nn.Sequential(conv).eval()
    data = torch.zeros(5, 1, 10, 10)
    pixels = [(1, 1), (4, 7), (8, 2), (5, 5), (8, 8)]
    for n, (row, col) in enumerate(pixels):
        data[n, 0, row, col] = n + 1.0
    positions, scores = channel_positions(model, data, "0", batch_size=2)
    assert positions.shape == (5, 2, 2) and scores.shape == (5, 2)
    assert positions[:, 0].tolist() == [[float(r), float(c)] for r, c in pixels]
    assert scores[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    # channel 1 is -pixel: its maximum (0) is first met at cell (0, 0), pixel (1, 1), unless the bright pixel is there
    assert scores[:, 1].tolist() == [0.0] * 5
    assert positions[:, 1].tolist() == [[1.0, 2.0]] + [[1.0, 1.0]] * 4


def test_mobilenet_v2_fields():
    from real_models import mobilenet_v2

    # torchvision's MobileNetV2: every 3 x 3 conv has padding 1, so interior cells are centred on scale * i (offset 0,
    # not the proportional map's 3.5). Strides 2 at features.0, .2, .4 give scale 8 at features.6. The field grows by
    # 2 * (stride so far) per 3 x 3 conv: features.0: 3; .1: 3 + 2*2 = 7; .2 (s2): 7 + 2*2 = 11; .3: 11 + 2*4 = 19;
    # .4 (s2): 19 + 2*4 = 27; .5: 27 + 2*8 = 43; .6: 43 + 2*8 = 59 (residual branches are narrower).
    model = mobilenet_v2()
    before = snapshot(model)
    assert receptive_field(model, "features.6", torch.zeros(1, 3, 224, 224)) == ReceptiveField(
        (8.0, 8.0), (0.0, 0.0), (59, 59)
    )
    assert_unchanged(before, model)


def test_resnet_blocks():
    torchvision = pytest.importorskip("torchvision")
    # resnet18 (random weights): conv1 7 x 7 stride 2 padding 3: 7 rows centred on 2i; max pooling 3 x 3 stride 2
    # padding 1: 7 + 2 * 2 = 11, centred on 4i; layer1's four 3 x 3 convs: 11 + 4 * 2 * 4 = 43; layer2 (first conv
    # stride 2, the downsampling 1 x 1 conv keeps the centre): 43 + 2 * 4 = 51, then three more: 51 + 3 * 2 * 8 = 99
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    example = torch.zeros(1, 3, 112, 112)
    assert receptive_field(model, "layer1", example) == ReceptiveField((4.0, 4.0), (0.0, 0.0), (43, 43))
    assert receptive_field(model, "layer2", example) == ReceptiveField((8.0, 8.0), (0.0, 0.0), (99, 99))
