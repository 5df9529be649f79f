"""The HTML report: one self-contained page of what a model sees and what it has learned.

:func:`build_report` computes one model's section as plain data (:class:`ModelReport`); :func:`write_report` renders
one or more sections into a single HTML file that opens from disk with no server and no network. The views
(:func:`~glocal.report.view.render_section`, :func:`~glocal.report.view.render_page`) serve a server as well.
"""

from .build import SIZES, build_report
from .data import ModelReport
from .view import BUDGET, render_page, render_section
from .write import write_report

__all__ = ["BUDGET", "SIZES", "ModelReport", "build_report", "render_page", "render_section", "write_report"]
