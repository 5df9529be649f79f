"""glocal.data: every form of user data gives the same batches, labels and targets."""

from __future__ import annotations

import pytest
import torch

from glocal.data import (
    DEFAULT_BATCH_SIZE,
    as_data,
    batch_targets,
    batches,
    check_targets,
    default_batch_size,
    fixed_batches,
    label_list,
    load_batches,
    load_samples,
    sample_count,
    split_sample,
)
from glocal.errors import InputError
from glocal.index.fingerprint import sample_digest

INPUTS = torch.arange(5 * 2 * 3, dtype=torch.float32).reshape(5, 2, 3)
LABELS = [4, 0, 2, 2, 1]


class Pairs(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return INPUTS[i], LABELS[i]


class Dicts(Pairs):
    def __getitem__(self, i: int) -> dict[str, object]:  # type: ignore[override]
        return {"image": INPUTS[i], "target": torch.tensor(LABELS[i])}


@pytest.mark.parametrize(
    "data",
    [Pairs(), Dicts(), torch.utils.data.DataLoader(Pairs(), batch_size=4, shuffle=True)],
    ids=["tuples", "dicts", "shuffled-loader"],
)
def test_every_labelled_form_gives_the_same_batches_in_the_dataset_order(data):
    unwrapped = as_data(data)
    got = list(batches(unwrapped, batch_size=2))
    assert [b.ids.tolist() for b in got] == [[0, 1], [2, 3], [4]]  # a shuffling loader is read in the dataset's order
    assert torch.equal(torch.cat([b.inputs for b in got]), INPUTS)
    assert [label for b in got for label in (b.labels or [])] == [[y] for y in LABELS]
    assert [b.start for b in got] == [0, 2, 4]
    assert check_targets("auto", unwrapped) == "label"


def test_a_tensor_has_no_labels_and_its_batches_are_views_in_order():
    got = list(batches(INPUTS, batch_size=3))
    assert [b.ids.tolist() for b in got] == [[0, 1, 2], [3, 4]]
    assert all(b.labels is None for b in got)
    assert check_targets("auto", INPUTS) == "prediction"
    with pytest.raises(InputError, match=r"targets=.label. needs labelled data: a dataset of .* got a tensor"):
        check_targets("label", INPUTS)


def test_labels_of_every_kind_become_class_lists():
    assert label_list(3) == [3]
    assert label_list(torch.tensor(7)) == [7]
    assert label_list([2, 5]) == [2, 5]
    assert label_list(torch.tensor([0.0, 1.0, 0.0, 1.0])) == [1, 3]  # multi-hot
    assert label_list(torch.tensor([True, False, True])) == [0, 2]
    x = INPUTS[0]
    assert [v if isinstance(v, int | None) else v is x for v in split_sample((x, 1, "extra"))] == [True, 1]
    assert [v if v is None else v is x for v in split_sample([x])] == [True, None]
    with pytest.raises(InputError, match=r"keys \['pixels'\].*'input', 'image', 'x' or 'data'"):
        split_sample({"pixels": INPUTS[0]})


def test_batch_size_comes_from_the_call_then_the_loader_then_the_default():
    loader = torch.utils.data.DataLoader(Pairs(), batch_size=4)
    assert default_batch_size(loader, 2) == 2
    assert default_batch_size(loader, None) == 4
    assert default_batch_size(Pairs(), None) == DEFAULT_BATCH_SIZE


def test_fixed_batches_split_between_ranks_cover_every_sample_once():
    everything = sorted(i for rank in range(3) for batch in fixed_batches(23, 4, rank, 3) for i in batch)
    assert everything == list(range(23))
    assert fixed_batches(10, 4, rank=1, world=2) == [[4, 5, 6, 7]]


def test_loaded_batches_carry_each_samples_digest_hashed_where_loaded():
    (batch,) = load_batches(Pairs(), [[1, 3]], digest=sample_digest)
    assert batch.digests == (sample_digest(1, Pairs()[1]), sample_digest(3, Pairs()[3]))
    (plain,) = load_batches(Pairs(), [[1, 3]])
    assert plain.digests == ()


def test_load_samples_picks_positions_from_any_form():
    inputs, labels = load_samples(torch.utils.data.DataLoader(Pairs(), shuffle=True), [4, 0])
    assert torch.equal(inputs, INPUTS[[4, 0]]) and labels == [1, 4]
    inputs, labels = load_samples(INPUTS, [2])
    assert torch.equal(inputs, INPUTS[[2]]) and labels == [None]


def test_targets_per_batch_from_labels_predictions_or_a_list():
    data = Pairs()
    (first, second) = list(batches(data, batch_size=3))
    output = torch.zeros(2, 6, 4, 4)  # a segmentation-like output: class scores summed over pixels
    output[0, 5] = 1.0
    output[1, 3] = 1.0
    assert batch_targets("label", second, output, "an atlas") == [2, 1]
    assert batch_targets("prediction", second, output, "an atlas") == [5, 3]
    assert batch_targets([0, 1, 2, 3, 4], second, output, "an atlas") == [3, 4]
    multi = type(first)(first.ids, first.inputs, [[1, 2], [0], [3]])
    with pytest.raises(InputError, match=r"several labels .* an atlas starts each sample's relevance from one target"):
        batch_targets("label", multi, output, "an atlas")


def test_bad_data_and_targets_say_what_was_expected():
    with pytest.raises(InputError, match=r"map-style dataset .* got generator"):
        as_data(x for x in range(3))
    with pytest.raises(InputError, match="no samples"):
        sample_count(INPUTS[:0])
    with pytest.raises(InputError, match="the data has 5 samples, got 2 values"):
        check_targets([1, 2], INPUTS)
    with pytest.raises(InputError, match="not all ints"):
        check_targets([1, 2, 3, 4, 0.5], INPUTS)
    with pytest.raises(ValueError, match="'auto', 'label', 'prediction'"):
        check_targets("labels", INPUTS)  # type: ignore[arg-type]
