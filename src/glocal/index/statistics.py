"""What a scan keeps per layer: RelMax and ActMax top-k, and per-class statistics, mergeable and checkpointable.

Scores per sample and concept (channel) ``c`` of a layer with relevance ``R`` and activation ``a`` (the recorded
layer's output, e.g. a convolution's output *before* the ReLU that follows it), over spatial positions ``p``:

* ``relmax_sum``: ``sum_p R_c(p)``; ``relmax_max``: ``max_p R_c(p)``;
* ``relmax_sum_norm`` / ``relmax_max_norm``: the same divided by ``sum_c' |sum_p R_c'(p)|`` (the paper's
  abs-normalisation, so that samples with large outputs do not dominate);
* ``actmax_sum``: ``sum_p max(a_c(p), 0)``; ``actmax_max``: ``max_p max(a_c(p), 0)``: ActMax ranks by the *positive*
  activation, what the concept passes on after a rectifier. On a layer whose output is already rectified this is the
  plain activation; on a convolution followed by a ReLU, negative responses (which the ReLU discards) no longer
  cancel the positive ones, and a sample whose concept never fires scores 0;
* ``actmax_sum_norm`` / ``actmax_max_norm``: zennit-crp's ActMax with ``abs_norm=True`` (its default), exactly:
  ``s_c / (sum_c' |s_c'| + 1e-10)`` in float32, with ``s_c = sum_p a_c(p)`` or ``max_p a_c(p)`` of the *raw*
  (unrectified) activation;
* ``actmax_sum_raw`` / ``actmax_max_raw``: zennit-crp's ActMax with ``abs_norm=False``: ``sum_p a_c(p)`` and
  ``max_p a_c(p)`` of the raw activation.

The last four exist so that zennit-crp's rankings can be reproduced (``glocal.compat``); on an unrectified layer
they rank by a sum in which negative responses cancel positive ones. Each kept sample also keeps the position of the
concept's most relevant (RelMax: ``argmax_p R_c(p)``) or most active (ActMax, all variants: ``argmax_p a_c(p)``) unit,
used to crop references to the concept's receptive field.
"""

from __future__ import annotations

import numpy as np
import torch

from .topk import TopK

__all__ = ["MODES", "LayerStatistics"]

MODES = (
    "relmax_sum",
    "relmax_max",
    "relmax_sum_norm",
    "relmax_max_norm",
    "actmax_sum",
    "actmax_max",
    # added later: indexes of older versions hold the six above (in this order) and read the rest as empty
    "actmax_sum_norm",
    "actmax_max_norm",
    "actmax_sum_raw",
    "actmax_max_raw",
)
_ABS_NORM_EPSILON = 1e-10  # zennit-crp's, in its abs-normalisation of ActMax (and RelMax) scores
_FIELDS = ("scores", "ids", "positions")
_FLUSH_SAMPLES = 512  # pending candidates offered together


def _spatial(tensor: torch.Tensor) -> torch.Tensor:
    """``(N, C, ...)`` to ``(N, C, P)``; a linear layer's ``(N, C)`` has one position."""
    return tensor.flatten(2) if tensor.dim() > 2 else tensor.unsqueeze(-1)


