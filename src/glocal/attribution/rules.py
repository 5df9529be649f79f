"""Run a zennit composite's LRP rules so that one forward pass serves many backward passes.

zennit attaches a rule (a :class:`zennit.core.Hook`) to each module. Its backward hook recomputes the rule's modified
forward terms every time relevance passes, which is right for one backward per forward but wasteful for CRP, where
one forward pass is followed by one backward pass per concept. Here the same rule configuration (input, parameter and
output modifiers, gradient mapper, reducer of a :class:`zennit.core.BasicHook`) is evaluated in two halves:

* at forward time, once per sample: the modified inputs ``x_k``, the modified outputs ``z_k`` (with their autograd
  graph), and the multipliers ``m_k`` the gradient mapper applies to the upper relevance;
* at backward time, once per concept: ``R_in = reducer(x_k, J_k^T (R_out * m_k))``.

Terms whose modified input is zero everywhere (e.g. the negative part of z+ on post-ReLU activations) contribute
nothing and are skipped at backward time. Rules that are not :class:`~zennit.core.BasicHook` (nor ``Pass``) fall
back to zennit's own hook, which is exact but recomputes its forward terms on every backward pass. Linear and
convolution layers get their modified parameters from :mod:`glocal.attribution.affine`, computed once per rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import zennit.core
import zennit.rules
from zennit.core import BasicHook, Hook

from .affine import (
    AFFINE_MODULES,
    FUNCTIONAL_AFFINE,
    ModifiedParameters,
    affine,
    affine_transposed,
    bias_map,
    modified_module,
    same_params,
)

__all__ = ["RelevanceStep", "attach_rules"]

# Rules whose gradient mapper is ``R_out * m_k(outputs)`` and whose reducer is a sum of ``c_k * x_k * g_k`` terms.
_ELEMENTWISE_RULES: tuple[type, ...] = tuple(
    getattr(zennit.rules, name)
    for name in ("Epsilon", "Gamma", "ZPlus", "AlphaBeta", "ZBox", "Norm", "WSquare", "Flat")
    if hasattr(zennit.rules, name)
)
_PRODUCT_REDUCER_RULES: tuple[type, ...] = tuple(
    getattr(zennit.rules, name)
    for name in ("Epsilon", "Gamma", "ZPlus", "AlphaBeta", "ZBox", "Norm")
    if hasattr(zennit.rules, name)
)

_SMALL = 1 << 16  # up to this many elements, counting beats min/max


def _nonzero(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` has any nonzero (or NaN) entry; counted for small tensors, for large floats via min/max
    (both several times faster than any())."""
    if tensor.numel() == 0:
        return False
    if tensor.numel() <= _SMALL:
        return bool(torch.count_nonzero(tensor))
    if not tensor.is_floating_point():
        return bool(tensor.any())
    low, high = torch.aminmax(tensor)
    return bool((low != 0) | (high != 0))


_SCALARS: dict[tuple[float, torch.dtype, torch.device], torch.Tensor] = {}


def _scalar(value: float, like: torch.Tensor) -> torch.Tensor:
    """A shared 0-dim tensor holding ``value`` with ``like``'s dtype and device (never modified in place)."""
    key = (value, like.dtype, like.device)
    scalar = _SCALARS.get(key)
    if scalar is None:
        scalar = _SCALARS[key] = torch.full((), value, dtype=like.dtype, device=like.device)
    return scalar


def _coefficient(reducer: Callable[..., Any], k: int, terms: int, like: torch.Tensor) -> Any:
    """``c_k`` of a product-form reducer ``sum_j c_j * x_j * g_j``: the reducer at ``x_j = g_j = [j == k]``."""
    try:
        units = [1.0 if j == k else 0.0 for j in range(terms)]
        value = reducer(units, units)  # most reducers are plain arithmetic: Python numbers are cheapest
        if isinstance(value, int | float):
            return value
    except (TypeError, AttributeError, RuntimeError):  # a reducer using torch functions: give it tensors
        pass
    one, zero = _scalar(1.0, like), _scalar(0.0, like)
    units_t = [one if j == k else zero for j in range(terms)]
    return reducer(units_t, units_t)


