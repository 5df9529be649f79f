"""The demo behind ``make demo`` (``python -m glocal.demo --out demo-output``).

Two parts, each a function that returns its data (:mod:`glocal.demo.mobilenet`: a pretrained MobileNetV2 on photos,
with references from photo crops, :mod:`glocal.demo.crops`; :mod:`glocal.demo.mnist`: a pretrained MNIST CNN over
5000 real digits, with index, class statistics and atlas), and :func:`main`, which runs both, writes the PNGs and
``report.html``.
"""

from .main import main, write_demo_report
from .mnist import MnistDemo, mnist_part
from .mobilenet import MobilenetDemo, composite, load_model, load_photos, mobilenet_part, normalise, run

__all__ = [
    "MnistDemo",
    "MobilenetDemo",
    "composite",
    "load_model",
    "load_photos",
    "main",
    "mnist_part",
    "mobilenet_part",
    "normalise",
    "run",
    "write_demo_report",
]
