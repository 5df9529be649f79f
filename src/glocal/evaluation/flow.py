"""Where relevance goes in one LRP backward pass: what arrives at each module and what it sends on, and what the
operations written in ``forward`` between modules do to it.

:class:`FlowRecorder` attaches to a model *after* glocal's rules and probes (inside
:meth:`glocal.Attributor.attached`), so it sees the tensors the backward pass really runs through:

* each tapped module's tensor inputs and its output pass through an identity autograd node (:class:`Tap`) whose
  backward adds up the relevance passing it, per sample: at the output, the relevance *arriving* at the module (from
  all its consumers); at an input, the relevance the module *sends* to it (from this module alone, even when the
  input also feeds other modules);
* every autograd node created in ``forward`` outside a leaf module (a residual ``a + b``, ``torch.flatten``,
  ``F.relu6``, ``x * 0.5``, ...) gets a node hook that adds up the relevance arriving at its result and the relevance
  it hands to its computed operands. A :class:`torch.overrides.TorchFunctionMode`, active only during the recorder's
  forward pass, notes which function created each node and which module's ``forward`` was running.

Nothing here changes a value: taps return their input (a copy, so that in-place operations after them stay legal)
and pass the gradient on unchanged, and node hooks return nothing. Every hook is removed when the recorder's block
ends, also after an exception.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["FlowRecorder", "OperationFlow", "Tap"]

T = TypeVar("T")

IN, OUT = "in", "out"


class Tap(torch.autograd.Function):
    """Identity in both directions; its backward hands the relevance passing it to ``recorder.add(key, relevance)``."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, recorder: FlowRecorder, key: tuple[str, str]) -> torch.Tensor:
        ctx.recorder, ctx.key = recorder, key
        return tensor.clone()  # a new tensor: in-place operations downstream stay legal

    @staticmethod
    def backward(ctx: Any, relevance: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        ctx.recorder.add(ctx.key, relevance)
        return relevance, None, None


@dataclass
class OperationFlow:
    """One operation written in ``forward`` outside any leaf module, and the relevance it passed.

    ``module`` is the module whose ``forward`` ran it (``""``: the model's own), ``function`` the torch function
    (``"add"``, ``"__iadd__"``, ``"flatten"``, ...), ``node`` the name of its autograd node (``"AddBackward0"``),
    ``operands`` how many of its inputs are computed tensors (not parameters or constants), ``order`` its place in the
    forward pass (shared with the modules' order), ``producers`` the tapped modules whose outputs feed it.
    """

    module: str
    function: str
    node: str
    operands: int
    order: int
    producers: tuple[str, ...] = ()


class _Mode(TorchFunctionMode):
    """Notes, for each autograd node created while it is active, the function and the innermost running module."""

    def __init__(self, recorder: FlowRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        result = func(*args, **(kwargs or {}))
        node = result.grad_fn if isinstance(result, torch.Tensor) else None
        if node is not None and node not in self.recorder.created:
            name = getattr(func, "__name__", str(func))
            self.recorder.created[node] = (self.recorder.running(), name, next(self.recorder.counter))
        return result


class FlowRecorder:
    """Context manager: taps on ``modules`` and the model's operations recorded for one forward pass at a time.

    Parameters
    ----------
    model
        The model, with glocal's rules already attached (enter the recorder inside ``Attributor.attached``).
    tapped
        Names of the modules whose inputs and output are tapped; ``None``: every leaf module.

    Attributes
    ----------
    sums
        ``(module name, "in" | "out") -> (N,)`` float64 relevance summed per sample over the recorded backward
        passes of the current forward pass (several calls of a module add up).
    operations
        Per recorded operation (an :class:`OperationFlow`): ``(arriving, sent)`` ``(N,)`` sums in :attr:`op_sums`.
    order, calls
        Each tapped module's place in the forward pass (its first call) and how often it ran.
    """

    def __init__(self, model: torch.nn.Module, tapped: Sequence[str] | None = None) -> None:
        self.model = model
        modules = dict(model.named_modules())
        self.leaves = {name for name, module in modules.items() if next(module.children(), None) is None}
        self.tapped = set(self.leaves if tapped is None else tapped)
        self.active = False  # backward passes are recorded (see recording())
        self._recording = False  # a forward pass is tapped (inside forward())
        self._handles: list[Any] = []
        self._node_handles: list[Any] = []
        self._stack: list[str] = []
        self.counter = itertools.count()
        self.created: dict[Any, tuple[str, str, int]] = {}
        self.sums: dict[tuple[str, str], torch.Tensor] = {}
        self.order: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self.operations: list[OperationFlow] = []
        self.op_sums: list[list[torch.Tensor | None]] = []
        self._outputs: dict[Any, str] = {}  # autograd node of a module's output tap -> module name
        self._batch = 0

    # -- attaching ---------------------------------------------------------------------------------------------------
    def __enter__(self) -> FlowRecorder:
        try:
            for name, module in self.model.named_modules():
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(name), prepend=True))
                self._handles.append(module.register_forward_hook(self._post_hook(name), always_call=True))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in itertools.chain(reversed(self._node_handles), reversed(self._handles)):
            handle.remove()
        self._node_handles.clear()
        self._handles.clear()
        self._reset()

    def _reset(self) -> None:
        self.active = False
        self._stack.clear()
        self.created.clear()
        self.sums.clear()
        self.order.clear()
        self.calls.clear()
        self.operations.clear()
        self.op_sums.clear()
        self._outputs.clear()

    def running(self) -> str:
        """The innermost module whose ``forward`` is running now (``""``: none below the model)."""
        return self._stack[-1] if self._stack else ""

    def _pre_hook(self, name: str) -> Callable[..., Any]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            self._stack.append(name)
            if name not in self.tapped or not self._recording:
                return None
            if name not in self.order:
                self.order[name] = next(self.counter)
            self.calls[name] = self.calls.get(name, 0) + 1
            return tuple(Tap.apply(arg, self, (name, IN)) if _differentiable(arg) else arg for arg in args)

        return hook

    def _post_hook(self, name: str) -> Callable[..., Any]:
        def hook(module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            if self._stack and self._stack[-1] == name:
                self._stack.pop()
            if name not in self.tapped or not self._recording or not _differentiable(output):
                return None
            tapped = Tap.apply(output, self, (name, OUT))
            self._outputs[tapped.grad_fn] = name
            return tapped

        return hook

    # -- one forward pass --------------------------------------------------------------------------------------------
    def forward(
        self, run: Callable[[], T], output: Callable[[T], torch.Tensor], input: Callable[[T], torch.Tensor]
    ) -> T:
        """Call ``run()`` (a forward pass of the model) with the taps and the mode active; then hook the operations
        between modules in the autograd graph from ``output(result)`` down to ``input(result)``."""
        self._reset()
        self._recording = True
        self.counter = itertools.count()
        mode = _Mode(self)
        try:
            with mode:
                result = run()
        finally:
            self._recording = False
            self._stack.clear()
        self._hook_operations(output(result), input(result))
        return result

    def _hook_operations(self, output: torch.Tensor, input: torch.Tensor) -> None:
        for handle in self._node_handles:
            handle.remove()
        self._node_handles.clear()
        for node in _graph(output):
            if node not in self.created:
                continue
            module, function, order = self.created[node]
            if module in self.leaves:
                continue  # inside a leaf module: its taps measure it
            computed = tuple(_computed(next_node, input) for next_node, _ in node.next_functions)
            if not any(computed):
                continue
            index = len(self.operations)
            self.operations.append(
                OperationFlow(
                    module=module,
                    function=function,
                    node=type(node).__name__,
                    operands=sum(computed),
                    order=order,
                    producers=self._producers(node),
                )
            )
            self.op_sums.append([None, None])
            self._node_handles.append(node.register_hook(self._node_hook(index, computed)))

    def _node_hook(self, index: int, computed: tuple[bool, ...]) -> Callable[..., None]:
        def hook(grad_inputs: Sequence[torch.Tensor | None], grad_outputs: Sequence[torch.Tensor | None]) -> None:
            if not self.active:
                return
            arriving = _total([g for g in grad_outputs if g is not None], self._batch)
            sent = _total([g for g, c in zip(grad_inputs, computed, strict=False) if c and g is not None], self._batch)
            sums = self.op_sums[index]
            sums[0] = arriving if sums[0] is None else sums[0] + arriving
            sums[1] = sent if sums[1] is None else sums[1] + sent

        return hook

    def _producers(self, node: Any, limit: int = 64) -> tuple[str, ...]:
        """The tapped modules whose outputs reach ``node`` through untapped operations only (nearest first)."""
        found: list[str] = []
        seen: set[Any] = set()
        frontier = [next_node for next_node, _ in node.next_functions]
        while frontier and len(seen) < limit:
            current = frontier.pop(0)
            if current is None or current in seen:
                continue
            seen.add(current)
            if current in self._outputs:
                found.append(self._outputs[current])
                continue
            frontier.extend(next_node for next_node, _ in current.next_functions)
        return tuple(dict.fromkeys(found))

    # -- recording ---------------------------------------------------------------------------------------------------
    def add(self, key: tuple[str, str], relevance: torch.Tensor) -> None:
        """Add one backward pass's relevance at a tap (while :attr:`active`)."""
        if not self.active:
            return
        value = _total([relevance], self._batch)
        self.sums[key] = value if key not in self.sums else self.sums[key] + value

    def recording(self, samples: int) -> _Active:
        """Context manager: record the backward passes run inside it (``samples``: the batch size)."""
        return _Active(self, samples)


class _Active:
    def __init__(self, recorder: FlowRecorder, samples: int) -> None:
        self.recorder, self.samples = recorder, samples

    def __enter__(self) -> None:
        self.recorder.active, self.recorder._batch = True, self.samples

    def __exit__(self, *exc_info: object) -> None:
        self.recorder.active = False


def _differentiable(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.requires_grad and value.is_floating_point()


def _computed(node: Any, input: torch.Tensor) -> bool:
    """Whether an autograd node stands for a tensor computed from the input (not a parameter or a constant)."""
    if node is None:
        return False
    variable = getattr(node, "variable", None)
    return variable is None or variable is input


def _graph(output: torch.Tensor) -> Iterator[Any]:
    """Every autograd node from ``output`` down, each once."""
    seen: set[Any] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(next_node for next_node, _ in node.next_functions)


def _total(tensors: Sequence[torch.Tensor], samples: int) -> torch.Tensor:
    """Per-sample sums ``(samples,)`` float64 of tensors whose first dimension is the batch; a tensor shaped
    otherwise (an operation that moved the batch dimension) adds its total spread evenly over the samples."""
    total = torch.zeros(samples, dtype=torch.float64)
    for tensor in tensors:
        value = tensor.detach()
        if value.dim() > 0 and value.shape[0] == samples:
            total += value.reshape(samples, -1).sum(1).double().cpu()
        else:
            total += float(value.sum()) / samples
    return total
