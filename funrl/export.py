"""Export a trained policy as a file that runs with plain torch, no funrl import.

    funrl export RUN [--seed I] --format torchscript|state_dict|onnx [--out PATH]

The policy is seed I's greedy (discrete) or mean (continuous) action of the
newest checkpoint of a ``funrl train`` results folder, what ``funrl eval`` runs.
``B`` is a batch of observations; actions are those of the algorithm's
``evaluation_policy``: int64 ``[B]`` (discrete) or float32 ``[B, *action_shape]``
(continuous, already inside the action bounds).

* ``torchscript``: a traced ``torch.nn.Module``; ``torch.jit.load(path)(obs)``
  with ``obs`` float32 ``[B, *obs_shape]`` (tabular: int64 state indices ``[B]``).
* ``state_dict``: ``torch.save`` of ``{"tensors": {name: tensor}, "metadata": {...}}``
  (metadata: algo, env, obs_shape, action_shape, act_dim, num_layers,
  activation, head) for the MLP algorithms (ppo, a2c, reinforce, dqn, ddpg,
  td3, sac) and tabular (the Q-table). This snippet rebuilds the policy from ``path``::

    import torch
    d = torch.load(path, weights_only=True)
    meta, t = d["metadata"], d["tensors"]
    if meta["head"] == "table":  # tabular: observations are state indices, actions the Q-table's argmax
        policy = lambda obs: t["q"][obs.long()].argmax(-1)
    else:
        layers = []
        for i in range(meta["num_layers"]):  # Linear, activation, ..., Linear
            w = t[f"linear_{i}.weight"]
            layers += [torch.nn.Linear(w.shape[1], w.shape[0]), getattr(torch.nn, meta["activation"])()]
            layers[-2].load_state_dict({"weight": w, "bias": t[f"linear_{i}.bias"]})
        net = torch.nn.Sequential(*layers[:-1]).eval()
        @torch.no_grad()
        def policy(obs):  # [B, *obs_shape] -> int64 [B] or float32 [B, *action_shape]
            out = net(obs.reshape(len(obs), -1).float())[:, : meta["act_dim"]]
            if meta["head"] == "argmax":
                return out.argmax(-1)
            if meta["head"] == "clamp":  # ppo, a2c: the Gaussian mean clipped to the box
                a = torch.clamp(out, t["low"], t["high"])
            else:  # "tanh" (ddpg, td3, sac): squashed, scaled to the box
                a = torch.tanh(out) * ((t["high"] - t["low"]) / 2) + (t["high"] + t["low"]) / 2
            return a.reshape(len(obs), *meta["action_shape"])

* ``onnx``: the torchscript module through ``torch.onnx.export`` (input
  ``obs``, output ``action``, dynamic batch axis); needs the optional extra
  ``pip install funrl[onnx]``.

Every export is checked before it is written: on a batch of observations it
must give the actions of funrl's ``evaluation_policy`` (a config the
state_dict layout cannot describe, e.g. ``layer_norm``, is an error there).
The language-model algorithms (sft, grpo, rloo, ppo_lm) are not exported.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import textwrap
import warnings

import torch

from funrl import checkpoint as ckpt
from funrl import random as jr
from funrl import tree
from funrl.envs import spaces

__all__ = ["export_policy", "FORMATS"]

FORMATS = ("torchscript", "state_dict", "onnx")
_SUFFIX = {"torchscript": ".torchscript.pt", "state_dict": ".state_dict.pt", "onnx": ".onnx"}
# algorithm -> (key of the policy MLP in state.params, None: the params themselves; head for a Box action space)
_MLP = {"ppo": ("actor", "clamp"), "a2c": ("actor", "clamp"), "reinforce": ("actor", None), "dqn": (None, None),
        "ddpg": ("actor", "tanh"), "td3": ("actor", "tanh"), "sac": ("actor", "tanh")}
_TORCH_ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "gelu": "GELU", "elu": "ELU", "silu": "SiLU",
                      "sigmoid": "Sigmoid", "identity": "Identity", "leaky_relu": "LeakyReLU", "softplus": "Softplus"}


class _Policy(torch.nn.Module):
    """``forward(obs [B, *obs_shape]) -> actions``: one seed's eval policy with a fixed key (it is deterministic)."""

    def __init__(self, act, state, key):
        super().__init__()
        self._act, self._state, self._key = act, state, key

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self._act(self._state, self._key, obs)


