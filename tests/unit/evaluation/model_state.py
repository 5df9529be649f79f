"""What the evaluation tests compare to see that a model was left as it was: state, flags, gradients, hooks."""

from __future__ import annotations

import torch


def snapshot(model: torch.nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "grad": [(p.requires_grad, p.grad) for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
    }


def assert_unchanged(before: dict, model: torch.nn.Module) -> None:
    after = snapshot(model)
    assert before["training"] == after["training"] and before["hooks"] == after["hooks"]
    assert [(r, g is None) for r, g in before["grad"]] == [(r, g is None) for r, g in after["grad"]]
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])
