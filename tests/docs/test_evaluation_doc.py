"""The python blocks of docs/evaluation.md run as written, in order, on the pretrained MNIST CNN and 8 real digits."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from real_models import mnist_cnn, mnist_digits

DOC = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"


def test_evaluation_doc_blocks_run(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)  # the first block saves flipping.png
    names = {"model": mnist_cnn(), "images": mnist_digits(8)[0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a concept without positive relevance on a digit warns (nan areas)
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), names)
    assert (tmp_path / "flipping.png").stat().st_size > 10_000
    assert names["result"].channels == 64 and len(names["deletion"].concepts) == 2
