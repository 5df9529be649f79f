"""Affine layers under a rule: the parameters computed directly are those zennit's context manager sets."""

from __future__ import annotations

import pytest
import torch
import zennit.core
import zennit.rules
from zennit_rules import zennit_rules

from glocal.attribution.affine import direct_term, modified_module, same_params


def _modules() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "linear": torch.nn.Linear(5, 3),
        "conv": torch.nn.Conv2d(2, 4, 3),
        "conv without bias": torch.nn.Conv2d(2, 4, 3, bias=False),
    }


@pytest.mark.skipif(not hasattr(zennit.core, "ParamMod"), reason="zennit <= 0.4.6 has no ParamMod: no shortcut")
@pytest.mark.parametrize("module_name", list(_modules()))
@pytest.mark.parametrize("rule_name", list(zennit_rules()))
def test_direct_parameters_equal_zennits_context_manager(rule_name, module_name):
    rule, module = zennit_rules()[rule_name], _modules()[module_name]
    params = {name: p for name, p in module._parameters.items() if p is not None}
    before = {name: p.detach().clone() for name, p in params.items()}
    for param_mod in rule.param_modifiers:
        direct = direct_term(param_mod, module, params)
        assert direct is not None
        with modified_module(rule, param_mod, module) as modified:
            expected_weight = modified.weight.detach().clone()
            expected_bias = None if modified.bias is None else modified.bias.detach().clone()
            expected_unchanged = same_params(modified, params)
        weight, bias, unchanged = direct
        torch.testing.assert_close(weight, expected_weight, rtol=0, atol=0)
        if expected_bias is None:
            assert bias is None
        else:
            torch.testing.assert_close(bias, expected_bias, rtol=0, atol=0)
        assert unchanged == expected_unchanged
    for name, p in params.items():  # the module keeps its own parameters
        assert module._parameters[name] is p
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0)
