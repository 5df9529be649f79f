"""The part benchmark's CNN: its layers and shapes, and that its training follows the seed (cheap settings only)."""

import torch

from part_model import part_cnn, train_part_cnn


def test_layers_keep_positions_and_classify_four_classes():
    model = part_cnn().eval()
    names = [name for name, _ in model.named_children()]
    assert names[:5] == ["conv1", "relu1", "conv2", "relu2", "pool1"] and names[-3:] == ["pool3", "flatten", "fc"]
    maps: dict[str, torch.Size] = {}
    handles = [
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: maps.__setitem__(name, o.shape))
        for name in ("conv2", "conv4", "conv5")
    ]
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 64))
    for handle in handles:
        handle.remove()
    assert logits.shape == (2, 4)
    # padding 1 keeps the maps' size; each 2 x 2 max pooling halves it
    assert maps == {"conv2": (2, 8, 64, 64), "conv4": (2, 16, 32, 32), "conv5": (2, 32, 16, 16)}


def test_training_follows_the_seed():
    threads = torch.get_num_threads()
    first, second = (train_part_cnn(seed=3, train=32, test=8, epochs=1, size=32) for _ in range(2))
    other = train_part_cnn(seed=4, train=32, test=8, epochs=1, size=32)
    assert (first.train_seed, first.test_seed) == (1003, 2003)
    assert first.accuracy == second.accuracy and 0.0 <= first.accuracy <= 1.0
    state, again, different = first.model.state_dict(), second.model.state_dict(), other.model.state_dict()
    assert all(torch.equal(state[key], again[key]) for key in state)
    assert not all(torch.equal(state[key], different[key]) for key in state)
    assert not first.model.training and torch.get_num_threads() == threads  # the thread count is restored


def test_receptive_fields_of_the_convolutions():
    from glocal.parts import ReceptiveField, receptive_field

    # 3 x 3 convs with padding 1 grow the field by 2 * stride so far and keep centres; 2 x 2 pooling doubles the stride,
    # adds stride so far to the field and moves the centre by half of it: conv1 3, conv2 5, pool1 6 (2i + 0.5),
    # conv3 10, conv4 14, pool2 16 (4i + 1.5), conv5 16 + 2 * 4 = 24
    model = part_cnn().eval()
    example = torch.zeros(1, 3, 64, 64)
    assert receptive_field(model, "conv2", example) == ReceptiveField((1.0, 1.0), (0.0, 0.0), (5, 5))
    assert receptive_field(model, "conv5", example) == ReceptiveField((4.0, 4.0), (1.5, 1.5), (24, 24))
