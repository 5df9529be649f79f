"""write_report writes one self-contained page atomically, and escapes every user text."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from glocal.errors import InputError
from glocal.report import render_page, render_section, write_report
from glocal.report import write as write_module


def test_the_page_is_self_contained_and_states_its_size(mnist_report, tmp_path: Path) -> None:
    path = write_report([mnist_report.report], tmp_path / "out" / "report.html", title="digits & <models>")
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size == len(text.encode("utf-8"))
    assert f"({path.stat().st_size} bytes)" in text
    assert "<title>digits &amp; &lt;models&gt;</title>" in text
    sources = re.findall(r'(?:src|href)="([^"#][^"]*)"', text)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as open() makes files: readable by others to share


def test_a_class_name_with_a_script_tag_is_text(mnist_report) -> None:
    html = render_section(mnist_report.report)
    assert "<script>window.hacked" not in html
    assert "&lt;script&gt;window.hacked = 1&lt;/script&gt;" in html


def test_sections_get_distinct_ids(mnist_report) -> None:
    page = render_page([mnist_report.report, mnist_report.report], "two")
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids)) and "s1-card-0" in ids


def test_nothing_is_left_when_writing_fails(mnist_report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("the old report")

    def fail(source: str, destination: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(write_module.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_report(mnist_report.report, target)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert target.read_text() == "the old report"


def test_bad_sections_and_paths(mnist_report, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="a ModelReport or a non-empty sequence"):
        write_report([], tmp_path / "r.html")
    with pytest.raises(InputError, match="is a folder"):
        write_report(mnist_report.report, tmp_path)
    assert list(tmp_path.iterdir()) == []
