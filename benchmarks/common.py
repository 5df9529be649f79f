"""What every benchmark script shares: its command line, timing and memory, and its JSON-lines output.

The scripts are run as ``python benchmarks/bench_x.py``, so this folder is on ``sys.path`` and they import this
module as a sibling (``from common import ...``). Each script keeps only its own options, cases and measurements.

Output: every script prints one JSON object per line on stdout (progress goes to stderr through :func:`log`): first
the ``"machine"`` line (:func:`machine`), then one line per case (:func:`emit_rows`); ``--json-out`` also writes the
lines to a file, each as soon as its case is done.

Memory: :class:`PeakMemory` measures the growth of the process's resident set size (RSS) during a block, relative to
the RSS just before it (after ``gc.collect()`` and ``malloc_trim``): the kernel's high-water mark ``VmHWM`` (reset
through ``/proc/self/clear_refs`` before the block) where that works, and a background thread sampling
``/proc/self/statm`` every few milliseconds in any case; the larger of the two counts.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import fashion_mnist
import glocal

MB = 1024 * 1024


def log(message: str) -> None:
    """Progress for the reader: on stderr, so that stdout holds only the JSON lines."""
    print(message, file=sys.stderr, flush=True)


# -- command line ---------------------------------------------------------------------------------------------------


class Arguments(argparse.ArgumentParser):
    """An argument parser with the options the benchmark scripts share; a script adds its own with ``add_argument``
    and reads them all with :meth:`parse`.

    Parameters
    ----------
    doc : str or None
        The script's docstring; its first paragraph describes the script in ``--help``.
    cases : collection of str
        The script's case keys: adds ``--cases`` (comma-separated, default all), parsed into a list. Empty: none.
    repeats : int or None
        The default of ``--repeats`` (timed runs per side, the median is reported); ``None``: no ``--repeats``.
    quick : str or None
        What ``--quick`` (a smoke run) makes smaller, for its help; it also makes one repeat unless ``--repeats`` is
        given. ``None``: no ``--quick``.
    threads : int or None
        The default of ``--threads`` (``torch.set_num_threads``; ``None`` or 0: torch's choice).
    data_dir : bool
        Add ``--data-dir``, where the FashionMNIST files are (a :class:`~pathlib.Path`).
    """

    def __init__(
        self,
        doc: str | None,
        *,
        cases: Collection[str] = (),
        repeats: int | None = None,
        quick: str | None = None,
        threads: int | None = None,
        data_dir: bool = True,
    ) -> None:
        super().__init__(description=(doc or "").split("\n\n")[0])
        self.cases = list(cases)
        self.default_repeats = repeats
        if self.cases:
            keys = ",".join(self.cases)
            self.add_argument("--cases", default=keys, help=f"comma-separated cases among {keys} (default: all)")
        if repeats is not None:
            quick_note = ", 1 with --quick" if quick is not None and repeats != 1 else ""
            self.add_argument(
                "--repeats",
                type=int,
                default=None,
                help=f"timed runs per side (median reported; default {repeats}{quick_note})",
            )
        if quick is not None:
            self.add_argument("--quick", action="store_true", help=quick)
        choice = "default and 0: torch's choice" if not threads else f"default {threads}; 0: torch's choice"
        self.add_argument("--threads", type=int, default=threads, help=f"torch.set_num_threads ({choice})")
        if data_dir:
            self.add_argument(
                "--data-dir",
                type=Path,
                default=fashion_mnist.DATA_DIR,
                help="where fashion_cnn.pt/fashion_val.npz are",
            )
        self.add_argument("--json-out", default=None, help="also write the JSON lines to this file")

    def parse(self, argv: Sequence[str] | None = None, *, at_least_one: Iterable[str] = ()) -> argparse.Namespace:
        """Parse ``argv`` (default: the command line) and check the shared options and the integer options named in
        ``at_least_one`` (each left out, ``None``, or at least 1); a bad value exits with a usage error."""
        args = self.parse_args(argv)
        if self.cases:
            args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
            unknown = [c for c in args.cases if c not in self.cases]
            if unknown:
                self.error(f"unknown case(s) {unknown}; choose among {sorted(self.cases)}")
        if self.default_repeats is not None:
            if args.repeats is None:
                args.repeats = 1 if getattr(args, "quick", False) else self.default_repeats
            at_least_one = ["repeats", *at_least_one]
        for name in at_least_one:
            if getattr(args, name) is not None and getattr(args, name) < 1:
                self.error(f"--{name.replace('_', '-')} must be at least 1")
        if args.threads is not None and args.threads < 0:
            self.error("--threads must be 0 (torch's choice) or more")
        return args


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)``; ``None`` or 0 leaves torch's choice."""
    if threads:
        torch.set_num_threads(threads)


# -- time and memory ------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any], calls: int = 1) -> tuple[float, Any]:
    """Seconds per call of ``fn``, averaged over ``calls`` calls in a row, and the last result."""
    start = time.perf_counter()
    for _ in range(calls):
        result = fn()
    return (time.perf_counter() - start) / calls, result


def median(values: Iterable[float]) -> float:
    return float(statistics.median(values))


def rounded(values: Iterable[float], digits: int = 4) -> list[float]:
    """Each value rounded, for listing all runs in a JSON line."""
    return [round(value, digits) for value in values]


def target_fields(
    name: str, value: float, target: float, *, digits: int = 2, at_most: bool = False, meets: str | None = None
) -> dict[str, Any]:
    """A ratio and the project's goal for it, as JSON fields: ``{name: value, "target_" + name: target, meets:
    whether value reaches it}`` (at least ``target``, or at most with ``at_most``); ``meets`` defaults to
    ``"meets_" + name``."""
    reached = value <= target if at_most else value >= target
    return {name: round(value, digits), f"target_{name}": target, meets or f"meets_{name}": reached}


_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _hwm() -> int | None:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _malloc_trim() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Context manager measuring the peak RSS growth (bytes) of the process during the block: ``.growth``."""

    def __init__(self, interval: float = 0.003) -> None:
        self.interval = interval
        self.growth = 0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        _malloc_trim()
        self.base = _rss()
        self.hwm = _reset_hwm()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        if self.hwm:
            self.peak = max(self.peak, _hwm() or 0)
        self.growth = self.peak - self.base


def measure(fn: Callable[[], Any]) -> tuple[float, int, Any]:
    """Run ``fn`` once: (seconds, peak RSS growth in bytes, its result)."""
    with PeakMemory() as memory:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return seconds, memory.growth, result


# -- models and data ------------------------------------------------------------------------------------------------


class LabelledImages(torch.utils.data.Dataset):
    """``(image, int label)`` items over in-memory tensors: what both libraries read."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> None:
        self.images = images
        self.labels = labels.tolist() if isinstance(labels, torch.Tensor) else list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.labels[index]


def epsilon_plus_flat() -> Any:
    """zennit's ``EpsilonPlusFlat()``, the composite of the random torchvision models."""
    from zennit.composites import EpsilonPlusFlat

    return EpsilonPlusFlat()


# -- output ---------------------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The ``"machine"`` line: CPU, cores, memory, load, torch's threads and the versions of the libraries."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        memory_gb = round(int(f.readline().split()[1]) / 1024**2, 1)

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "machine": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)),
            "memory_gb": memory_gb,
            "load_avg": os.getloadavg()[0],
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": version("torchvision"),
            "zennit": version("zennit"),
            "zennit_crp": version("zennit-crp"),
            "glocal": glocal.__version__,
        }
    }


@contextlib.contextmanager
def json_lines(path: str | Path | None) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A function that prints a row as one JSON line on stdout and, when ``path`` is given, writes it to that file
    too (flushed at once, so the rows of finished cases survive an interrupted run)."""
    out = open(path, "w") if path else None  # noqa: SIM115 - kept open while the rows come
    try:

        def emit(row: dict[str, Any]) -> None:
            text = json.dumps(row)
            print(text, flush=True)
            if out is not None:
                out.write(text + "\n")
                out.flush()

        yield emit
    finally:
        if out is not None:
            out.close()


def emit_rows(threads: int | None, json_out: str | None, cases: Iterable[Callable[[], dict[str, Any]]]) -> None:
    """Set torch's threads, then print the machine line and one JSON line per case (the shared CLI output).

    Each case runs when its turn comes; its line gets the load average before and after it, and goes to stdout and,
    line by line as cases finish, to ``json_out``.
    """
    set_threads(threads)
    with json_lines(json_out) as emit:
        emit(machine())
        for case in cases:
            load_before = os.getloadavg()[0]
            row = case()
            row["load_avg"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            emit(row)
            gc.collect()
