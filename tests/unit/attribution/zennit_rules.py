"""The zennit rules the rule tests run through, one of each kind (bias-free variants where zennit has them)."""

from __future__ import annotations

import zennit.core
import zennit.rules


def zennit_rules() -> dict[str, zennit.core.BasicHook]:
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
