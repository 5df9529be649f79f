"""What a scan keeps per layer: RelMax and ActMax top-k, and per-class statistics, mergeable and checkpointable.

Scores per sample and concept (channel) ``c`` of a layer with relevance ``R`` and activation ``a``:

* ``relmax_sum``: ``sum_p R_c(p)`` over spatial positions ``p``; ``relmax_max``: ``max_p R_c(p)``;
* ``relmax_sum_norm`` / ``relmax_max_norm``: the same divided by ``sum_c' |sum_p R_c'(p)|`` (the paper's
  abs-normalisation, so that samples with large outputs do not dominate);
* ``actmax_sum`` / ``actmax_max``: the same over the activation.

Each kept sample also keeps the position of the concept's most relevant (RelMax) or most active (ActMax) unit, used to
crop references to the concept's receptive field.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .topk import TopK, _select

__all__ = ["MODES", "LayerStatistics"]

MODES = ("relmax_sum", "relmax_max", "relmax_sum_norm", "relmax_max_norm", "actmax_sum", "actmax_max")


def _spatial(tensor: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` to ``(N, C, P)``; a linear layer's ``(N, C)`` has one position."""
    return tensor.flatten(2) if tensor.dim() > 2 else tensor.unsqueeze(-1)


def concept_scores(relevance: torch.Tensor, activation: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Scores ``(N, C)`` and positions ``(N, C)`` of every mode, for one batch of one layer."""
    rel, act = _spatial(relevance.detach()).double(), _spatial(activation.detach()).double()
    rel_sum = rel.sum(-1)
    rel_max, rel_argmax = rel.max(-1)
    act_sum = act.sum(-1)
    act_max, act_argmax = act.max(-1)
    total = rel_sum.abs().sum(-1, keepdim=True)
    total = torch.where(total == 0, torch.ones_like(total), total)
    return {
        "relmax_sum": (rel_sum, rel_argmax),
        "relmax_max": (rel_max, rel_argmax),
        "relmax_sum_norm": (rel_sum / total, rel_argmax),
        "relmax_max_norm": (rel_max / total, rel_argmax),
        "actmax_sum": (act_sum, act_argmax),
        "actmax_max": (act_max, act_argmax),
    }


def _update_together(
    tops: list[TopK],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    ids: torch.Tensor | list[torch.Tensor],
) -> None:
    """Update several top-k states of equal shape at once (one sort instead of one per state).

    ``batches[i]`` is ``(scores (n_i, C), positions (n_i, C))`` for ``tops[i]``; ``ids`` the samples' ids, shared by
    all states or one tensor per state. Shorter batches are padded with empty entries, which never displace a kept
    sample, so the result equals updating each state on its own.
    """
    if not tops:
        return
    id_list = ids if isinstance(ids, list) else [ids] * len(tops)
    width = max(b[0].shape[0] for b in batches)
    if width == 0:
        return
    concepts = tops[0].scores.shape[0]
    candidate_scores = torch.full((len(tops), concepts, width), -torch.inf)
    candidate_ids = torch.full((len(tops), concepts, width), -1, dtype=torch.int64)
    candidate_positions = torch.full((len(tops), concepts, width), -1, dtype=torch.int64)
    for i, ((score, position), sample_ids) in enumerate(zip(batches, id_list, strict=True)):
        n = score.shape[0]
        candidate_scores[i, :, :n] = score.detach().float().cpu().T
        candidate_ids[i, :, :n] = sample_ids.to(torch.int64).cpu().view(1, n)
        candidate_positions[i, :, :n] = position.to(torch.int64).cpu().T
    k = tops[0].k
    merged = _select(
        torch.cat([torch.cat([t.scores for t in tops]), candidate_scores.flatten(0, 1)], 1),
        torch.cat([torch.cat([t.ids for t in tops]), candidate_ids.flatten(0, 1)], 1),
        torch.cat([torch.cat([t.positions for t in tops]), candidate_positions.flatten(0, 1)], 1),
        k,
    )
    for i, top in enumerate(tops):
        block = slice(i * concepts, (i + 1) * concepts)
        top.scores, top.ids, top.positions = (m[block].clone() for m in merged)


@dataclass
class LayerStatistics:
    """Running statistics of one layer's ``concepts`` concepts over ``classes`` classes.

    Attributes
    ----------
    top
        Mode name to the dataset-wide :class:`~glocal.index.topk.TopK` of that score.
    class_top
        Class to the RelMax (``relmax_sum``) top-``class_k`` of each concept within that class; only classes that
        occurred are kept (an ImageNet-sized label set does not cost memory for absent classes).
    class_relevance
        ``(classes, concepts)`` float64 sum of ``relmax_sum`` over the samples of each class.
    class_count
        ``(classes,)`` number of samples that contributed to each class.
    """

    concepts: int
    classes: int
    k: int
    class_k: int | None = None
    top: dict[str, TopK] = field(default_factory=dict)
    class_top: dict[int, TopK] = field(default_factory=dict)
    class_relevance: torch.Tensor | None = None
    class_count: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.class_k is None:
            self.class_k = min(self.k, 10)
        if not self.top:
            self.top = {mode: TopK.empty(self.concepts, self.k) for mode in MODES}
        if self.class_relevance is None:
            self.class_relevance = torch.zeros(self.classes, self.concepts, dtype=torch.float64)
        if self.class_count is None:
            self.class_count = torch.zeros(self.classes, dtype=torch.int64)

    def class_entries(self, label: int, concept: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample ids, scores and positions of the samples of class ``label`` that use ``concept`` most."""
        top = self.class_top.get(int(label))
        if top is None:
            empty = torch.zeros(0)
            return empty.long(), empty, empty.long()
        keep = top.ids[concept] >= 0
        return top.ids[concept][keep], top.scores[concept][keep], top.positions[concept][keep]

    def update(
        self,
        ids: torch.Tensor,
        relevance: torch.Tensor,
        activation: torch.Tensor,
        classes: list[list[int]],
        class_relevance: torch.Tensor | None = None,
    ) -> None:
        """Add one batch.

        Parameters
        ----------
        ids
            ``(N,)`` dataset indices of the samples.
        relevance, activation
            ``(N, C, ...)`` the layer's relevance (from each sample's targets together) and activation.
        classes
            Per sample, the classes it counts for in the class statistics.
        class_relevance
            ``(N, L, C, ...)`` relevance per class of each sample when a sample has several (multi-label); ``None``
            when ``relevance`` already is the relevance of the sample's one class.
        """
        scores = concept_scores(relevance, activation)
        _update_together([self.top[mode] for mode in MODES], [scores[mode] for mode in MODES], ids)
        assert self.class_relevance is not None and self.class_count is not None and self.class_k is not None
        for label_slot in range(max((len(c) for c in classes), default=0)):
            rows = [n for n, c in enumerate(classes) if len(c) > label_slot]
            labels = torch.tensor([classes[n][label_slot] for n in rows], dtype=torch.int64)
            if class_relevance is None:
                score, position = scores["relmax_sum"][0][rows], scores["relmax_sum"][1][rows]
            else:
                slot_scores = concept_scores(class_relevance[rows, label_slot], activation[rows])
                score, position = slot_scores["relmax_sum"]
            self.class_relevance.index_add_(0, labels, score)
            self.class_count.index_add_(0, labels, torch.ones_like(labels))
            chosen_ids = ids[rows]
            present = labels.unique().tolist()
            tops = [self.class_top.setdefault(int(label), TopK.empty(self.concepts, self.class_k)) for label in present]
            masks = [labels == label for label in present]
            _update_together(tops, [(score[m], position[m]) for m in masks], [chosen_ids[m] for m in masks])

    def merge(self, other: LayerStatistics) -> LayerStatistics:
        """Statistics of both shards together (top-k exact; sums in float64)."""
        assert other.class_relevance is not None and self.class_relevance is not None
        assert other.class_count is not None and self.class_count is not None
        class_top = dict(self.class_top)
        for label, top in other.class_top.items():
            class_top[label] = class_top[label].merge(top) if label in class_top else top
        return LayerStatistics(
            concepts=self.concepts,
            classes=self.classes,
            k=self.k,
            class_k=self.class_k,
            top={mode: self.top[mode].merge(other.top[mode]) for mode in MODES},
            class_top=class_top,
            class_relevance=self.class_relevance + other.class_relevance,
            class_count=self.class_count + other.class_count,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name to array, for storage and checkpoints (a few arrays per layer: each costs a file).

        ``top/{scores,ids,positions}`` are ``(modes, concepts, k)`` in the order of :data:`MODES`; the class top-k
        arrays stack the classes that occurred (``classes/labels``), ``concepts`` rows per class.
        """
        assert self.class_relevance is not None and self.class_count is not None and self.class_k is not None
        labels = sorted(self.class_top)
        tops = [self.class_top[label] for label in labels] or [TopK.empty(0, self.class_k)]
        return {
            "top/scores": torch.stack([self.top[m].scores for m in MODES]).numpy(),
            "top/ids": torch.stack([self.top[m].ids for m in MODES]).numpy(),
            "top/positions": torch.stack([self.top[m].positions for m in MODES]).numpy(),
            "classes/labels": np.array(labels, dtype=np.int64),
            "classes/scores": torch.cat([t.scores for t in tops]).numpy(),
            "classes/ids": torch.cat([t.ids for t in tops]).numpy(),
            "classes/positions": torch.cat([t.positions for t in tops]).numpy(),
            "classes/relevance_sum": self.class_relevance.numpy(),
            "classes/count": self.class_count.numpy(),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LayerStatistics:
        """Inverse of :meth:`arrays`; also reads one ``<mode>/{scores,ids,positions}`` triple per mode instead of
        ``top/*``, and a dense class layout (``classes * concepts`` rows) without ``classes/labels``."""

        def tensor(key: str) -> torch.Tensor:
            return torch.from_numpy(np.array(arrays[key]))

        if "top/ids" in arrays:
            scores, ids, positions = tensor("top/scores"), tensor("top/ids"), tensor("top/positions")
            top = {mode: TopK(scores[i], ids[i], positions[i]) for i, mode in enumerate(MODES)}
        else:
            top = {
                mode: TopK(tensor(f"{mode}/scores"), tensor(f"{mode}/ids"), tensor(f"{mode}/positions"))
                for mode in MODES
            }
        class_relevance = tensor("classes/relevance_sum")
        classes, concepts = class_relevance.shape
        scores, ids, positions = tensor("classes/scores"), tensor("classes/ids"), tensor("classes/positions")
        labels = (
            np.array(arrays["classes/labels"]).tolist()
            if "classes/labels" in arrays
            else list(range(ids.shape[0] // max(concepts, 1)))
        )
        class_top = {}
        for i, label in enumerate(labels):
            block = slice(i * concepts, (i + 1) * concepts)
            class_top[int(label)] = TopK(scores[block], ids[block], positions[block])
        return cls(
            concepts=concepts,
            classes=classes,
            k=top[MODES[0]].k,
            class_k=int(ids.shape[1]),
            top=top,
            class_top=class_top,
            class_relevance=class_relevance,
            class_count=tensor("classes/count"),
        )
