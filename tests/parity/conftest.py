"""Fixtures shared by the parity tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread while a module's tests run (``pytest.mark.usefixtures("one_thread")``).

    The inputs are small; on a shared two-core machine a second thread waiting for a busy core slows the tests down.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
