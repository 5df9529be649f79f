"""Affine layers (linear, convolution) under a rule, without zennit's parameter context manager.

A rule's parameter modifiers give an affine layer one weight and bias per term. zennit sets them on the module
inside a context manager on every call; here they are computed once per rule and module
(:class:`ModifiedParameters`), and the layer runs as a plain function of input, weight and bias: forward
(:func:`affine`), transposed (:func:`affine_transposed`) and at an all-zero input (:func:`bias_map`).
"""

from __future__ import annotations

from typing import Any, cast

import torch
import zennit.core
from zennit.core import BasicHook

__all__ = [
    "AFFINE_MODULES",
    "FUNCTIONAL_AFFINE",
    "ModifiedParameters",
    "affine",
    "affine_transposed",
    "bias_map",
    "direct_term",
    "modified_module",
    "same_params",
]

AFFINE_MODULES = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
# modules whose forward is a plain function of (input, weight, bias): their modified parameters can be kept
FUNCTIONAL_AFFINE = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


def modified_module(hook: BasicHook, param_modifier: Any, module: torch.nn.Module) -> Any:
    """The context manager that temporarily modifies ``module``'s parameters, for zennit 0.4.6 and >= 0.4.7."""
    param_mod = getattr(zennit.core, "ParamMod", None)
    if param_mod is not None:
        return param_mod.ensure(param_modifier)(module)
    return zennit.core.mod_params(  # zennit <= 0.4.6
        module, param_modifier, param_keys=hook.param_keys, require_params=hook.require_params
    )


def same_params(modified: torch.nn.Module, params: dict[str, torch.nn.Parameter]) -> bool:
    """Whether the parameter modifier left every parameter of the module as it is (same memory, same shape)."""
    return all(_same_tensor(getattr(modified, name, None), param) for name, param in params.items())


def _same_tensor(value: torch.Tensor | None, param: torch.Tensor) -> bool:
    """Whether ``value`` is ``param``'s memory, seen the same way (a modifier that changed nothing)."""
    return (
        value is not None
        and value.data_ptr() == param.data_ptr()
        and value.shape == param.shape
        and value.stride() == param.stride()
    )


class ModifiedParameters:
    """The weight and bias each term of a rule gives an affine module, computed once while its parameters stay.

    zennit modifies parameters inside a context manager on every call; for one module under one rule the result
    only changes when the module's own parameters do (checked through their memory and version counters).
    """

    def __init__(self, hook: BasicHook, module: torch.nn.Module) -> None:
        self.hook = hook
        self.module = module
        self._token: tuple[Any, ...] | None = None
        self._terms: list[tuple[torch.Tensor, torch.Tensor | None, bool]] = []

    def terms(self) -> list[tuple[torch.Tensor, torch.Tensor | None, bool]]:
        """Per term: ``(weight, bias, unchanged)``, ``unchanged`` when the modifier left every parameter as it is."""
        params = {name: p for name, p in self.module._parameters.items() if p is not None}
        token = tuple((name, p.data_ptr(), p._version) for name, p in params.items())
        if token != self._token:
            terms = []
            for param_mod in self.hook.param_modifiers:
                term = direct_term(param_mod, self.module, params)
                if term is None:
                    with modified_module(self.hook, param_mod, self.module) as modified:
                        bias = getattr(modified, "bias", None)
                        term = (
                            modified.weight.detach(),
                            None if bias is None else bias.detach(),
                            same_params(modified, params),
                        )
                terms.append(term)
            self._terms, self._token = terms, token
        return self._terms


def direct_term(
    param_mod: Any, module: torch.nn.Module, params: dict[str, torch.nn.Parameter]
) -> tuple[torch.Tensor, torch.Tensor | None, bool] | None:
    """What ``zennit.core.ParamMod`` would set ``module``'s weight and bias to, without setting them (its context
    manager replaces and restores the parameters, several times slower); ``None`` where that shortcut does not apply
    (zennit <= 0.4.6, a ParamMod subclass, missing parameters)."""
    param_mod_type = getattr(zennit.core, "ParamMod", None)
    if param_mod_type is None:
        return None
    param_mod = param_mod_type.ensure(param_mod)
    if type(param_mod).__call__ is not param_mod_type.__call__:
        return None
    keys = list(params) if param_mod.param_keys is None else list(param_mod.param_keys)
    if "weight" not in params or any(key not in params and not hasattr(module, key) for key in keys):
        return None  # zennit raises or skips: let it
    modifier = zennit.core.zero_wrap(param_mod.zero_params or [])(param_mod.modifier)
    values: dict[str, torch.Tensor | None] = {"weight": params.get("weight"), "bias": params.get("bias")}
    unchanged = True
    for key in keys:
        param = params.get(key)
        if param is None:
            continue
        value = modifier(param.data, key)
        unchanged = unchanged and _same_tensor(value, param)
        values[key] = value
    weight, bias = values["weight"], values["bias"]
    assert weight is not None
    return weight.detach(), None if bias is None else bias.detach(), unchanged


def affine(
    module: torch.nn.Module, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """The affine ``module``'s forward on ``input`` with ``weight`` and ``bias`` in place of its own parameters."""
    if isinstance(module, torch.nn.Linear):
        return torch.nn.functional.linear(input, weight, bias)
    return module._conv_forward(input, weight, bias)  # type: ignore[operator]


def affine_transposed(
    module: torch.nn.Module, weight: torch.Tensor, grad: torch.Tensor, input: torch.Tensor
) -> torch.Tensor:
    """``J^T grad`` of the affine map with ``weight`` at ``input`` (differentiable in ``grad``, for double backward)."""
    if isinstance(module, torch.nn.Linear):
        return grad.matmul(weight)
    conv = cast(torch.nn.modules.conv._ConvNd, module)
    dims = input.dim() - 2
    return torch.ops.aten.convolution_backward(
        grad,
        input,
        weight,
        None,
        list(conv.stride),
        list(conv.padding),
        list(conv.dilation),
        False,
        [0] * dims,
        conv.groups,
        [True, False, False],
    )[0]


def bias_map(module: torch.nn.Module, bias: torch.Tensor | None, output: torch.Tensor) -> torch.Tensor:
    """What an affine ``module`` with ``bias`` returns for an all-zero input whose true output is shaped ``output``."""
    if bias is None:
        return torch.zeros_like(output)
    bias = bias.detach().to(output)
    if isinstance(module, torch.nn.Linear):
        return bias.expand_as(output).clone()
    return bias.view(1, -1, *([1] * (output.dim() - 2))).expand_as(output).clone()