def _as_list(value: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [value] if isinstance(value, torch.Tensor) else list(value)


class RelevanceStep:
    """What one call of a ruled module needs in order to pass relevance from its output to its input.

    Subclasses implement :meth:`propagate`. ``output`` is the module's output as the forward pass saw it.
    """

    def __init__(self, output: torch.Tensor) -> None:
        self.output: torch.Tensor | None = output.detach()

    def propagate(self, relevance: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class PassStep(RelevanceStep):
    """zennit's ``Pass`` rule: the relevance at the output is handed to the input unchanged."""

    def propagate(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance


class BasicRuleStep(RelevanceStep):
    """A :class:`zennit.core.BasicHook` rule, split into its once-per-sample and once-per-concept halves.

    Parameters
    ----------
    hook
        The rule (its modifiers, gradient mapper and reducer are used; the hook itself is never registered).
    module
        The module the rule belongs to.
    input
        The module's input, shape ``(N, ...)``.
    output
        The module's output, shape ``(N, ...)``.
    """

    def __init__(
        self,
        hook: BasicHook,
        module: torch.nn.Module,
        input: torch.Tensor,
        output: torch.Tensor,
        parameters: ModifiedParameters | None = None,
    ) -> None:
        super().__init__(output)
        self.hook = hook
        original = input.detach()
        may_skip = isinstance(hook, _PRODUCT_REDUCER_RULES) or hook.reducer is BasicHook._default_reducer
        self.inputs: list[torch.Tensor] = []  # x_k, as the reducer sees them
        self.outputs: list[torch.Tensor] = []  # z_k, with an autograd graph back to ...
        self._grad_inputs: list[torch.Tensor] = []  # ... these tensors
        self.live: list[bool] = []
        cached = parameters.terms() if parameters is not None else None
        params = {} if cached is not None else dict(module.named_parameters(recurse=False))
        self.module = module
        self._transposed: dict[int, torch.Tensor] = {}  # term -> weight whose transpose maps relevance down
        self._reused: set[int] = set()  # terms whose output is the module's own
        for k, (in_mod, param_mod, out_mod) in enumerate(
            zip(hook.input_modifiers, hook.param_modifiers, hook.output_modifiers, strict=True)
        ):
            modified_input = in_mod(original)
            same_input = modified_input is original
            if modified_input.data_ptr() == original.data_ptr():
                modified_input = modified_input.clone()  # later in-place ops on the input must not reach it
            live = not (may_skip and not _nonzero(modified_input))
            modified_input = modified_input.detach().requires_grad_(live)
            grad_input = modified_input
            if cached is not None:
                # an affine layer with known parameters: z_k without an autograd graph, and J_k^T as a function
                weight, bias, unchanged = cached[k]
                transposed: torch.Tensor | None = weight
                with torch.no_grad():
                    if not live:  # a zero input gives the bias: no need to run the layer
                        modified_output = out_mod(bias_map(module, bias, output))
                    elif same_input and unchanged and out_mod(output) is output:
                        modified_output = output.detach()  # the module's own forward: reuse its output
                        self._reused.add(k)
                    else:
                        plain = affine(module, modified_input, weight, bias)
                        modified_output = out_mod(plain)
                        if modified_output is not plain:  # an output modifier: its derivative is needed
                            with torch.enable_grad():
                                modified_output = out_mod(affine(module, modified_input, weight, bias))
                            transposed = None
                if live and transposed is not None:
                    self._transposed[k] = transposed
                self.inputs.append(modified_input)
                self.outputs.append(modified_output)
                self._grad_inputs.append(grad_input)
                self.live.append(live)
                continue
            with modified_module(hook, param_mod, module) as modified, torch.enable_grad():
                if live and same_input and input.requires_grad and same_params(modified, params):
                    modified_output = out_mod(output)
                    if modified_output is output:
                        # an unmodified term (e.g. the epsilon rule) is the module's own forward: reuse its output
                        # and its autograd graph instead of running the module again
                        grad_input = input
                    else:
                        modified_output = out_mod(modified.forward(modified_input))
                elif live or not isinstance(module, AFFINE_MODULES):
                    modified_output = out_mod(modified.forward(modified_input))
                else:  # an affine layer maps a zero input to its bias: no need to run it
                    modified_output = out_mod(bias_map(modified, getattr(modified, "bias", None), output))
            self.inputs.append(modified_input)
            self.outputs.append(modified_output)
            self._grad_inputs.append(grad_input)
            self.live.append(live)
        detached = [out.detach() for out in self.outputs]
        if isinstance(hook, _ELEMENTWISE_RULES) or hook.gradient_mapper is BasicHook._default_gradient_mapper:
            ones = torch.ones_like(detached[0])
            self.multipliers: list[torch.Tensor] | None = _as_list(hook.gradient_mapper(ones, detached))
            if len(self.multipliers) == 1 and len(detached) > 1:
                self.multipliers = self.multipliers * len(detached)
        else:
            self.multipliers = None
        if self.multipliers is None:  # the mapper runs at backward time: keep reused outputs safe from in-place ops
            detached = [
                d.clone() if z is output or k in self._reused else d
                for k, (d, z) in enumerate(zip(detached, self.outputs, strict=True))
            ]
        self._detached_outputs = detached
        zero = _scalar(0.0, original)
        self._reducer_inputs = [x.detach() if live else zero for x, live in zip(self.inputs, self.live, strict=True)]
        self._zero = zero
        if self.multipliers is not None:
            # a term whose mapped relevance is zero everywhere has a zero gradient: exact to skip for any reducer
            nonzero: dict[int, bool] = {}  # a mapper often hands the same tensor to every term: check it once
            for k, m in enumerate(self.multipliers):
                if self.live[k]:
                    if id(m) not in nonzero:
                        nonzero[id(m)] = _nonzero(m)
                    self.live[k] = nonzero[id(m)]
        self._live_terms = [k for k, is_live in enumerate(self.live) if is_live]
        # A product-form reducer with a single live term k is  c_k * x_k * g_k:  fold c_k * x_k into one tensor,
        # so that each concept costs one multiplication here instead of a call of the general reducer.
        self._scaled_input: torch.Tensor | None = None
        if may_skip and len(self._live_terms) == 1:
            (k,) = self._live_terms
            self._scaled_input = self._reducer_inputs[k] * _coefficient(hook.reducer, k, len(self.inputs), original)

    def propagate(self, relevance: torch.Tensor) -> torch.Tensor:
        live = self._live_terms
        if self.multipliers is not None:
            grad_outputs = {k: relevance * self.multipliers[k] for k in live}
        else:
            mapped = _as_list(self.hook.gradient_mapper(relevance, self._detached_outputs))
            grad_outputs = {k: mapped[k] for k in live}
        gradients: list[torch.Tensor] = [self._zero] * len(self.inputs)
        through_graph = [k for k in live if k not in self._transposed]
        for k in live:
            if k in self._transposed:
                gradients[k] = affine_transposed(self.module, self._transposed[k], grad_outputs[k], self.inputs[k])
        if through_graph:
            computed = torch.autograd.grad(
                [self.outputs[k] for k in through_graph],
                [self._grad_inputs[k] for k in through_graph],
                grad_outputs=[grad_outputs[k] for k in through_graph],
                retain_graph=True,
                create_graph=relevance.requires_grad,
            )
            for k, gradient in zip(through_graph, computed, strict=True):
                gradients[k] = gradient
        if self._scaled_input is not None:
            return self._scaled_input * gradients[live[0]]
        result = self.hook.reducer(self._reducer_inputs, gradients)
        if not isinstance(result, torch.Tensor) or result.shape != self.inputs[0].shape:
            result = torch.as_tensor(result).expand(self.inputs[0].shape).clone()
        return result


class _RelevanceFunction(torch.autograd.Function):
    """Autograd node whose value is the module's output and whose backward is the LRP rule."""

    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, step: RelevanceStep) -> torch.Tensor:
        ctx.step = step
        # hand the output over and forget it: a step that kept its own output would close a reference cycle
        # (node -> ctx -> step -> output -> node) through C++ autograd objects that the garbage collector cannot see
        output, step.output = step.output, None
        assert output is not None, "a relevance step is applied once"
        return output

    @staticmethod
    def backward(ctx: Any, relevance: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.step.propagate(relevance), None


StepFactory = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], RelevanceStep]


def _step_factory(hook: Hook, module: torch.nn.Module) -> StepFactory | None:
    if isinstance(hook, BasicHook):
        numeric_padding = isinstance(module, torch.nn.Linear) or (
            not isinstance(getattr(module, "padding", 0), str) and getattr(module, "padding_mode", "zeros") == "zeros"
        )
        if (
            numeric_padding
            and isinstance(module, FUNCTIONAL_AFFINE)
            and "forward" not in vars(module)
            and type(module).forward
            in (
                torch.nn.Linear.forward,
                torch.nn.Conv1d.forward,
                torch.nn.Conv2d.forward,
                torch.nn.Conv3d.forward,
            )
        ):
            parameters = ModifiedParameters(hook, module)
            return lambda module, input, output: BasicRuleStep(hook, module, input, output, parameters)
        return lambda module, input, output: BasicRuleStep(hook, module, input, output)
    if isinstance(hook, zennit.rules.Pass):
        return lambda module, input, output: PassStep(output)
    return None


class _RuleHooks:
    """Forward hooks that attach one :class:`RelevanceStep` per call of a module."""

    def __init__(self, factory: StepFactory) -> None:
        self.factory = factory
        self.stash: list[torch.Tensor] = []

    def pre_forward(self, module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if not args or not isinstance(args[0], torch.Tensor):
            return None
        if getattr(module, "inplace", False):
            # the module would overwrite its input; it gets a copy, the original stays for the rule
            self.stash.append(args[0])
            return (args[0].clone(), *args[1:])
        return None

    def post_forward(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if not args or not isinstance(args[0], torch.Tensor) or not isinstance(output, torch.Tensor):
            return None
        input = self.stash.pop() if getattr(module, "inplace", False) and self.stash else args[0]
        if not (input.requires_grad and torch.is_grad_enabled()):
            return None
        return _RelevanceFunction.apply(input, self.factory(module, input, output))


def attach_rules(model: torch.nn.Module, composite: zennit.core.Composite | None) -> list[Any]:
    """Apply ``composite``'s canonizers and rules to ``model``; return handles whose ``remove()`` undoes it all.

    The handles must be removed in reverse order (rules first, canonizers last).
    """
    handles: list[Any] = []
    if composite is None:
        return handles
    try:
        with torch.no_grad():  # canonizers rewrite parameters; none of that needs an autograd graph
            for canonizer in composite.canonizers:
                handles.extend(canonizer.apply(model))
        ctx: dict[Any, Any] = {}
        for name, module in model.named_modules():
            template = composite.module_map(ctx, name, module)
            if template is None:
                continue
            factory = _step_factory(template, module)
            if factory is None:
                handles.append(template.copy().register(module))
                continue
            hooks = _RuleHooks(factory)
            if getattr(module, "inplace", False):
                handles.append(module.register_forward_pre_hook(hooks.pre_forward))
            handles.append(module.register_forward_hook(hooks.post_forward))
    except BaseException:
        for handle in reversed(handles):
            handle.remove()
        raise
    return handles
