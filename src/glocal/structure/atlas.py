"""The concept atlas: which concepts a model uses most over a set of samples, per layer, globally and per class.

Every sample *votes* in every layer for its ``k`` concepts with the largest relevance share (see
:func:`concept_atlas`); the atlas lists the concepts that got votes, with their vote counts and mean shares, for all
samples together and for each class. With a ``region`` the votes count only the relevance that ends up inside an
input region (e.g. :func:`centre_square`), and :meth:`ConceptAtlas.agreement` says how much a regional and the global
atlas agree. :func:`fragment` decomposes a concept into the concepts of the layers that feed it, and
:func:`fragment_atlas` does so for each entry of an atlas layer. :func:`atlas_figure` draws an atlas as vote bars,
optionally with reference thumbnails from a dataset index (:func:`atlas_thumbnails`).

Definitions (``R_l(c | theta)`` is the relevance of concept ``c`` of layer ``l`` under condition ``theta``, summed over
the concept's units; ``t_n`` is sample ``n``'s target):

share
    ``s_n(c) = R_l(c | t_n) / sum_c' |R_l(c' | t_n)|`` (``normalization="abs"``, the CRP paper's; ``"signed"``
    divides by the signed sum). With a region the relevances are those that end up inside it:
    ``R_l(c | t_n) = sum_{i in region} R(x_i | t_n, c)``, the region's part of the concept's conditional heatmap.
ballot and votes
    Sample ``n``'s ballot in layer ``l`` is the ``k`` concepts with the largest shares, largest first (equal shares:
    lower id first), keeping only those with a *positive* share. A concept's votes are the number of ballots it is
    on.
mean share, voter share
    The mean of ``s_n(c)`` over all samples (of the class), and over the samples whose ballot holds ``c``.

>>> import torch
>>> from zennit.composites import EpsilonPlus
>>> from glocal import Attributor
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
>>> atlas = concept_atlas(Attributor(net, EpsilonPlus()), torch.rand(20, 6), ["0"], k=2)
>>> atlas.n_samples, sum(entry.votes for entry in atlas.entries["0"]) <= 2 * 20
(20, True)
>>> top = atlas.entries["0"][0]
>>> top.votes >= atlas.entries["0"][-1].votes and top.voter_share >= top.mean_share
True
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from PIL import Image

from ..attribution.concepts import relevance_shares
from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor, Run
from ..attribution.layers import get_layer_names, resolve_layers
from ..data import Batch, Targets, as_data, batch_targets, batches, check_targets, model_device, sample_count
from ..errors import ConditionError, InputError, LayerError
from ..progress import progress_bar
from ..serialize import read_json, write_json
from .layer_graph import DEFAULT_TYPES, trace_layers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..index.build import ConceptIndex

__all__ = [
    "AtlasEntry",
    "CentreSquare",
    "ConceptAtlas",
    "Fragment",
    "Fragmentation",
    "atlas_figure",
    "atlas_thumbnails",
    "centre_square",
    "concept_atlas",
    "fragment",
    "fragment_atlas",
]

logger = logging.getLogger(__name__)

"""``"auto"``, ``"label"``, ``"prediction"``, or one output unit per sample."""
Region = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]
"""An ``(H, W)`` mask for all samples, an ``(N, H, W)`` mask per sample, or a callable ``(inputs) -> mask``."""

_CHUNK = 16  # conditions per backward batch when fragmenting several concepts


# -- regions ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CentreSquare:
    """A region: the ``size`` by ``size`` square in the centre of the input (see :func:`centre_square`)."""

    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"the square's size must be a positive number of pixels, got {self.size!r}")

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """The ``(H, W)`` 0/1 mask for inputs ``(N, C, H, W)``."""
        if inputs.dim() < 3:
            raise InputError(
                f"a centre square needs inputs with two spatial dimensions (N, C, H, W), got shape "
                f"{tuple(inputs.shape)}"
            )
        height, width = inputs.shape[-2:]
        if self.size > min(height, width):
            raise InputError(
                f"the centre square of {self.size} pixels does not fit inputs of {height}x{width} pixels; "
                f"choose a size of at most {min(height, width)}"
            )
        top, left = (height - self.size) // 2, (width - self.size) // 2
        mask = torch.zeros(height, width, dtype=inputs.dtype, device=inputs.device)
        mask[top : top + self.size, left : left + self.size] = 1
        return mask


def centre_square(size: int) -> CentreSquare:
    """A region for :func:`concept_atlas`: the centre square of ``size`` pixels (top-left corner rounded up-left).

    Examples
    --------
    >>> centre_square(2)(torch.zeros(1, 1, 4, 5)).int().tolist()
    [[0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    """
    return CentreSquare(size)


# -- results ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtlasEntry:
    """One concept of an atlas layer.

    Attributes
    ----------
    concept
        The concept id (a channel, for :class:`~glocal.ChannelConcept`).
    votes
        On how many samples' ballots the concept is.
    mean_share
        Its mean relevance share over all samples (of the class, for a class entry).
    voter_share
        Its mean relevance share over the samples that voted for it.
    references
        Dataset ids of its RelMax reference samples from a concept index, best first (see
        :meth:`ConceptAtlas.with_references`); empty when not linked.
    """

    concept: int
    votes: int
    mean_share: float
    voter_share: float
    references: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-serialisable values."""
        return {
            "concept": self.concept,
            "votes": self.votes,
            "mean_share": self.mean_share,
            "voter_share": self.voter_share,
            "references": list(self.references),
        }


@dataclass(frozen=True, eq=False)
class ConceptAtlas:
    """The concepts that samples vote for, per layer, over all samples and per class (see :func:`concept_atlas`).

    Attributes
    ----------
    layers
        The layers, as given.
    entries
        Layer to its entries (concepts with at least one vote), most votes first, then largest mean share, then
        lowest id.
    class_entries
        Layer to class (target) to the entries of that class's samples, ordered the same way.
    n_concepts
        Layer to its number of concepts.
    targets
        Each sample's target (the output unit its relevance started from), in data order.
    ballots
        Layer to ``(N, min(k, C))`` int64: each sample's voted concepts, largest share first, ``-1`` where it had
        fewer than ``k`` concepts with a positive share.
    k
        Concepts per ballot.
    region
        ``None`` for the global atlas; for a regional one (shares count only relevance inside a region) a short
        description of the region, e.g. ``"CentreSquare(size=14)"`` or ``"mask of shape (28, 28)"``.
    normalization
        ``"abs"`` or ``"signed"`` (see :func:`~glocal.relevance_shares`).
    """

    layers: tuple[str, ...]
    entries: Mapping[str, tuple[AtlasEntry, ...]]
    class_entries: Mapping[str, Mapping[int, tuple[AtlasEntry, ...]]]
    n_concepts: Mapping[str, int]
    targets: tuple[int, ...]
    ballots: Mapping[str, torch.Tensor]
    k: int
    region: str | None = None
    normalization: str = "abs"

    @property
    def regional(self) -> bool:
        """Whether the shares count only relevance inside a region."""
        return self.region is not None

    @property
    def n_samples(self) -> int:
        """How many samples voted."""
        return len(self.targets)

    @property
    def class_counts(self) -> dict[int, int]:
        """Class (target) to its number of samples, classes in increasing order."""
        counts: dict[int, int] = {}
        for target in sorted(self.targets):
            counts[target] = counts.get(target, 0) + 1
        return counts

    def layer_entries(self, layer: str, target: int | None = None) -> tuple[AtlasEntry, ...]:
        """The entries of ``layer``: of all samples, or of the samples of class ``target``."""
        self._check_layer(layer)
        if target is None:
            return self.entries[layer]
        classes = self.class_entries[layer]
        if target not in classes:
            raise InputError(f"no sample has target {target}; the atlas's classes are {sorted(classes)}")
        return classes[target]

    def top(self, layer: str, n: int | None = None, target: int | None = None) -> list[int]:
        """The ids of the ``n`` (default ``k``) concepts with the most votes (ties as in :attr:`entries`)."""
        n = self.k if n is None else n
        if n < 1:
            raise ValueError(f"n must be a positive number of concepts, got {n}")
        return [entry.concept for entry in self.layer_entries(layer, target)[:n]]

    def votes(self, layer: str, target: int | None = None) -> torch.Tensor:
        """``(C,)`` int64 votes of every concept of ``layer`` (zero for concepts without an entry)."""
        votes = torch.zeros(self.n_concepts[layer], dtype=torch.int64)
        for entry in self.layer_entries(layer, target):
            votes[entry.concept] = entry.votes
        return votes

    def voters(self, layer: str, concept: int) -> list[int]:
        """Positions (in the data) of the samples whose ballot in ``layer`` holds ``concept``."""
        self._check_layer(layer)
        return torch.nonzero((self.ballots[layer] == int(concept)).any(1)).flatten().tolist()

    def agreement(self, other: ConceptAtlas, top: int | None = None) -> dict[str, dict[str, float]]:
        """How much this atlas and ``other`` (e.g. a regional and the global one) agree, per common layer.

        With ``A`` and ``B`` the ``top`` (default: this atlas's ``k``) concepts of each atlas by votes (ties as in
        :attr:`entries`; fewer when fewer got votes), ``a_c`` and ``b_c`` every concept's votes:

        ``jaccard``
            ``|A & B| / |A | B|``, the overlap of the two top sets (1 when both are empty).
        ``vote_overlap``
            ``sum_c min(a_c / sum(a), b_c / sum(b))``: the share of votes the two vote distributions have in common
            (histogram intersection; 1 for proportional votes, 0 for disjoint ones or when one atlas has no votes).
        ``rank_correlation``
            Spearman's correlation of ``a`` and ``b`` over all concepts of the layer (ties get their mean rank);
            NaN when either has the same votes for every concept.

        Examples
        --------
        >>> one = ConceptAtlas.from_votes({"conv": [3, 1, 0, 0]}, k=1)
        >>> two = ConceptAtlas.from_votes({"conv": [0, 2, 2, 0]}, k=1)
        >>> scores = one.agreement(two, top=2)["conv"]  # tops {0, 1} and {1, 2}
        >>> {name: round(value, 3) for name, value in scores.items()}
        {'jaccard': 0.333, 'vote_overlap': 0.25, 'rank_correlation': -0.236}

        The overlap is ``min(3/4, 0) + min(1/4, 2/4) + min(0, 2/4) + 0``; the ranks are ``(4, 3, 1.5, 1.5)`` and
        ``(1.5, 3.5, 3.5, 1.5)``.
        """
        top = self.k if top is None else top
        if top < 1:
            raise ValueError(f"top must be a positive number of concepts, got {top}")
        common = [layer for layer in self.layers if layer in other.entries]
        if not common:
            raise InputError(
                f"the atlases share no layer: this one has {list(self.layers)}, the other {list(other.layers)}; "
                "compute both over the same layers"
            )
        out: dict[str, dict[str, float]] = {}
        for layer in common:
            if self.n_concepts[layer] != other.n_concepts[layer]:
                raise InputError(
                    f"layer {layer!r} has {self.n_concepts[layer]} concepts in one atlas and "
                    f"{other.n_concepts[layer]} in the other; compare atlases of the same model"
                )
            mine, theirs = set(self.top(layer, top)), set(other.top(layer, top))
            union = mine | theirs
            jaccard = len(mine & theirs) / len(union) if union else 1.0
            a, b = self.votes(layer).double(), other.votes(layer).double()
            both = a.sum() > 0 and b.sum() > 0
            overlap = float(torch.minimum(a / a.sum(), b / b.sum()).sum()) if both else 0.0
            out[layer] = {
                "jaccard": jaccard,
                "vote_overlap": overlap,
                "rank_correlation": _spearman(a.tolist(), b.tolist()),
            }
        return out

    def with_references(self, index: ConceptIndex, n: int = 8, mode: str = "relmax_sum") -> ConceptAtlas:
        """A copy whose entries link to their reference samples in ``index`` (layers the index has).

        Entries of all samples get the index's top ``n`` samples of ``mode``; class entries get the class's top ``n``
        samples (the index keeps those by ``relmax_sum`` only). Only ids are looked up; nothing is computed.
        """
        if n < 1:
            raise ValueError(f"n must be a positive number of samples, got {n}")

        def linked(layer: str, entry: AtlasEntry, target: int | None) -> AtlasEntry:
            if target is None:
                ids = index.samples(layer, entry.concept, mode, n)[0]
            else:
                ids = index.class_samples(layer, entry.concept, target, n)[0]
            return dataclasses.replace(entry, references=tuple(int(i) for i in ids))

        entries = dict(self.entries)
        class_entries = dict(self.class_entries)
        for layer in self.layers:
            if layer not in index.layers:
                continue
            entries[layer] = tuple(linked(layer, entry, None) for entry in self.entries[layer])
            class_entries[layer] = {
                target: tuple(linked(layer, entry, target) for entry in group)
                for target, group in self.class_entries[layer].items()
            }
        return dataclasses.replace(self, entries=entries, class_entries=class_entries)

    def to_dict(self) -> dict[str, Any]:
        """The atlas as JSON-serialisable values (class keys become strings)."""
        return {
            "layers": list(self.layers),
            "k": self.k,
            "region": self.region,
            "normalization": self.normalization,
            "n_samples": self.n_samples,
            "targets": list(self.targets),
            "class_counts": {str(c): count for c, count in self.class_counts.items()},
            "n_concepts": dict(self.n_concepts),
            "entries": {layer: [e.to_dict() for e in self.entries[layer]] for layer in self.layers},
            "class_entries": {
                layer: {str(c): [e.to_dict() for e in group] for c, group in self.class_entries[layer].items()}
                for layer in self.layers
            },
            "ballots": {layer: self.ballots[layer].tolist() for layer in self.layers},
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, indent: int | None = 2) -> str:
        """The atlas as JSON text (see :meth:`to_dict`); also written to ``path`` when given."""
        return write_json(self.to_dict(), path, indent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptAtlas:
        """The atlas back from :meth:`to_dict`'s form (everything an atlas holds; nothing is left out)."""
        try:
            layers = tuple(str(layer) for layer in data["layers"])
            k = int(data["k"])
            n_concepts = {layer: int(data["n_concepts"][layer]) for layer in layers}

            def ballots(values: Sequence[Sequence[int]], layer: str) -> torch.Tensor:
                if not values:
                    return torch.zeros(0, min(k, n_concepts[layer]) if data["targets"] else k, dtype=torch.int64)
                return torch.tensor(values, dtype=torch.int64)

            return cls(
                layers=layers,
                entries={layer: tuple(_entry(item) for item in data["entries"][layer]) for layer in layers},
                class_entries={
                    layer: {
                        int(c): tuple(_entry(item) for item in group)
                        for c, group in data["class_entries"][layer].items()
                    }
                    for layer in layers
                },
                n_concepts=n_concepts,
                targets=tuple(int(t) for t in data["targets"]),
                ballots={layer: ballots(data["ballots"][layer], layer) for layer in layers},
                k=k,
                region=None if data.get("region") is None else str(data["region"]),
                normalization=str(data.get("normalization", "abs")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InputError(
                f"not a concept atlas in ConceptAtlas.to_dict's form ({type(error).__name__}: {error}); load what "
                "ConceptAtlas.to_json wrote"
            ) from error

    @classmethod
    def from_json(cls, source: str | os.PathLike[str]) -> ConceptAtlas:
        """The atlas back from :meth:`to_json`: a file path, or the JSON text itself."""
        return cls.from_dict(read_json(source))

    @classmethod
    def from_votes(cls, votes: Mapping[str, Sequence[int]], k: int = 1) -> ConceptAtlas:
        """An atlas that holds only vote counts (zero shares, no samples): for trying out :meth:`agreement`."""
        entries = {
            layer: _entries(
                torch.tensor(list(counts), dtype=torch.int64),
                torch.zeros(len(counts), dtype=torch.float64),
                torch.zeros(len(counts), dtype=torch.float64),
                1,
            )
            for layer, counts in votes.items()
        }
        return cls(
            layers=tuple(votes),
            entries=entries,
            class_entries={layer: {} for layer in votes},
            n_concepts={layer: len(counts) for layer, counts in votes.items()},
            targets=(),
            ballots={layer: torch.zeros(0, k, dtype=torch.int64) for layer in votes},
            k=k,
        )

    def _check_layer(self, layer: str) -> None:
        if layer not in self.entries:
            raise LayerError(f"the atlas has no layer {layer!r}; it has {list(self.layers)}")


@dataclass(frozen=True)
class Fragment:
    """A concept of a lower layer and its mean share of the upper concept's relevance (see :func:`fragment`)."""

    layer: str
    concept: int
    mean_share: float


@dataclass(frozen=True)
class Fragmentation:
    """A concept decomposed into the concepts of the layers that feed it (see :func:`fragment`).

    Attributes
    ----------
    layer, concept
        The decomposed concept.
    lower_layers
        The layers it was decomposed into.
    parts
        The ``k`` lower concepts with the largest mean shares, largest first.
    layer_shares
        Each lower layer's mean share (its concepts' shares summed): how the relevance splits between branches.
    n_samples
        Over how many samples the shares were averaged.
    """

    layer: str
    concept: int
    lower_layers: tuple[str, ...]
    parts: tuple[Fragment, ...]
    layer_shares: Mapping[str, float]
    n_samples: int

    def to_dict(self) -> dict[str, Any]:
        """The fragmentation as JSON-serialisable values."""
        return {
            "layer": self.layer,
            "concept": self.concept,
            "lower_layers": list(self.lower_layers),
            "parts": [dataclasses.asdict(part) for part in self.parts],
            "layer_shares": dict(self.layer_shares),
            "n_samples": self.n_samples,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fragmentation:
        """The fragmentation back from :meth:`to_dict`'s form."""
        try:
            return cls(
                layer=str(data["layer"]),
                concept=int(data["concept"]),
                lower_layers=tuple(str(name) for name in data["lower_layers"]),
                parts=tuple(
                    Fragment(
                        layer=str(part["layer"]), concept=int(part["concept"]), mean_share=float(part["mean_share"])
                    )
                    for part in data["parts"]
                ),
                layer_shares={str(name): float(value) for name, value in data["layer_shares"].items()},
                n_samples=int(data["n_samples"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise InputError(
                f"not a fragmentation in Fragmentation.to_dict's form ({type(error).__name__}: {error})"
            ) from error


def _entry(item: Mapping[str, Any]) -> AtlasEntry:
    return AtlasEntry(
        concept=int(item["concept"]),
        votes=int(item["votes"]),
        mean_share=float(item["mean_share"]),
        voter_share=float(item["voter_share"]),
        references=tuple(int(i) for i in item.get("references", ())),
    )


# -- data -------------------------------------------------------------------------------------------------------------


def _check_layers(model: torch.nn.Module, layers: Sequence[str]) -> list[str]:
    if isinstance(layers, str):
        layers = [layers]
    names = list(dict.fromkeys(layers))
    if not names:
        raise InputError("no layers given; name at least one, e.g. layers=['conv2']")
    resolve_layers(model, names)  # unknown names: LayerError with close matches
    return names


def _check_k(k: int, what: str = "k") -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{what} must be a positive number of concepts, got {k!r}")


def _check_region(region: Region | None, n: int) -> None:
    if region is None or callable(region):
        return
    if not isinstance(region, torch.Tensor):
        raise InputError(
            f"region must be a tensor mask (H, W) or (N, H, W), or a callable (inputs) -> mask; got "
            f"{type(region).__name__}"
        )
    if region.dim() not in (2, 3) or (region.dim() == 3 and region.shape[0] != n):
        raise InputError(
            f"region must be one (H, W) mask for all samples or one per sample ({n}, H, W); got shape "
            f"{tuple(region.shape)}"
        )


def _describe(region: Region | None) -> str | None:
    if region is None:
        return None
    if isinstance(region, torch.Tensor):
        what = "mask" if region.dim() == 2 else "per-sample masks"
        return f"{what} of shape {tuple(region.shape)}"
    return repr(region) if isinstance(region, CentreSquare) else getattr(region, "__qualname__", repr(region))


def _batch_region(region: Region, batch: Batch) -> torch.Tensor:
    inputs = batch.inputs
    n, spatial = inputs.shape[0], tuple(inputs.shape[2:])
    if isinstance(region, torch.Tensor):
        mask = region if region.dim() == 2 else region[batch.start : batch.start + n]
    else:
        mask = torch.as_tensor(region(inputs))
    if tuple(mask.shape) not in (spatial, (n, *spatial)):
        raise InputError(
            f"the region mask has shape {tuple(mask.shape)} but the inputs' spatial shape is {spatial}; give an "
            f"{spatial} mask, or one per sample (N, {', '.join(map(str, spatial))})"
        )
    return mask.to(device=inputs.device, dtype=inputs.dtype)


# -- the atlas --------------------------------------------------------------------------------------------------------


def _ballots(shares: torch.Tensor, k: int) -> torch.Tensor:
    """``(N, min(k, C))``: the concepts with the largest positive shares, largest first, ``-1`` padding."""
    values, order = shares.sort(dim=1, descending=True, stable=True)
    values, order = values[:, :k], order[:, :k]
    return torch.where(values > 0, order, torch.full_like(order, -1))


def _voted(ballots: torch.Tensor, count: int) -> torch.Tensor:
    """``(N, C)`` bool: which concepts are on each ballot."""
    hits = torch.zeros(ballots.shape[0], count + 1, dtype=torch.bool, device=ballots.device)
    hits.scatter_(1, ballots + 1, True)  # -1 (no vote) lands in column 0, which is dropped
    return hits[:, 1:]


def _entries(
    votes: torch.Tensor, share_sum: torch.Tensor, voter_sum: torch.Tensor, count: int
) -> tuple[AtlasEntry, ...]:
    """Entries of the concepts with votes, most votes first, then largest mean share, then lowest id."""
    mean = share_sum / max(count, 1)
    voted = torch.nonzero(votes > 0).flatten().tolist()
    voted.sort(key=lambda c: (-int(votes[c]), -float(mean[c]), c))
    return tuple(
        AtlasEntry(
            concept=c,
            votes=int(votes[c]),
            mean_share=float(mean[c]),
            voter_share=float(voter_sum[c] / votes[c]),
        )
        for c in voted
    )


class _Tally:
    """Running sums of one layer: votes, shares and voters' shares, overall and per class."""

    def __init__(self, count: int, classes: int) -> None:
        self.count = count
        self.votes = torch.zeros(classes, count, dtype=torch.int64)
        self.share_sum = torch.zeros(classes, count, dtype=torch.float64)
        self.voter_sum = torch.zeros(classes, count, dtype=torch.float64)
        self.ballots: list[torch.Tensor] = []

    def add(self, shares: torch.Tensor, ballots: torch.Tensor, targets: torch.Tensor) -> None:
        shares = shares.detach().cpu().double()
        voted = _voted(ballots, self.count)
        self.votes.index_add_(0, targets, voted.long())
        self.share_sum.index_add_(0, targets, shares)
        self.voter_sum.index_add_(0, targets, shares * voted)
        self.ballots.append(ballots)

    def entries(
        self, class_counts: Mapping[int, int]
    ) -> tuple[tuple[AtlasEntry, ...], dict[int, tuple[AtlasEntry, ...]]]:
        total = _entries(self.votes.sum(0), self.share_sum.sum(0), self.voter_sum.sum(0), sum(class_counts.values()))
        per_class = {
            c: _entries(self.votes[c], self.share_sum[c], self.voter_sum[c], count) for c, count in class_counts.items()
        }
        return total, per_class


def concept_atlas(
    attributor: Attributor,
    data: Any,
    layers: Sequence[str],
    *,
    targets: Targets = "auto",
    k: int = 5,
    region: Region | None = None,
    batch_size: int = 32,
    normalization: str = "abs",
    index: ConceptIndex | None = None,
    references: int = 8,
    progress: bool = True,
) -> ConceptAtlas:
    """The concept atlas of ``layers`` over ``data``: each sample votes for its top-``k`` concepts per layer.

    Per batch the model runs one forward pass and one backward pass from each sample's target down to the lowest
    layer (rules and probes are attached once for all batches; predictions come from that same forward pass). With a
    ``region``, one more double-backward pass scores the concepts of all layers by the relevance they put inside the
    region (:meth:`~glocal.Run.region_relevance`).

    Parameters
    ----------
    attributor
        The engine (model, composite and concept types).
    data
        ``(N, ...)`` inputs, or a map-style dataset of ``input`` or ``(input, label)`` items, or a DataLoader over one
        (its dataset is read in order, in batches of ``batch_size``).
    layers
        The layers whose concepts vote.
    targets
        Where each sample's relevance starts: ``"label"``, ``"prediction"`` (the largest output), ``"auto"``
        (labels when the data has them, else predictions), or one output unit per sample.
    k
        Concepts per ballot.
    region
        Count only relevance inside an input region: an ``(H, W)`` 0/1 mask for all samples, an ``(N, H, W)`` one
        per sample, or a callable such as :func:`centre_square` that maps a batch of inputs to either.
    batch_size
        Samples per forward pass.
    normalization
        How shares are normalised: ``"abs"`` (by the sum of absolute concept relevances) or ``"signed"``.
    index, references
        A concept index of the model (e.g. over the training set): entries of the layers it has then link to their
        ``references`` best RelMax samples in it (see :meth:`ConceptAtlas.with_references`).
    progress
        Show a progress bar (batches) when the atlas takes more than a few seconds.

    Returns
    -------
    ConceptAtlas
        Entries per layer and per class; shares are float64 means of the model's float shares.
    """
    model = attributor.model
    names = _check_layers(model, layers)
    _check_k(k)
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of samples, got {batch_size}")
    if normalization not in ("abs", "signed"):
        raise ValueError(f"normalization must be 'abs' or 'signed', got {normalization!r}")
    data = as_data(data)
    n = sample_count(data)
    _check_region(region, n)
    resolved = check_targets(targets, data)
    started = time.perf_counter()
    tallies: dict[str, _Tally] = {}
    all_targets: list[int] = []
    with (
        attributor.attached(names) as start,
        progress_bar(math.ceil(n / batch_size), "concept atlas", enabled=progress, unit="batch") as bar,
    ):
        for batch in batches(data, batch_size, model_device(model)):
            if region is None:
                run = start(batch.inputs, record=names, heatmap=False, input_grad=False)
            else:
                run = start(batch.inputs, heatmap=False, input_grad=True)
            sample_targets = batch_targets(resolved, batch, run.output, "an atlas")
            condition = Condition(targets=PerSample([[t] for t in sample_targets]))
            relevances = _layer_relevances(attributor, run, names, condition, region, batch)
            target_ids = torch.tensor(sample_targets, dtype=torch.int64)
            for name, relevance in relevances.items():
                shares = relevance_shares(relevance, normalization)
                if name not in tallies:
                    tallies[name] = _Tally(shares.shape[1], _outputs(run.output))
                tallies[name].add(shares, _ballots(shares, k).cpu(), target_ids)
            all_targets.extend(sample_targets)
            bar.update(1)
    class_counts: dict[int, int] = {}
    for target in sorted(all_targets):
        class_counts[target] = class_counts.get(target, 0) + 1
    entries, class_entries = {}, {}
    for name in names:
        entries[name], class_entries[name] = tallies[name].entries(class_counts)
    logger.info("atlas of %d samples over %s in %.2f s", n, names, time.perf_counter() - started)
    atlas = ConceptAtlas(
        layers=tuple(names),
        entries=entries,
        class_entries=class_entries,
        n_concepts={name: tallies[name].count for name in names},
        targets=tuple(all_targets),
        ballots={name: torch.cat(tallies[name].ballots) for name in names},
        k=k,
        region=_describe(region),
        normalization=normalization,
    )
    return atlas if index is None else atlas.with_references(index, references)


def _outputs(output: torch.Tensor) -> int:
    return int(output.shape[1]) if output.dim() > 1 else 1


def _layer_relevances(
    attributor: Attributor,
    run: Run,
    layers: Sequence[str],
    condition: Condition,
    region: Region | None,
    batch: Batch,
) -> dict[str, torch.Tensor]:
    """``(N, C)`` concept relevance per layer: all of it, or the part that lands inside the region."""
    if region is None:
        result = run.attribute(condition)
        return {name: attributor.concept(name).relevance(result.relevances[name]) for name in layers}
    mask = _batch_region(region, batch)
    inside = run.region_relevance(list(layers), mask, condition)  # all layers: one backward, one double-backward
    return {name: attributor.concept(name).relevance(inside[name]) for name in layers}


# -- fragmentation ----------------------------------------------------------------------------------------------------


def _lower_layers(attributor: Attributor, data: Any, layer: str, lower_layers: Sequence[str] | None) -> list[str]:
    if lower_layers is not None:
        names = [lower_layers] if isinstance(lower_layers, str) else list(dict.fromkeys(lower_layers))
        if not names:
            raise InputError(f"lower_layers is empty; name the layers to decompose {layer!r} into")
        if layer in names:
            raise InputError(f"lower_layers holds {layer!r} itself; name the layers below it")
        resolve_layers(attributor.model, names)
        return names
    model = attributor.model
    example = next(batches(data, 1, model_device(model))).inputs
    candidates = list(dict.fromkeys([*get_layer_names(model, list(DEFAULT_TYPES)), layer]))
    graph = trace_layers(model, example, candidates)
    if layer not in graph.inputs:
        raise ConditionError(f"layer {layer!r} did not run in the forward pass; pick a layer the model uses")
    names = list(graph.inputs[layer])
    if not names:
        raise ConditionError(
            f"no convolution or linear layer feeds {layer!r} (it reads the input directly); pass lower_layers=[...] "
            "to decompose it into other layers"
        )
    return names


def _fragment_sums(
    attributor: Attributor,
    data: Any,
    layer: str,
    concepts: Sequence[int],
    lower: Sequence[str],
    targets: Literal["label", "prediction"] | list[int],
    weights: torch.Tensor | None,
    batch_size: int,
    normalization: str,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, slice]]:
    """Per concept, the weighted sums over samples of the lower concepts' shares ``(M, D)``, and the weight sums."""
    sums: torch.Tensor | None = None
    counts = torch.zeros(len(concepts), dtype=torch.float64)
    slices: dict[str, slice] = {}
    total = math.ceil(sample_count(data) / batch_size)
    with (
        attributor.attached([layer, *lower]) as start,
        progress_bar(total, f"fragments of {layer}", enabled=progress, unit="batch") as bar,
    ):
        for batch in batches(data, batch_size, model_device(attributor.model)):
            bar.update(1)
            n = batch.inputs.shape[0]
            weight = (
                torch.ones(n, len(concepts), dtype=torch.float64)
                if weights is None
                else weights[batch.start : batch.start + n].double()
            )
            if not weight.any():
                continue
            run = start(batch.inputs, record=list(lower), heatmap=False, input_grad=False)
            for name in lower:
                if run.order[name] > run.order[layer]:
                    raise ConditionError(
                        f"lower layer {name!r} runs after {layer!r} in the forward pass; a concept decomposes into "
                        "the layers below it"
                    )
            ids = PerSample([[t] for t in batch_targets(targets, batch, run.output, "an atlas")])
            for begin in range(0, len(concepts), _CHUNK):
                chunk = concepts[begin : begin + _CHUNK]
                result = run.attribute([Condition(targets=ids, layers={layer: (c,)}) for c in chunk])
                parts, offset = [], 0
                for name in lower:
                    relevance = attributor.concept(name).relevance(result.relevances[name])
                    slices[name] = slice(offset, offset + relevance.shape[1])
                    offset += relevance.shape[1]
                    parts.append(relevance)
                shares = relevance_shares(torch.cat(parts, 1), normalization).view(n, len(chunk), -1)
                chunk_weight = weight[:, begin : begin + len(chunk)]
                summed = (shares.detach().cpu().double() * chunk_weight[..., None]).sum(0)
                if sums is None:
                    sums = torch.zeros(len(concepts), summed.shape[1], dtype=torch.float64)
                sums[begin : begin + len(chunk)] += summed
            counts += weight.sum(0)
    if sums is None:
        sums = torch.zeros(len(concepts), 0, dtype=torch.float64)
    return sums, counts, slices


def _fragmentation(
    layer: str,
    concept: int,
    lower: Sequence[str],
    sums: torch.Tensor,
    count: float,
    slices: Mapping[str, slice],
    k: int,
) -> Fragmentation:
    mean = sums / max(count, 1.0)
    owners = [(name, c) for name in lower if name in slices for c in range(slices[name].stop - slices[name].start)]
    order = sorted(range(len(owners)), key=lambda i: (-float(mean[i]), i))[:k]
    parts = tuple(Fragment(layer=owners[i][0], concept=owners[i][1], mean_share=float(mean[i])) for i in order)
    layer_shares = {name: float(mean[slices[name]].sum()) if name in slices else 0.0 for name in lower}
    return Fragmentation(
        layer=layer,
        concept=int(concept),
        lower_layers=tuple(lower),
        parts=parts,
        layer_shares=layer_shares,
        n_samples=int(count),
    )


def fragment(
    attributor: Attributor,
    data: Any,
    layer: str,
    concept: int,
    *,
    lower_layers: Sequence[str] | None = None,
    targets: Targets = "auto",
    k: int = 5,
    batch_size: int = 32,
    normalization: str = "abs",
    progress: bool = True,
) -> Fragmentation:
    """Decompose concept ``concept`` of ``layer`` into the concepts of the layers that feed it.

    For every sample, relevance starts at its target and passes ``layer`` through the concept only (condition
    ``{layer: [concept], "y": [target]}``, sole path); the backward pass stops at the lower layers. Each lower concept
    ``d`` gets the share ``R(d | concept, target) / sum_d' |R(d' | concept, target)|``, the sum running over the
    concepts of *all* lower layers together (so parallel branches compete); the result lists the ``k`` largest mean
    shares over the samples.

    Parameters
    ----------
    attributor, data, targets, batch_size, normalization
        As for :func:`concept_atlas`.
    layer, concept
        The concept to decompose.
    lower_layers
        The layers to decompose into; default: the convolution and linear layers that feed ``layer`` directly
        (:func:`~glocal.trace_layers`).
    k
        How many lower concepts to list.
    progress
        Show a progress bar (batches) when the decomposition takes more than a few seconds.
    """
    names = _check_layers(attributor.model, [layer])
    _check_k(k)
    data = as_data(data)
    resolved = check_targets(targets, data)
    lower = _lower_layers(attributor, data, names[0], lower_layers)
    sums, counts, slices = _fragment_sums(
        attributor, data, layer, [int(concept)], lower, resolved, None, batch_size, normalization, progress
    )
    return _fragmentation(layer, int(concept), lower, sums[0], float(counts[0]), slices, k)


def fragment_atlas(
    attributor: Attributor,
    data: Any,
    atlas: ConceptAtlas,
    layer: str,
    *,
    top: int | None = None,
    lower_layers: Sequence[str] | None = None,
    k: int = 5,
    batch_size: int = 32,
    normalization: str = "abs",
    progress: bool = True,
) -> dict[int, Fragmentation]:
    """Fragment the ``top`` (default: all) entries of an atlas layer, each over the samples that voted for it.

    ``data`` must be the data the atlas was computed on (same samples, same order); each sample's relevance starts
    at its atlas target. The decomposition counts all of the concept's relevance, also for a regional atlas (whose
    voters it uses). Returns concept id to :class:`Fragmentation`, in the atlas's order.
    """
    data = as_data(data)
    n = sample_count(data)
    if n != atlas.n_samples:
        raise InputError(
            f"the atlas was computed on {atlas.n_samples} samples but the data has {n}; pass the atlas's own data"
        )
    _check_k(k)
    entries = atlas.layer_entries(layer)
    concepts = [entry.concept for entry in (entries if top is None else entries[:top])]
    if not concepts:
        return {}
    lower = _lower_layers(attributor, data, layer, lower_layers)
    ballots = atlas.ballots[layer]
    weights = torch.stack([(ballots == c).any(1) for c in concepts], 1)
    sums, counts, slices = _fragment_sums(
        attributor, data, layer, concepts, lower, list(atlas.targets), weights, batch_size, normalization, progress
    )
    return {c: _fragmentation(layer, c, lower, sums[m], float(counts[m]), slices, k) for m, c in enumerate(concepts)}


# -- pictures ---------------------------------------------------------------------------------------------------------


def atlas_thumbnails(
    atlas: ConceptAtlas,
    index: ConceptIndex,
    dataset: Any,
    attributor: Attributor,
    *,
    layers: Sequence[str] | None = None,
    top: int = 8,
    target: int | None = None,
    n: int = 4,
    size: int = 64,
    mode: str = "relmax_sum",
    **options: Any,
) -> dict[tuple[str, int], Image.Image]:
    """Reference thumbnails of the ``top`` concepts of each atlas layer that the index has, for :func:`atlas_figure`.

    Each thumbnail tiles a concept's ``n`` best reference samples (:func:`~glocal.concept_references`, all concepts of
    a layer sharing batches) in a square grid. With ``target`` the concepts are the class's top ones and their
    references the class's samples (the index's class statistics, ranked by ``relmax_sum``). ``options`` go to
    :func:`~glocal.concept_references` (e.g. ``to_image``, ``cache``, ``batch_size``; ``opacity`` defaults to 0.45
    here, a lighter fade than full-size references).
    """
    from ..index.references import concept_references
    from ..viz.references import reference_grid

    chosen = list(atlas.layers if layers is None else layers)
    columns = math.ceil(math.sqrt(n))
    thumbnails: dict[tuple[str, int], Image.Image] = {}
    for layer in chosen:
        if layer not in index.layers:
            logger.info("the index has no layer %r; its atlas concepts get no thumbnails", layer)
            continue
        concepts = atlas.top(layer, top, target)
        if not concepts:
            continue
        # thumbnails are small: fade the irrelevant part less than full-size references do, so the context shows
        options.setdefault("opacity", 0.45)
        references = concept_references(
            index, dataset, attributor, layer, concepts, mode=mode, n=n, label=target, size=size, **options
        )
        for concept, reference in references.items():
            thumbnails[(layer, concept)] = reference_grid(list(reference.images), columns=columns, margin=1)
    return thumbnails


def atlas_figure(
    atlas: ConceptAtlas,
    layers: Sequence[str] | None = None,
    *,
    top: int = 8,
    target: int | None = None,
    thumbnails: Mapping[tuple[str, int], Image.Image] | None = None,
    class_names: Sequence[str] | None = None,
    column_width: float = 1.4,
    dpi: float = 100.0,
) -> Figure:
    """The atlas as a figure: one row per layer with its ``top`` concepts, their vote bars and reference thumbnails.

    Each bar is the share of samples whose ballot holds the concept (labelled with the vote count); the tick label
    gives the concept id and its mean relevance share. With ``thumbnails`` (e.g. from :func:`atlas_thumbnails`) each
    concept's picture sits above its bar.

    Parameters
    ----------
    atlas
        The atlas to draw.
    layers
        Which layers, top to bottom (default: the atlas's order).
    top
        Concepts per layer.
    target
        Draw the atlas of this class's samples instead of all samples.
    thumbnails
        ``(layer, concept)`` to a picture; concepts without one get an empty slot.
    class_names
        Names of the model's outputs, for the title of a class atlas.
    column_width
        Inches per concept.
    dpi
        Resolution the figure is saved at.

    Returns
    -------
    matplotlib.figure.Figure
        One bar axes per layer (and one image axes per thumbnail).
    """
    from ..viz.images import require_matplotlib

    figure_class, canvas_class = require_matplotlib()
    _check_k(top, "top")
    chosen = list(atlas.layers if layers is None else layers)
    for layer in chosen:
        atlas._check_layer(layer)
    pictured = {key[0] for key in thumbnails or {} if key[0] in chosen}  # layers with thumbnails get room for them
    with_pictures = bool(pictured)
    bar_inches, title_inches = 1.5, 0.4

    def picture_room(layer: str) -> float:
        return column_width * 0.9 if layer in pictured else 0.0

    def row_room(layer: str) -> float:  # the last part for the three-line tick labels
        return title_inches + picture_room(layer) + bar_inches + 0.65

    width = max(top * column_width + 1.0, 6.0)

    samples = atlas.n_samples if target is None else atlas.class_counts.get(target, 0)
    who = (
        f"all {samples} samples" if target is None else f"the {samples} samples of {_class_label(target, class_names)}"
    )
    where = f"relevance inside the region {atlas.region}" if atlas.regional else "relevance"
    title = f"Concept atlas of {who}: each votes for its top-{atlas.k} concepts per layer by {where}"
    legend = (
        "bars: % of samples voting for the concept (count on top);  under each bar: concept id, its mean share over "
        "all samples, and over its voters"
    )
    if with_pictures:
        legend += ";  pictures: its top reference samples"
    # wrap to the figure's width: about 12 characters per inch at 11 points, 16 at 8 points
    title = textwrap.fill(title, int(width * 11.5))
    legend = textwrap.fill(legend, int(width * 16))
    title_lines, legend_lines = title.count("\n") + 1, legend.count("\n") + 1
    header_inches = 0.2 + 0.2 * title_lines + 0.15 * legend_lines + 0.15
    height = header_inches + sum(row_room(layer) for layer in chosen)
    figure = figure_class(figsize=(width, height), dpi=dpi)
    canvas_class(figure)
    figure.text(0.5, 1 - 0.12 / height, title, fontsize=11, ha="center", va="top")
    figure.text(0.5, 1 - (0.2 + 0.2 * title_lines) / height, legend, fontsize=8, color="#444444", ha="center", va="top")
    left, right = 0.7 / width, 1 - 0.3 / width
    slot = (right - left) / top
    above = header_inches
    for layer in chosen:
        entries = atlas.layer_entries(layer, target)[:top]
        picture_inches = picture_room(layer)
        row_top = 1 - above / height
        above += row_room(layer)
        bar_top = row_top - (title_inches + picture_inches) / height
        bar_bottom = bar_top - bar_inches / height
        axes = figure.add_axes((left, bar_bottom, right - left, bar_inches / height))
        positions = list(range(len(entries)))
        rates = [100 * entry.votes / max(samples, 1) for entry in entries]
        bars = axes.bar(positions, rates, width=0.7, color="#4c72b0")
        axes.bar_label(bars, labels=[f"{entry.votes}" for entry in entries], padding=2, fontsize=8)
        axes.set_xlim(-0.5, top - 0.5)
        axes.set_ylim(0, max([*rates, 1.0]) * 1.25)
        axes.set_xticks(positions)
        axes.set_xticklabels(
            [f"#{e.concept}\nmean {e.mean_share:+.1%}\nvoters {e.voter_share:+.1%}" for e in entries], fontsize=7.5
        )
        axes.set_ylabel("votes\n(% of samples)", fontsize=8)
        axes.tick_params(axis="y", labelsize=7)
        axes.spines[["top", "right"]].set_visible(False)
        axes.set_title(
            f"layer {layer!r} ({atlas.n_concepts[layer]} concepts)",
            fontsize=9.5,
            fontweight="bold",
            loc="left",
            y=1.0 + (picture_inches + 0.05) / bar_inches,
        )
        if not entries:
            axes.text(0.5, 0.5, "no concept got a vote", ha="center", va="center", transform=axes.transAxes)
        pictures = {key[1]: image for key, image in (thumbnails or {}).items() if key[0] == layer}
        if not pictures:
            continue
        for position, entry in enumerate(entries):
            bottom = bar_top + 0.05 / height
            picture = pictures.get(entry.concept)
            if picture is None:
                figure.text(
                    left + (position + 0.5) * slot,
                    bottom + 0.5 * picture_inches / height,
                    "no reference",
                    fontsize=7,
                    color="#888888",
                    ha="center",
                    va="center",
                )
                continue
            image_axes = figure.add_axes(
                (left + (position + 0.04) * slot, bottom, 0.92 * slot, picture_inches / height)
            )
            image_axes.imshow(picture, interpolation="antialiased")
            image_axes.set_axis_off()
    return figure


def _class_label(target: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= target < len(class_names):
        return f"class {target} ({class_names[target]})"
    return f"class {target}"


def _spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (mean ranks for ties); NaN when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    n = len(ra)
    if n == 0:
        return math.nan
    mean_a, mean_b = sum(ra) / n, sum(rb) / n
    da = [r - mean_a for r in ra]
    db = [r - mean_b for r in rb]
    norm = math.sqrt(sum(x * x for x in da) * sum(y * y for y in db))
    if norm == 0:
        return math.nan
    return sum(x * y for x, y in zip(da, db, strict=True)) / norm


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks
