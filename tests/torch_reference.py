"""Plain-torch stand-ins for funrl's networks and optimiser state, for the ``test_*_update.py`` references.

The references are written the way CleanRL writes them (``nn.Linear`` layers,
``torch.optim.Adam``); these helpers only move weights and moments between
that world and funrl's pytrees, so that no funrl network or optimiser code
takes part in computing the expected values.
"""

from __future__ import annotations

import torch

_ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}


def module(mlp_params: dict, activation: str, output_activation: str | None = None) -> torch.nn.Sequential:
    """funrl's MLP params ``{"linear_i": {"weight", "bias"}}`` as an ``nn.Sequential`` (copies of the weights)."""
    layers = []
    n = len(mlp_params)
    for i in range(n):
        p = mlp_params[f"linear_{i}"]
        lin = torch.nn.Linear(p["weight"].shape[1], p["weight"].shape[0])
        with torch.no_grad():
            lin.weight.copy_(p["weight"])
            lin.bias.copy_(p["bias"])
        layers.append(lin)
        if i < n - 1:
            layers.append(_ACTIVATIONS[activation]())
        elif output_activation is not None:
            layers.append(_ACTIVATIONS[output_activation]())
    return torch.nn.Sequential(*layers)


def _linears(m: torch.nn.Module) -> list[torch.nn.Linear]:
    return [x for x in m.modules() if isinstance(x, torch.nn.Linear)]


def as_funrl(m: torch.nn.Module, per_param=None) -> dict:
    """``m``'s Linear layers in funrl's layout ``{"linear_i": {"weight", "bias"}}``.

    ``per_param(p)`` maps each ``nn.Parameter`` (default: its detached value),
    e.g. to its Adam moment.
    """
    f = per_param or (lambda p: p.detach())
    return {f"linear_{i}": {"weight": f(x.weight), "bias": f(x.bias)} for i, x in enumerate(_linears(m))}


def adam_moments(optimizer: torch.optim.Adam, m: torch.nn.Module) -> dict:
    """torch.optim.Adam's ``{"mu": exp_avg, "nu": exp_avg_sq}`` of ``m``'s parameters, in funrl's layout."""
    pairs = (("mu", "exp_avg"), ("nu", "exp_avg_sq"))
    return {name: as_funrl(m, lambda p, key=key: optimizer.state[p][key]) for name, key in pairs}


def funrl_adam_moments(opt_state) -> dict:
    """The first ``{"mu", "nu"}`` found in a funrl optimiser state (whatever chains or wrappers hold it)."""
    if hasattr(opt_state, "mu") and hasattr(opt_state, "nu"):
        return {"mu": opt_state.mu, "nu": opt_state.nu}
    children = opt_state.values() if isinstance(opt_state, dict) else opt_state if isinstance(opt_state, tuple) else ()
    for child in children:
        found = funrl_adam_moments(child)
        if found is not None:
            return found
    return None


class CleanRLActor(torch.nn.Module):
    """CleanRL's ``Actor``: ``tanh(mlp(obs)) * action_scale + action_bias``."""

    def __init__(self, params, low, high):
        super().__init__()
        self.net = module(params, "relu", "tanh")
        self.scale, self.bias = (high - low) / 2, (high + low) / 2

    def forward(self, obs):
        return self.net(obs) * self.scale + self.bias


class CleanRLQNetwork(torch.nn.Module):
    """CleanRL's ``QNetwork``: ``mlp(concat(obs, action))``."""

    def __init__(self, params):
        super().__init__()
        self.net = module(params, "relu")

    def forward(self, obs, action):
        return self.net(torch.cat([obs, action], 1)).squeeze(1)


def deterministic_test_envs():
    """Pendulum cut at 3 steps and the continuous TwoStep probe, each with its termination rule for a reference."""
    from funrl.envs import make
    from funrl.envs.probes import TwoStep

    pendulum, pendulum_params = make("Pendulum-v1", max_episode_steps=3)
    two_step = TwoStep(continuous=True)
    return {
        "pendulum": (pendulum, pendulum_params, lambda obs: torch.zeros(obs.shape[0])),
        "two_step": (two_step, two_step.default_params(), lambda obs: (obs[:, 0] > 0.5).float()),
    }


def run_updates(algo, n: int) -> tuple[list, list]:
    """``n`` updates of an off-policy ``algo`` from ``init(key(6))`` with targets from ``init(key(7))``.

    The targets start from another draw (as after a warm start), so a reference that
    confuses online and target networks differs from the first step.  Returns the
    ``n + 1`` states (initial first) and the ``n`` updates' metrics.
    """
    from funrl import random as jr

    state = algo.init(jr.key(6))
    states, metrics = [state._replace(target_params=algo.init(jr.key(7)).params)], []
    for _ in range(n):
        state, m = algo.update(states[-1])
        states.append(state)
        metrics.append(m)
    return states, metrics
