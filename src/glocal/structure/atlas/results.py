"""What an atlas holds: its entries (:class:`AtlasEntry`) and the :class:`ConceptAtlas` itself.

The atlas answers questions about its votes (top concepts, voters, vote counts), compares itself with another atlas
(:meth:`ConceptAtlas.agreement`, with Spearman's rank correlation written out below), links its entries to a concept
index's reference samples, and round-trips through JSON. :func:`ranked_entries` turns vote and share sums into
entries in the atlas's order; the voting (:func:`~glocal.concept_atlas`) and :meth:`ConceptAtlas.from_votes` use it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ...errors import InputError, LayerError
from ...serialize import read_json, write_json

if TYPE_CHECKING:
    from ...index.concept_index import ConceptIndex

__all__ = ["AtlasEntry", "ConceptAtlas", "ranked_entries"]


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
            layer: ranked_entries(
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


def _entry(item: Mapping[str, Any]) -> AtlasEntry:
    return AtlasEntry(
        concept=int(item["concept"]),
        votes=int(item["votes"]),
        mean_share=float(item["mean_share"]),
        voter_share=float(item["voter_share"]),
        references=tuple(int(i) for i in item.get("references", ())),
    )


def ranked_entries(
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