def concept_scores(relevance: torch.Tensor, activation: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Scores ``(N, C)`` (float64) and positions ``(N, C)`` of every mode, for one batch of one layer."""
    rel, act = _spatial(relevance.detach()), _spatial(activation.detach())
    # float32 sums (pairwise within the kernel; a float64 accumulation costs ~30x more on CPU), kept as float64
    rel_sum = rel.sum(-1).double()
    rel_max, rel_argmax = rel.max(-1)
    act_sum = act.sum(-1)  # raw (unrectified), float32 as in zennit-crp
    act_max, act_argmax = act.max(-1)
    positive_sum = act.clamp(min=0).sum(-1).double()
    positive_max = act_max.clamp(min=0).double()
    rel_max = rel_max.double()
    total = rel_sum.abs().sum(-1, keepdim=True)
    total = torch.where(total == 0, torch.ones_like(total), total)

    def crp_norm(score: torch.Tensor) -> torch.Tensor:
        return (score / (score.abs().sum(-1, keepdim=True) + _ABS_NORM_EPSILON)).double()

    return {
        "relmax_sum": (rel_sum, rel_argmax),
        "relmax_max": (rel_max, rel_argmax),
        "relmax_sum_norm": (rel_sum / total, rel_argmax),
        "relmax_max_norm": (rel_max / total, rel_argmax),
        "actmax_sum": (positive_sum, act_argmax),
        "actmax_max": (positive_max, act_argmax),
        "actmax_sum_norm": (crp_norm(act_sum), act_argmax),
        "actmax_max_norm": (crp_norm(act_max), act_argmax),
        "actmax_sum_raw": (act_sum.double(), act_argmax),
        "actmax_max_raw": (act_max.double(), act_argmax),
    }


class LayerStatistics:
    """Running statistics of one layer's ``concepts`` concepts over ``classes`` classes.

    The top-k of all modes live in one :class:`~glocal.index.topk.TopK` of ``len(MODES) * concepts`` rows, those of
    all classes in one of ``len(labels) * concepts`` rows, so that a batch costs one comparison (and rarely one
    sort) per layer instead of one per mode and class.

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

    def __init__(
        self,
        concepts: int,
        classes: int,
        k: int,
        class_k: int | None = None,
        top: dict[str, TopK] | None = None,
        class_top: dict[int, TopK] | None = None,
        class_relevance: torch.Tensor | None = None,
        class_count: torch.Tensor | None = None,
    ) -> None:
        self.concepts, self.classes, self.k = concepts, classes, k
        self.class_k = min(k, 10) if class_k is None else class_k
        if top is None:
            self._top = TopK.empty(len(MODES) * concepts, k)
        else:
            self._top = TopK(*(torch.cat([getattr(top[m], name) for m in MODES]) for name in _FIELDS))
        self._labels: list[int] = sorted(class_top) if class_top else []
        self._block = {label: i for i, label in enumerate(self._labels)}
        if class_top:
            self._class_top = TopK(
                *(torch.cat([getattr(class_top[label], name) for label in self._labels]) for name in _FIELDS)
            )
        else:
            self._class_top = TopK.empty(0, self.class_k)
        self.class_relevance = (
            torch.zeros(classes, concepts, dtype=torch.float64) if class_relevance is None else class_relevance
        )
        self.class_count = torch.zeros(classes, dtype=torch.int64) if class_count is None else class_count
        # candidates of recent batches, offered to the top-k together (each offer has a fixed cost)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._pending_classes: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._pending_samples = 0

    @property
    def top(self) -> dict[str, TopK]:
        self._flush()
        c = self.concepts
        return {mode: self._top.rows(i * c, (i + 1) * c) for i, mode in enumerate(MODES)}

    @property
    def class_top(self) -> dict[int, TopK]:
        self._flush()
        c = self.concepts
        return {label: self._class_top.rows(i * c, (i + 1) * c) for i, label in enumerate(self._labels)}

    def class_entries(self, label: int, concept: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample ids, scores and positions of the samples of class ``label`` that use ``concept`` most."""
        self._flush()
        block = self._block.get(int(label))
        if block is None:
            empty = torch.zeros(0)
            return empty.long(), empty, empty.long()
        row = block * self.concepts + concept
        top = self._class_top
        keep = top.ids[row] >= 0
        return top.ids[row][keep], top.scores[row][keep], top.positions[row][keep]

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
        ids = ids.to(torch.int64).cpu()
        n = ids.shape[0]
        if n == 0:
            return
        scores = concept_scores(relevance, activation)
        self._pending.append(
            (
                ids,
                torch.stack([scores[m][0] for m in MODES]).float().cpu(),  # (modes, N, C)
                torch.stack([scores[m][1] for m in MODES]).cpu(),
            )
        )
        for label_slot in range(max((len(c) for c in classes), default=0)):
            members = [i for i, c in enumerate(classes) if len(c) > label_slot]
            labels = torch.tensor([classes[i][label_slot] for i in members], dtype=torch.int64)
            if class_relevance is None:
                score, position = scores["relmax_sum"][0][members], scores["relmax_sum"][1][members]
            else:
                score, position = concept_scores(class_relevance[members, label_slot], activation[members])[
                    "relmax_sum"
                ]
            score = score.cpu()
            self.class_relevance.index_add_(0, labels, score)
            self.class_count.index_add_(0, labels, torch.ones_like(labels))
            self._pending_classes.append((labels, ids[members], score.float(), position.cpu()))
        self._pending_samples += n
        if self._pending_samples >= _FLUSH_SAMPLES:
            self._flush()

    def _flush(self) -> None:
        """Offer the pending candidates to the top-k states (the result does not depend on when this happens)."""
        if self._pending:
            ids = torch.cat([p[0] for p in self._pending])
            scores = torch.cat([p[1] for p in self._pending], 1)
            positions = torch.cat([p[2] for p in self._pending], 1)
            rows = torch.arange(len(MODES) * self.concepts)
            self._top.offer(
                rows,
                scores.transpose(1, 2).flatten(0, 1),  # (modes * C, N): the rows of the stacked state
                ids.expand(rows.shape[0], ids.shape[0]),
                positions.transpose(1, 2).flatten(0, 1),
            )
        if self._pending_classes:
            self._offer_classes(*(torch.cat([p[i] for p in self._pending_classes]) for i in range(4)))
        self._pending, self._pending_classes, self._pending_samples = [], [], 0

    def _offer_classes(
        self, labels: torch.Tensor, ids: torch.Tensor, score: torch.Tensor, position: torch.Tensor
    ) -> None:
        """Offer ``(n, C)`` scores of ``n`` samples with one label each to their classes' top-k, all at once."""
        present, group, counts = labels.unique(return_inverse=True, return_counts=True)
        new = [int(label) for label in present.tolist() if int(label) not in self._block]
        if new:
            for label in new:
                self._block[label] = len(self._labels)
                self._labels.append(label)
            grown = TopK.empty(len(new) * self.concepts, self.class_k)
            self._class_top = TopK(*(torch.cat([getattr(self._class_top, f), getattr(grown, f)]) for f in _FIELDS))
        # place sample i in column slot[i] of its class's block: (classes present, C, widest class) candidates
        order = group.argsort(stable=True)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.empty_like(group)
        slot[order] = torch.arange(len(group)) - starts[group[order]]
        width, c = int(counts.max()), self.concepts
        candidate_scores = torch.full((len(present), width, c), -torch.inf, dtype=torch.float32)
        candidate_ids = torch.full((len(present), width), -1, dtype=torch.int64)
        candidate_positions = torch.full((len(present), width, c), -1, dtype=torch.int64)
        candidate_scores[group, slot] = score
        candidate_ids[group, slot] = ids
        candidate_positions[group, slot] = position.to(torch.int64)
        blocks = torch.tensor([self._block[int(label)] for label in present.tolist()], dtype=torch.int64)
        rows = (blocks[:, None] * c + torch.arange(c)).flatten()
        self._class_top.offer(
            rows,
            candidate_scores.transpose(1, 2).flatten(0, 1),
            candidate_ids[:, None, :].expand(-1, c, -1).flatten(0, 1),
            candidate_positions.transpose(1, 2).flatten(0, 1),
        )

    def merge(self, other: LayerStatistics) -> LayerStatistics:
        """Statistics of both shards together (top-k exact; sums in float64)."""
        self._flush()
        other._flush()
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
        self._flush()
        assert self.class_relevance is not None and self.class_count is not None and self.class_k is not None
        labels = sorted(self._labels)
        order = torch.tensor([self._block[label] for label in labels], dtype=torch.int64)
        rows = (order[:, None] * self.concepts + torch.arange(self.concepts)).flatten()
        return {
            "top/scores": self._top.scores.view(len(MODES), self.concepts, self.k).clone().numpy(),
            "top/ids": self._top.ids.view(len(MODES), self.concepts, self.k).clone().numpy(),
            "top/positions": self._top.positions.view(len(MODES), self.concepts, self.k).clone().numpy(),
            "classes/labels": np.array(labels, dtype=np.int64),
            "classes/scores": self._class_top.scores[rows].numpy(),
            "classes/ids": self._class_top.ids[rows].numpy(),
            "classes/positions": self._class_top.positions[rows].numpy(),
            "classes/relevance_sum": self.class_relevance.numpy(),
            "classes/count": self.class_count.numpy(),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LayerStatistics:
        """Inverse of :meth:`arrays`; also reads one ``<mode>/{scores,ids,positions}`` triple per mode instead of
        ``top/*``, and a dense class layout (``classes * concepts`` rows) without ``classes/labels``."""

        def tensor(key: str) -> torch.Tensor:
            return torch.from_numpy(np.array(arrays[key]))

        top: dict[str, TopK] = {}
        if "top/ids" in arrays:
            scores, ids, positions = tensor("top/scores"), tensor("top/ids"), tensor("top/positions")
            top = {mode: TopK(scores[i], ids[i], positions[i]) for i, mode in enumerate(MODES[: scores.shape[0]])}
        else:
            for mode in MODES:
                if f"{mode}/ids" in arrays:
                    top[mode] = TopK(tensor(f"{mode}/scores"), tensor(f"{mode}/ids"), tensor(f"{mode}/positions"))
        if not top:
            raise KeyError("the arrays hold no top-k state ('top/ids' or '<mode>/ids')")
        first = next(iter(top.values()))
        for mode in MODES:  # modes an older index did not compute stay empty
            if mode not in top:
                top[mode] = TopK.empty(first.scores.shape[0], first.k)
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
