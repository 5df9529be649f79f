"""zennit-crp's gradient-mask hook (``crp.hooks.MaskHook``), a zennit hook for ``NameMapComposite``.

:class:`MaskHook` applies a list of mask functions to the gradient arriving at a module's output. zennit-crp builds
one per conditioned layer; code that registers its own (``NameMapComposite([([name], MaskHook([fn]))])``) runs
unchanged.

>>> layer = torch.nn.Linear(2, 3)
>>> hook = MaskHook([lambda grad: grad * torch.tensor([1.0, 0.0, 1.0])])
>>> handles = hook.register(layer)
>>> x = torch.ones(1, 2, requires_grad=True)
>>> layer(x).sum().backward()
>>> handles.remove()
>>> torch.allclose(x.grad, layer.weight[[0, 2]].sum(0, keepdim=True))
True
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from zennit.core import RemovableHandle, RemovableHandleList

__all__ = ["MaskHook"]


class MaskHook:
    """Multiplies (or otherwise modifies) the gradient at a module's output by each function of ``fn_list`` in turn.

    Parameters
    ----------
    fn_list
        Functions ``grad -> grad``; copies of the hook share the list, so functions added later apply to every copy.
    """

    def __init__(self, fn_list: list[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.fn_list = fn_list

    def post_forward(self, module: torch.nn.Module, input: Any, output: Any) -> Any:
        """Forward hook: register :meth:`backward` on the module's output tensor."""
        hook_ref = weakref.ref(self)

        @functools.wraps(self.backward)
        def wrapper(grad: torch.Tensor) -> torch.Tensor:
            hook = hook_ref()
            return grad if hook is None else hook.backward(module, grad)

        first = output[0] if isinstance(output, tuple) else output
        if first.grad_fn is not None:
            first.register_hook(wrapper)
        return output

    def backward(self, module: torch.nn.Module, grad: torch.Tensor) -> torch.Tensor:
        """Apply the mask functions to the gradient at the module's output."""
        for mask_fn in self.fn_list:
            grad = mask_fn(grad)
        return grad

    def copy(self) -> MaskHook:
        """A hook sharing this hook's ``fn_list`` (zennit copies one hook per module)."""
        return self.__class__(fn_list=self.fn_list)

    def remove(self) -> None:
        """Forget the mask functions (zennit calls this when the composite is removed)."""
        self.fn_list.clear()

    def register(self, module: torch.nn.Module) -> RemovableHandleList:
        """Attach to ``module``; the returned handle removes the hook and clears ``fn_list``."""
        return RemovableHandleList([RemovableHandle(self), module.register_forward_hook(self.post_forward)])
