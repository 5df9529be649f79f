"""Concept flipping: switch a layer's concepts off in the order of their relevance and watch the explained output.

For each sample ``x`` with explained output ``t`` and a layer of ``C`` channels, the channel relevances ``R_c`` for
``t`` (CRP: the LRP relevance arriving at the layer, summed over space, :class:`~glocal.ChannelConcept`) give the
orders

* ``"morf"`` -- most relevant first (``R_c`` descending),
* ``"lerf"`` -- least relevant first (``R_c`` ascending),
* ``"actmax"`` -- the sample's own channel activation, summed over space, descending,

and ``random_orders`` seeded random permutations. Switching concepts off means setting the layer's output channels
to zero (removing a concept at that layer, in CRP's sense). With ``S`` steps, ``k_0 = 0 < k_1 < ... < k_S = C``
channels are off (``k_s = floor(s C / S)``; every count when ``S >= C``), and the target's logit ``f(x_{k_s})`` and
softmax probability are recorded at each step. All steps of a sample -- of all its orders, as far as ``batch_size``
allows -- run as one batched forward pass: the layer's output is repeated to one row per step and order and
multiplied by a 0/1 mask per row (the layers below it run once per sample; see :func:`masked_forward`).

The areas (:mod:`glocal.evaluation.areas`), AOPC per order and ABPC, and a paired Wilcoxon test of MoRF's AOPC
against the random orders' mean AOPC over samples, are on the :class:`~.flipping_result.FlippingResult`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ..attribution.concepts import ChannelConcept
from ..attribution.conditions import Condition, PerSample
from ..attribution.engine import Attributor
from ..attribution.inputs import check_input
from ..attribution.layers import resolve_layers
from ..errors import InputError, LayerError
from ..progress import progress_bar
from .batching import Targets, explained_targets, group_chunks, inverse_orders, step_counts
from .flipping_result import FlippingResult

__all__ = ["ORDERS", "ChannelSwitch", "FlippingResult", "channel_masks", "concept_flipping", "switched"]

ORDERS = ("morf", "lerf", "actmax")

logger = logging.getLogger(__name__)


class ChannelSwitch:
    """A forward hook that multiplies a layer's output ``(B, C, ...)`` by a ``(B, C)`` 0/1 mask, set per pass in
    :attr:`mask` (``None``: the output passes unchanged). With :attr:`expand`, the layer runs on one sample and its
    output ``(1, C, ...)`` is repeated to the mask's ``B`` rows first: the layers below run once for all rows."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self.expand = False

    def __call__(self, module: torch.nn.Module, inputs: object, output: object) -> torch.Tensor | None:
        if self.mask is None:
            return None
        rows = self.mask.shape[0] if self.expand else None
        expected = (1 if self.expand else self.mask.shape[0], self.mask.shape[1])
        if not isinstance(output, torch.Tensor) or output.dim() < 2 or tuple(output.shape[:2]) != expected:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise LayerError(
                f"concept flipping switches channels (dimension 1) of the layer's output, expected a tensor "
                f"starting with {expected}, got {shape}. Pick a layer that returns one tensor."
            )
        mask = self.mask.to(output.dtype).view(*self.mask.shape, *([1] * (output.dim() - 2)))
        if rows is not None:
            output = output.expand(rows, *output.shape[1:])
        return output * mask


@contextmanager
def switched(module: torch.nn.Module) -> Iterator[ChannelSwitch]:
    """Attach a :class:`ChannelSwitch` to ``module`` for the block; the hook is removed however the block ends."""
    switch = ChannelSwitch()
    handle = module.register_forward_hook(switch)
    try:
        yield switch
    finally:
        handle.remove()


