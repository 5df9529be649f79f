"""The public face of the conditional attribution engine: :class:`Attributor`.

An attributor holds the model, the composite and the concepts; each call (or :meth:`Attributor.session`) attaches
them to the model, runs one forward pass (a :class:`~glocal.Run`) and removes everything again. How a run computes
its relevances is described in :mod:`glocal.attribution.propagation`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import zennit.core

from ..errors import ConditionError
from ..lrp.composites import resolve as resolve_composite
from .concepts import ChannelConcept, Concept
from .conditions import OUTPUT, Condition, as_conditions
from .inputs import check_gradients_enabled, check_input
from .masks import InitRelevance
from .results import Attribution
from .run import OnceChecks, Run
from .session import Session

__all__ = ["Attributor", "InitRelevance", "Run"]


class Attributor:
    """Conditional attributions (CRP) of a model under a zennit composite.

    Parameters
    ----------
    model
        The model to explain. It is left exactly as it was after every call (no hooks, flags or gradients remain).
    composite
        A zennit composite (rules and canonizers), e.g. ``EpsilonPlus(canonizers=[SequentialMergeBatchNorm()])``;
        ``"auto"`` for the one :func:`glocal.lrp.composites.auto` picks for the model's architecture (kept, with the
        reason, in :attr:`choice`); ``None`` for plain gradients. An explicit composite is used as it is. The first
        forward pass emits a :class:`~glocal.CanonizerWarning` when the composite leaves batch norms unmerged or
        residual adds uncovered; a call whose heatmaps keep far more or less relevance than they started from emits
        a :class:`~glocal.ConservationWarning` (see :mod:`glocal.lrp.conservation`), once per attributor.
    concepts
        How layers are split into concepts: one :class:`~glocal.Concept` for every layer, or a mapping from
        layer name to concept (missing layers use :class:`~glocal.ChannelConcept`).
    output_name
        The key that names the model output in dict-form conditions (zennit-crp's ``"y"``).

    Examples
    --------
    >>> import torch
    >>> from zennit.composites import EpsilonPlus
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    >>> attributor = Attributor(net, EpsilonPlus())
    >>> result = attributor(torch.rand(5, 4), [{"0": [c], "y": [1]} for c in range(3)])
    >>> result.input_relevance.shape
    torch.Size([15, 4])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        composite: zennit.core.Composite | str | None = None,
        *,
        concepts: Concept | Mapping[str, Concept] | None = None,
        output_name: str = OUTPUT,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if composite is not None and not isinstance(composite, zennit.core.Composite | str):
            raise TypeError(
                f"composite must be a zennit Composite (e.g. zennit.composites.EpsilonPlus()), 'auto' or None, got "
                f"{type(composite).__name__}"
            )
        self.model = model
        self.composite, self.choice = resolve_composite(model, composite)
        self.checks = OnceChecks(structure_checked=self.composite is None)  # plain gradients: no structure to check
        self.concepts = concepts
        self.output_name = output_name

    def concept(self, layer: str) -> Concept:
        """The concept type used for ``layer``."""
        if self.concepts is None:
            return ChannelConcept()
        if isinstance(self.concepts, Mapping):
            return self.concepts.get(layer, ChannelConcept())
        return self.concepts

    def __call__(
        self,
        data: torch.Tensor,
        conditions: Condition | Mapping[str, Any] | Sequence[Condition | Mapping[str, Any]],
        *,
        record: Sequence[str] = (),
        start_layer: str | None = None,
        init_rel: InitRelevance = None,
        sole_path: bool = True,
        heatmap: bool = True,
        on_device: str | torch.device | None = None,
    ) -> Attribution:
        """Attribute every sample of ``data`` under every condition.

        Parameters
        ----------
        data
            ``(N, ...)`` input batch.
        conditions
            One condition or a list of M (typed :class:`~glocal.Condition` or zennit-crp dicts).
        record
            Layers whose activations and relevances to return.
        start_layer
            Start the backward pass at this layer's output instead of the model output.
        init_rel
            Initial relevance: a callable on the output (or start layer activation), a tensor, or a scalar. Targets,
            when given, then keep only their units of it. Default: the output itself.
        sole_path
            Relevance reaches lower layers only through the conditioned layers (zennit-crp's ``exclude_parallel``).
        heatmap
            Compute the input relevance. Without it the backward pass stops at the lowest recorded layer.
        on_device
            Where to put the results (default: where they were computed).

        Returns
        -------
        Attribution
            ``N * M`` rows in sample-major order.
        """
        chunks = list(
            self.iterate(
                data,
                conditions,
                record=record,
                start_layer=start_layer,
                init_rel=init_rel,
                sole_path=sole_path,
                heatmap=heatmap,
                on_device=on_device,
                chunk_size=None,
            )
        )
        return chunks[0]

    def iterate(
        self,
        data: torch.Tensor,
        conditions: Condition | Mapping[str, Any] | Sequence[Condition | Mapping[str, Any]],
        *,
        record: Sequence[str] = (),
        start_layer: str | None = None,
        init_rel: InitRelevance = None,
        sole_path: bool = True,
        heatmap: bool = True,
        on_device: str | torch.device | None = None,
        chunk_size: int | None = 32,
    ) -> Iterator[Attribution]:
        """Like :meth:`__call__`, but yield one :class:`Attribution` per chunk of ``chunk_size`` conditions.

        The forward pass runs once for all chunks; memory holds one chunk's results at a time. Abandoning the
        iterator half-way leaves the model unchanged.
        """
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of conditions, got {chunk_size}")
        condition_list = as_conditions(conditions, self.output_name)
        layers = [name for c in condition_list for name in c.layers]
        size = len(condition_list) if chunk_size is None else chunk_size
        with self.session(
            data,
            record=record,
            layers=layers,
            start_layer=start_layer,
            init_rel=init_rel,
            sole_path=sole_path,
            heatmap=heatmap,
            on_device=on_device,
        ) as run:
            for begin in range(0, len(condition_list), size):
                yield run.attribute(condition_list[begin : begin + size])

    @contextmanager
    def session(
        self,
        data: torch.Tensor,
        *,
        record: Sequence[str] = (),
        layers: Sequence[str] = (),
        start_layer: str | None = None,
        init_rel: InitRelevance = None,
        sole_path: bool = True,
        heatmap: bool = True,
        on_device: str | torch.device | None = None,
        input_grad: bool = True,
    ) -> Iterator[Run]:
        """Run the forward pass once and yield a :class:`Run` whose ``attribute(conditions)`` can be called often.

        ``layers`` lists the layers later conditions may name (besides ``record``). With ``input_grad=False`` (only
        without heatmaps) the input stays out of the autograd graph and the layers fed by it run without their rule:
        cheaper when only relevances at layers are needed. The model is restored when the block ends.

        Examples
        --------
        >>> from glocal import PerSample
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> with Attributor(net).session(torch.rand(2, 4), record=["0"]) as run:
        ...     plain = run.attribute({"y": [0]})
        ...     top = plain.relevances["0"].argmax(1)
        ...     focused = run.attribute(Condition(targets=0, layers={"0": PerSample(top[:, None])}))
        >>> focused.input_relevance.shape
        torch.Size([2, 4])
        """
        check_gradients_enabled()
        data = check_input(data)
        names = [record] if isinstance(record, str) else list(dict.fromkeys(record))
        probed = [*names, *layers, *([start_layer] if start_layer is not None else [])]
        with self.attached(probed) as begin:
            yield begin(
                data,
                record=names,
                start_layer=start_layer,
                init_rel=init_rel,
                sole_path=sole_path,
                heatmap=heatmap,
                on_device=on_device,
                input_grad=input_grad,
            )

    @contextmanager
    def attached(self, layers: Sequence[str]) -> Iterator[Callable[..., Run]]:
        """Attach rules, canonizers and probes on ``layers`` once; yield ``start(data, **options) -> Run``.

        For many batches in a row (e.g. a dataset scan): each ``start`` call runs one forward pass without
        re-attaching anything. ``options`` are those of :meth:`session`; ``record`` and ``start_layer`` must be
        among ``layers``. One more option, ``input_grad=False`` (with ``heatmap=False``), keeps the input out of the
        autograd graph: layers fed by the input directly then run without their rule, which saves time when only
        relevances at layers are needed (e.g. a dataset scan). The model is restored when the block ends.
        """
        check_gradients_enabled()
        with Session(self.model, self.composite, layers) as session:

            def start(
                data: torch.Tensor,
                *,
                record: Sequence[str] = (),
                start_layer: str | None = None,
                init_rel: InitRelevance = None,
                sole_path: bool = True,
                heatmap: bool = True,
                on_device: str | torch.device | None = None,
                input_grad: bool = True,
            ) -> Run:
                check_gradients_enabled()
                if heatmap and not input_grad:
                    raise ConditionError("heatmap=True needs input_grad=True: heatmaps are relevance at the input")
                names = [record] if isinstance(record, str) else list(dict.fromkeys(record))
                missing = [n for n in [*names, *([start_layer] if start_layer else [])] if n not in session.probes]
                if missing:
                    raise ConditionError(f"layers {missing} were not attached; pass them in attached(layers=...)")
                return Run(
                    self,
                    session,
                    check_input(data),
                    names,
                    start_layer,
                    init_rel,
                    sole_path,
                    heatmap,
                    on_device,
                    input_grad=input_grad,
                )

            yield start
