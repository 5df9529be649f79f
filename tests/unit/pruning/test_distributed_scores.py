"""Channel scores under torch.distributed (two gloo processes) equal one process's, bit for bit."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing
from zennit.composites import EpsilonPlusFlat

from glocal.pruning import channel_scores

CRITERIA = ("relevance", "taylor")


def model() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 4)
    ).eval()


def data() -> torch.utils.data.TensorDataset:
    generator = torch.Generator().manual_seed(5)
    return torch.utils.data.TensorDataset(torch.randn(23, 1, 8, 8, generator=generator), torch.arange(23) % 4)


def scores() -> dict[str, dict[str, torch.Tensor]]:
    return {
        criterion: dict(
            channel_scores(
                model(),
                data(),
                ["0", "3"],
                criterion=criterion,
                composite=EpsilonPlusFlat(),
                classes=[1, 2],
                batch_size=4,
                progress=False,
            ).scores
        )
        for criterion in CRITERIA
    }


def worker(rank: int, world: int, store: str, out: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.save(scores(), f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()
        torch.set_num_threads(threads)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_processes_score_exactly_as_one(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))  # the spawned process imports this module by name
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    alone = scores()
    out, store = str(tmp_path / "scores"), str(tmp_path / "store")
    # rank 1 in a spawned process, rank 0 here (one interpreter start fewer)
    other = torch.multiprocessing.get_context("spawn").Process(target=worker, args=(1, 2, store, out))
    other.start()
    try:
        worker(0, 2, store, out)
    finally:
        other.join(timeout=120)
    assert other.exitcode == 0
    assert not torch.distributed.is_initialized()
    for rank in range(2):
        together = torch.load(f"{out}.{rank}")
        for criterion in CRITERIA:
            for name, value in alone[criterion].items():
                assert torch.equal(together[criterion][name], value), (rank, criterion, name)
                assert float(value.abs().sum()) > 0
