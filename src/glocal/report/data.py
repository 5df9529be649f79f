"""What a report shows, as plain data: :class:`ModelReport` and the frozen dataclasses it is made of.

Pictures are PNG bytes (already downscaled to the size they are shown at); :meth:`ModelReport.to_dict` turns them into
base64 strings, so a report section is one JSON document that a page (:mod:`glocal.report.view`) or a server renders.
"""

from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Analysis",
    "AtlasBar",
    "AtlasLayer",
    "Chart",
    "ClassScore",
    "ConceptCard",
    "ConceptUse",
    "GraphData",
    "GraphEdgeData",
    "GraphNodeData",
    "ImageReport",
    "LayerConcepts",
    "ModelReport",
    "Picture",
    "ReferenceSet",
    "Series",
    "Table",
]


@dataclass(frozen=True)
class ClassScore:
    """A class with a score: a prediction (``score`` is the softmax probability) or a class statistic (``score`` is
    the concept's mean relevance on the class's samples)."""

    label: int
    name: str
    score: float


@dataclass(frozen=True)
class ReferenceSet:
    """A concept's reference samples in one mode (``"relmax"`` or ``"actmax"``): receptive-field crops with the
    irrelevant part faded, as :func:`glocal.concept_references` renders them."""

    mode: str
    sample_ids: tuple[int, ...]
    scores: tuple[float, ...]
    images: tuple[bytes, ...]


@dataclass(frozen=True)
class ConceptCard:
    """What the dataset says about one concept: its references and the classes that use it most."""

    layer: str
    concept: int
    relmax: ReferenceSet | None
    actmax: ReferenceSet | None
    classes: tuple[ClassScore, ...]

    @property
    def key(self) -> str:
        """``"layer:concept"``, the concept's id in the report."""
        return f"{self.layer}:{self.concept}"


@dataclass(frozen=True)
class ConceptUse:
    """One of an image's top concepts of a layer: its relevance share and its conditional heatmap."""

    layer: str
    concept: int
    share: float
    relevance: float
    heatmap: bytes

    @property
    def key(self) -> str:
        """``"layer:concept"``, the key of its :class:`ConceptCard` (when the report has one)."""
        return f"{self.layer}:{self.concept}"


@dataclass(frozen=True)
class LayerConcepts:
    """An image's top concepts of one layer, most relevant first."""

    layer: str
    concepts: tuple[ConceptUse, ...]


@dataclass(frozen=True)
class GraphNodeData:
    """A node of an attribution graph (see :class:`glocal.ConceptGraph`), with its conditional heatmap."""

    id: str
    layer: str
    concept: int
    depth: int
    parent: str | None
    relevance: float
    share_of_root: float
    heatmap: bytes | None


@dataclass(frozen=True)
class GraphEdgeData:
    """An edge: the relevance flowing from ``child`` into ``parent``, and its share of the parent's."""

    child: str
    parent: str
    relevance: float
    share: float


@dataclass(frozen=True)
class GraphData:
    """The attribution graph of an image's top concept of a layer."""

    root: str
    target: int
    widths: tuple[int, ...]
    nodes: tuple[GraphNodeData, ...]
    edges: tuple[GraphEdgeData, ...]


@dataclass(frozen=True)
class ImageReport:
    """One input image: picture, prediction, plain heatmap, top concepts per layer and attribution graph."""

    number: int
    picture: bytes
    target: int
    target_name: str
    predictions: tuple[ClassScore, ...]
    heatmap: bytes
    layers: tuple[LayerConcepts, ...]
    graph: GraphData | None


@dataclass(frozen=True)
class AtlasBar:
    """An atlas entry: a concept's votes and shares, with a thumbnail of its references when an index was given."""

    concept: int
    votes: int
    mean_share: float
    voter_share: float
    thumbnail: bytes | None


@dataclass(frozen=True)
class AtlasLayer:
    """The atlas entries of one layer, most votes first."""

    layer: str
    n_concepts: int
    bars: tuple[AtlasBar, ...]


@dataclass(frozen=True)
class Series:
    """One line of a :class:`Chart`: ``y`` against ``x``, with an optional band from ``low`` to ``high`` (e.g. the
    spread of random baselines)."""

    name: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Chart:
    """A line chart: several series over one x axis (e.g. accuracy against pruning rate, one line per criterion)."""

    title: str
    x_label: str
    y_label: str
    series: tuple[Series, ...]


@dataclass(frozen=True)
class Table:
    """A table of text cells; ``numeric`` marks the columns that are right-aligned numbers."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...] = ()


@dataclass(frozen=True)
class Picture:
    """A drawn figure shown as it is (e.g. a part graph): PNG bytes, a caption and the text read out in its place."""

    title: str
    png: bytes
    alt: str


@dataclass(frozen=True)
class Analysis:
    """A part of a section that shows a model-wide analysis (pruning curves, concept flipping, diagnostics, part
    graphs): a paragraph saying what was measured and how to read it, then charts, pictures and tables (made by
    :mod:`glocal.report.analyses` and :mod:`glocal.report.parts`)."""

    title: str
    text: str
    charts: tuple[Chart, ...] = ()
    tables: tuple[Table, ...] = ()
    pictures: tuple[Picture, ...] = ()


@dataclass(frozen=True)
class ModelReport:
    """One model's section of a report (see :func:`glocal.report.build_report`).

    Attributes
    ----------
    name, description
        The section's title and a paragraph below it.
    images
        One entry per input image.
    concepts
        A card per concept shown anywhere in the section that the index has (references, class statistics), keyed
        by ``"layer:concept"``; empty without an index.
    atlas
        The atlas layers (empty without an atlas), with ``atlas_samples`` samples and ``atlas_k`` votes per ballot.
    notes
        What was left out and why (a layer the index lacks, the size budget), shown in the section.
    analyses
        Model-wide analyses shown after the atlas: pruning curves, concept flipping, diagnostics.
    """

    name: str
    description: str
    images: tuple[ImageReport, ...]
    concepts: dict[str, ConceptCard]
    atlas: tuple[AtlasLayer, ...] = ()
    atlas_samples: int = 0
    atlas_k: int = 0
    notes: tuple[str, ...] = ()
    analyses: tuple[Analysis, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The section as JSON-serialisable values; pictures become base64-encoded PNG strings."""
        return _plain(dataclasses.asdict(self))

    @property
    def picture_bytes(self) -> int:
        """The size of all pictures in the section, in bytes of PNG."""
        total = 0

        def count(value: Any) -> None:
            nonlocal total
            if isinstance(value, bytes):
                total += len(value)
            elif isinstance(value, dict):
                for item in value.values():
                    count(item)
            elif isinstance(value, list | tuple):
                for item in value:
                    count(item)

        count(dataclasses.asdict(self))
        return total


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value