def _load(run_dir: str, seed):
    """``(cfg, module, env, env_params, config, state of seed)`` of a results folder's newest checkpoint."""
    from funrl.algorithms import get
    from funrl.results import load_trained, read_config_json

    if not os.path.isfile(os.path.join(run_dir, "config.json")) or not os.path.isdir(os.path.join(run_dir, "checkpoints")):
        raise ValueError(f"run_dir: {run_dir!r} is not a funrl results folder (no config.json and checkpoints/)")
    cfg = read_config_json(os.path.join(run_dir, "config.json"))
    module = get(cfg["algo"])
    if not hasattr(module, "evaluation_policy"):
        raise ValueError(f"run_dir: {run_dir!r} is a {cfg['algo']} run; export supports the env-based algorithms "
                         f"({', '.join(sorted(_MLP))}, tabular), not the language-model ones")
    S = int(cfg["seeds"])
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < S:
        raise ValueError(f"seed: expected an int in [0, {S}) (the run has {S} seeds), got {seed!r}")
    run = load_trained(run_dir)
    module, env, env_params, config, states = run.module, run.env, run.env_params, run.config, run.states
    state = tree.map(lambda x: x[seed].detach().cpu(), states)
    return cfg, module, env, env_params, config, state


def _example_obs(env, env_params, n: int = 64) -> torch.Tensor:
    """A batch of ``n`` observations to trace and check with: standard normal (Box) or state indices (Discrete)."""
    space = env.observation_space(env_params)
    g = torch.Generator().manual_seed(0)
    if isinstance(space, spaces.Discrete):
        return torch.randint(0, int(space.n), (n,), generator=g)
    return torch.randn((n, *space.shape), generator=g)


def _state_dict(cfg, env, env_params, config, state) -> dict:
    algo = cfg["algo"]
    obs_shape = list(env.observation_space(env_params).shape)
    act_space = env.action_space(env_params)
    discrete = isinstance(act_space, spaces.Discrete)
    meta = {"algo": algo, "env": cfg["env"], "obs_shape": obs_shape,
            "action_shape": [] if discrete else list(act_space.shape)}
    if algo == "tabular":
        return {"tensors": {"q": state.q.clone()}, "metadata": {**meta, "head": "table"}}
    if algo not in _MLP:
        raise ValueError(f"format: state_dict supports {', '.join(sorted(_MLP))} and tabular, not {algo}; "
                         f"use format='torchscript'")
    if getattr(config, "network", ""):
        raise ValueError(f"format: state_dict describes funrl's default MLP; this {algo} run uses its own network "
                         f"({config.network}); use format='torchscript'")
    where, box_head = _MLP[algo]
    params = state.params if where is None else state.params[where]
    activation = getattr(config, "activation", "relu")
    if set(params) != {f"linear_{i}" for i in range(len(params))} or activation not in _TORCH_ACTIVATIONS:
        raise ValueError(f"format: state_dict describes a plain Linear/activation MLP; this {algo} run's policy is "
                         f"not one (layers {sorted(params)}, activation {activation!r}); use format='torchscript'")
    tensors = {f"{layer}.{name}": t.clone() for layer, p in params.items() for name, t in p.items()}
    if not discrete:
        tensors["low"] = act_space.low.reshape(-1).to(torch.float32).clone()
        tensors["high"] = act_space.high.reshape(-1).to(torch.float32).clone()
    meta.update(num_layers=len(params), activation=_TORCH_ACTIVATIONS[activation],
                act_dim=int(act_space.n) if discrete else len(tensors["low"]),
                head="argmax" if discrete else box_head)
    json.dumps(meta)  # the metadata is plain data
    return {"tensors": tensors, "metadata": meta}


