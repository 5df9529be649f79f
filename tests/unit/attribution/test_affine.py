"""Affine layers under a rule: the parameters computed directly are those zennit's context manager sets."""

from __future__ import annotations

import pytest
import torch
import zennit.core
import zennit.rules

from glocal.attribution.affine import direct_term, modified_module, same_params


def _rules() -> dict[str, zennit.core.BasicHook]:
    rules = {
        "epsilon": zennit.rules.Epsilon(),
        "gamma": zennit.rules.Gamma(gamma=0.25),
        "zplus": zennit.rules.ZPlus(),
        "alpha2beta1": zennit.rules.AlphaBeta(alpha=2.0, beta=1.0),
        "zbox": zennit.rules.ZBox(low=-1.0, high=1.0),
        "flat": zennit.rules.Flat(),
        "wsquare": zennit.rules.WSquare(),
    }
    if "zero_params" in zennit.rules.Epsilon.__init__.__code__.co_varnames:  # zennit >= 0.4.7
        rules["epsilon without bias"] = zennit.rules.Epsilon(zero_params=["bias"])
        rules["gamma without bias"] = zennit.rules.Gamma(gamma=0.25, zero_params=["bias"])
    return rules


def _modules() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "linear": torch.nn.Linear(5, 3),
        "conv": torch.nn.Conv2d(2, 4, 3),
        "conv without bias": torch.nn.Conv2d(2, 4, 3, bias=False),
    }


@pytest.mark.skipif(not hasattr(zennit.core, "ParamMod"), reason="zennit <= 0.4.6 has no ParamMod: no shortcut")
@pytest.mark.parametrize("module_name", list(_modules()))
@pytest.mark.parametrize("rule_name", list(_rules()))
def test_direct_parameters_equal_zennits_context_manager(rule_name, module_name):
    rule, module = _rules()[rule_name], _modules()[module_name]
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