def channel_masks(orders: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """``(O, S + 1, C)`` 0/1 masks: row ``(o, s)`` switches off the first ``counts[s]`` channels of order ``o``.

    >>> channel_masks(torch.tensor([[2, 0, 1]]), [0, 1, 3])[0].tolist()
    [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    """
    places = inverse_orders(orders)  # (O, C): the step at which each channel goes off
    k = torch.as_tensor(list(counts), device=orders.device)
    return (places[:, None, :] >= k[None, :, None]).float()


def scores_of(output: torch.Tensor) -> torch.Tensor:
    """``(B, classes)`` scores of a model output: the output itself, or summed over trailing dimensions."""
    return output.flatten(2).sum(-1) if output.dim() > 2 else output


def channel_orders(
    relevance: torch.Tensor, activation: torch.Tensor, orders: Sequence[str], random_orders: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The named orders ``(N, O, C)`` and the random ones ``(N, R, C)`` of every sample (ties: the lower channel
    first; the random permutations drawn sample by sample from one generator seeded with ``seed``)."""
    n, channels = relevance.shape
    by_name = {
        "morf": lambda: relevance.argsort(dim=1, descending=True, stable=True),
        "lerf": lambda: relevance.argsort(dim=1, stable=True),
        "actmax": lambda: activation.argsort(dim=1, descending=True, stable=True),
    }
    named = torch.stack([by_name[name]() for name in orders], 1) if orders else torch.empty(n, 0, channels)
    generator = torch.Generator().manual_seed(seed)
    drawn = [torch.randperm(channels, generator=generator) for _ in range(n * random_orders)]
    shuffled = torch.stack(drawn).view(n, random_orders, channels) if drawn else torch.empty(n, 0, channels)
    return named.long(), shuffled.long()


def masked_forward(
    model: torch.nn.Module, inputs: torch.Tensor, rows: torch.Tensor, switch: ChannelSwitch, shared: list[bool]
) -> torch.Tensor:
    """The model's output for ``inputs[rows]`` (all rows of one sample) with ``switch``'s masks.

    While ``shared[0]`` holds, the sample goes in once and the switch repeats the layer's output to all rows (the
    layers below the switched layer run once). Rows that meet again in the model (a skip connection around the
    layer) then broadcast one row against many, which gives the same numbers; a model that cannot (a concatenation,
    an in-place add into the one-row tensor, a reshape by the input's batch size) fails or returns the wrong number
    of rows, and then every pass of the call feeds the repeated input instead (``shared[0]`` becomes False).
    """
    if shared[0]:
        switch.expand = True
        try:
            output = model(inputs[rows[:1]])
            if isinstance(output, torch.Tensor) and output.dim() > 0 and output.shape[0] == rows.numel():
                return output
        except RuntimeError as error:
            logger.info("the model cannot broadcast one sample to the flipping rows (%s); repeating the input", error)
        finally:
            switch.expand = False
        shared[0] = False
    return model(inputs[rows])


def concept_flipping(
    attributor: Attributor,
    inputs: torch.Tensor,
    layer: str,
    *,
    targets: Targets = "prediction",
    steps: int = 32,
    orders: Sequence[str] = ORDERS,
    random_orders: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = True,
) -> FlippingResult:
    """Switch the concepts (channels) of ``layer`` off cumulatively in relevance order and record the explained output.

    Parameters
    ----------
    attributor
        Gives the model and the composite whose CRP relevances rank the channels (one LRP pass for the batch).
    inputs
        ``(N, ...)`` samples; no labels needed.
    layer
        A layer whose output has channels on dimension 1 (a conv or linear layer, a block).
    targets
        The explained output of each sample: ``"prediction"``, one unit for all, or one per sample.
    steps
        ``S``: the curves have ``S + 1`` points, from nothing to every channel switched off.
    orders
        Named orders among ``("morf", "lerf", "actmax")``.
    random_orders
        Number of seeded random orders (0 for none; the Wilcoxon test against random needs them).
    seed
        Seed of the random orders.
    batch_size
        Most rows of one forward pass (each sample and order is ``S + 1`` rows, never split); ``None``: as many as
        keep the batch's input under 2**22 elements.
    progress
        Show a progress bar (forward passes) when they take more than a few seconds.

    Returns
    -------
    FlippingResult
        Logit and probability curves per order; AOPC, ABPC and the Wilcoxon test on it.

    Examples
    --------
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    >>> result = concept_flipping(Attributor(net), torch.rand(5, 4), "1", steps=3, random_orders=4)
    >>> result.switched_off, result.logits["morf"].shape
    ((0, 2, 4, 6), torch.Size([5, 4]))
    """
    inputs = check_input(inputs)
    module = resolve_layers(attributor.model, [layer])[layer]
    unknown = [name for name in orders if name not in ORDERS]
    if unknown or len(set(orders)) != len(orders):
        raise InputError(f"orders must be distinct names among {ORDERS}, got {tuple(orders)}")
    if isinstance(random_orders, bool) or not isinstance(random_orders, int) or random_orders < 0:
        raise InputError(f"random_orders must be a number >= 0, got {random_orders!r}")
    with attributor.session(inputs, record=[layer], heatmap=False, input_grad=False) as run:
        explained = explained_targets(targets, scores_of(run.output.detach()))
        result = run.attribute(Condition(targets=PerSample([[t] for t in explained])))
    activation = result.activations[layer].detach()
    if activation.dim() < 2:
        raise LayerError(f"layer {layer!r} has output shape {tuple(activation.shape)}: it has no channel dimension")
    relevance = ChannelConcept().relevance(result.relevances[layer].detach()).double().cpu()
    summed = ChannelConcept().relevance(activation).double().cpu()
    n, channels = relevance.shape
    counts = step_counts(channels, steps)
    named, shuffled = channel_orders(relevance, summed, orders, random_orders, seed)
    every = torch.cat([named, shuffled], 1)  # (N, O + R, C)
    per_sample = every.shape[1]
    rows = len(counts)
    logits = torch.empty(n, per_sample, rows, dtype=torch.float64)
    probabilities = torch.empty_like(logits)
    # chunks of whole (sample, order) groups, never two samples in one: the layers below run on the sample once
    chunks = [
        range(sample * per_sample + part.start, sample * per_sample + part.stop)
        for sample in range(n)
        for part in group_chunks(per_sample, rows, inputs[0].numel(), batch_size)
    ]
    target_units = torch.as_tensor(explained, device=inputs.device)
    shared = [True]  # until the model fails to broadcast one sample's lower layers to all rows
    with (
        torch.no_grad(),
        switched(module) as switch,
        progress_bar(len(chunks), "concept flipping", enabled=progress, unit="pass") as bar,
    ):
        for chunk in chunks:
            group = torch.arange(chunk.start, chunk.stop)
            sample, order = group // per_sample, group % per_sample
            masks = channel_masks(every[sample, order], counts)  # (G, S + 1, C)
            switch.mask = masks.flatten(0, 1).to(inputs.device)
            sample_rows = sample.to(inputs.device).repeat_interleave(rows)
            scores = scores_of(masked_forward(attributor.model, inputs, sample_rows, switch, shared))
            chosen = target_units[sample_rows][:, None]
            logit = scores.gather(1, chosen)[:, 0].double().cpu()
            probability = scores.double().softmax(1).gather(1, chosen)[:, 0].cpu()
            logits[sample, order] = logit.view(-1, rows)
            probabilities[sample, order] = probability.view(-1, rows)
            bar.update(1)
    names = list(orders)
    return FlippingResult(
        layer=layer,
        channels=channels,
        switched_off=tuple(counts),
        targets=tuple(explained),
        logits={name: logits[:, i] for i, name in enumerate(names)},
        probabilities={name: probabilities[:, i] for i, name in enumerate(names)},
        random_logits=logits[:, len(names) :].transpose(0, 1).contiguous(),
        random_probabilities=probabilities[:, len(names) :].transpose(0, 1).contiguous(),
        relevance=relevance,
        seed=seed,
    )
