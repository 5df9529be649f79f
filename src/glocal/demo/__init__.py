"""The demo behind ``make demo`` (``python -m glocal.demo --out demo-output``): see :mod:`glocal.demo.mobilenet`."""

from .mobilenet import composite, load_model, load_photos, main, normalise, run

__all__ = ["composite", "load_model", "load_photos", "main", "normalise", "run"]