def _state_dict_policy(d: dict):
    """The documented snippet (module docstring), run on a state_dict export ``d`` to check it."""
    ns = {"torch": torch, "path": io.BytesIO()}
    torch.save(d, ns["path"])
    ns["path"].seek(0)
    exec(textwrap.dedent(__doc__.split("rebuilds the policy from ``path``::\n\n", 1)[1].split("\n\n", 1)[0]), ns)
    return ns["policy"]


def _check(exported, reference, obs: torch.Tensor, what: str) -> None:
    with torch.no_grad():
        got, want = exported(obs), reference(obs)
    same = got.dtype == want.dtype and got.shape == want.shape and (
        torch.equal(got, want) if not want.is_floating_point() else torch.allclose(got, want, rtol=1e-5, atol=1e-6))
    if not same:
        raise ValueError(f"format: the {what} export does not reproduce the policy (got {got.dtype} {tuple(got.shape)}, "
                         f"expected {want.dtype} {tuple(want.shape)})" + ("; use format='torchscript'" if what == "state_dict" else ""))


def export_policy(run_dir: str, seed: int = 0, format: str = "torchscript", out: str | None = None) -> str:
    """Write seed ``seed``'s greedy/mean policy of the results folder ``run_dir`` as a plain-torch file.

    Args:
      run_dir: a ``funrl train`` / ``funrl.run`` results folder (config.json + checkpoints/).
      seed: which seed's policy, ``0 <= seed < seeds``.
      format: ``"torchscript"`` (module: obs float32 ``[B, *obs_shape]`` -> actions int64 ``[B]`` or
        float32 ``[B, *action_shape]``), ``"state_dict"`` (tensors + metadata; the module docstring's
        snippet rebuilds an ``nn.Sequential``) or ``"onnx"`` (needs ``pip install funrl[onnx]``).
      out: the file (default ``RUN/policy_seed{seed}.torchscript.pt`` / ``.state_dict.pt`` / ``.onnx``).

    Returns:
      The path written (atomically: temp file in the same folder, then ``os.replace``).

    Raises:
      ValueError: not a results folder, an LM run, ``seed`` out of range, unknown ``format``, or a
        policy the state_dict layout cannot describe.
      ImportError: ``format="onnx"`` without the ``onnx`` package.
    """
    if format not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {format!r}")
    if format == "onnx" and importlib.util.find_spec("onnx") is None:
        raise ImportError("format='onnx' needs the onnx extra (onnx, onnxruntime): pip install 'funrl[onnx]'")
    run_dir = os.fspath(run_dir)
    cfg, module, env, env_params, config, state = _load(run_dir, seed)
    obs = _example_obs(env, env_params)
    reference = _Policy(module.evaluation_policy(config, env, env_params), state, jr.key(0)).eval()
    out = os.fspath(out) if out is not None else os.path.join(run_dir, f"policy_seed{seed}{_SUFFIX[format]}")
    if format == "state_dict":
        d = _state_dict(cfg, env, env_params, config, state)
        _check(_state_dict_policy(d), reference, obs, format)
        return ckpt._atomic_write(out, lambda f: torch.save(d, f))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # funrl's shape checks: constant for a fixed policy
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.13 deprecates torch.jit; it still works
        traced = torch.jit.trace(reference, (obs[:4],), check_trace=False)
        _check(traced, reference, obs, format)
        if format == "torchscript":
            return ckpt._atomic_write(out, lambda f: torch.jit.save(traced, f))
        warnings.filterwarnings("ignore", "no signature found")  # a traced module's forward has none: fine here
        buf = io.BytesIO()
        torch.onnx.export(traced, (obs[:4],), buf, input_names=["obs"], output_names=["action"],
                          dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}}, dynamo=False)
    return ckpt._atomic_write(out, lambda f: f.write(buf.getvalue()))
