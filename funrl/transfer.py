"""Warm starts: begin training from the params of a finished run (``funrl train --init DIR``).

Every algorithm module says where its learned params live in its state
(``PARAMS``, a dotted path of fields and keys, e.g. ``"params"`` or DQN's
``"learner.params"``; the tabular Q-table is ``"q"``) and which target copies
are made from them (``TARGETS``, e.g. ``{"target_params": "params"}``).  A warm
start reads the newest good checkpoint of a results folder (with
:mod:`funrl.checkpoint`: nothing is unpickled), takes the params only -- not
the optimizer state, env states, replay buffer, keys or counters -- and puts
them into a freshly initialised state, targets included (target = loaded
params).  Source and destination may be different algorithms when their params
have the same structure (e.g. PPO's actor-critic into A2C).

Seeds: by default seed *i* starts from the source's seed *i* (the seed counts
must match); ``init_seed=j`` starts every seed from the source's seed *j*.

Usage::

    source = funrl.run("ppo", env="CartPole-v1", seeds=8, out="runs/source")
    tuned = funrl.run("ppo", env="CartPole-v1", seeds=8, init="runs/source",
                      env_params={"length": 1.0}, freeze=r"^critic\\.linear_0\\.")
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

import torch

from funrl import checkpoint as ckpt
from funrl import tree
from funrl.algorithms import get
from funrl.algorithms.common import param_paths
from funrl.results import read_config_json

__all__ = [
    "get_path",
    "set_path",
    "params_of",
    "with_params",
    "load_params",
    "select_seeds",
    "check_same_params",
    "warm_start",
    "keep_fresh",
]


def get_path(state: Any, path: str) -> Any:
    """The part of ``state`` at ``path``: dot-separated NamedTuple fields / dict keys (``"learner.params"``)."""
    node = state
    for name in path.split("."):
        if isinstance(node, dict):
            if name not in node:
                raise KeyError(f"path {path!r}: no key {name!r} (keys: {', '.join(map(str, node))})")
            node = node[name]
        elif hasattr(node, "_fields"):
            if name not in node._fields:
                raise KeyError(f"path {path!r}: no field {name!r} (fields: {', '.join(node._fields)})")
            node = getattr(node, name)
        else:
            raise KeyError(f"path {path!r}: {name!r} is inside a {type(node).__name__}, not a NamedTuple or dict")
    return node


def set_path(state: Any, path: str, value: Any) -> Any:
    """A copy of ``state`` with the part at ``path`` replaced by ``value`` (``state`` is not modified)."""
    name, _, rest = path.partition(".")
    child = get_path(state, name)
    new = set_path(child, rest, value) if rest else value
    if isinstance(state, dict):
        return {**state, name: new}
    return state._replace(**{name: new})


def params_of(module: ModuleType, state: Any) -> Any:
    """The learned params in an algorithm's state (leaves ``[S, ...]`` for a batched state)."""
    return get_path(state, module.PARAMS)


def with_params(module: ModuleType, state: Any, params: Any, keep: tuple[str, ...] = ()) -> Any:
    """``state`` with its params replaced by ``params`` and every target copy set to (a clone of) them.

    ``keep``: param paths (as :func:`funrl.algorithms.common.param_paths` names
    them) that stay as they are in ``state``, e.g. what the config sets rather
    than training learns (``module.params_set_by_config(config)``).

    The tensors are cloned contiguous onto the state's device, so the new state
    shares no storage with ``params`` and training never writes into the
    caller's tensors.

    Raises:
      ValueError: ``params`` do not fit (see :func:`check_same_params`).
    """
    current = params_of(module, state)
    check_same_params(current, params)
    # rebuilt in the state's own structure (dict key order included), leaf by leaf by path
    by_path = dict(zip(param_paths(params), tree.leaves(params)))
    leaves = [
        x if p in keep else by_path[p].to(x.device).clone(memory_format=torch.contiguous_format)
        for p, x in zip(param_paths(current), tree.leaves(current))
    ]
    fresh = tree.unflatten(tree.structure(current), leaves)
    state = set_path(state, module.PARAMS, fresh)
    for target, source in getattr(module, "TARGETS", {}).items():
        if isinstance(get_path(state, target), dict) and not get_path(state, target):
            continue  # a state that keeps no copy here (e.g. LoRA: the frozen base is the reference)
        copied = get_path(state, source)
        state = set_path(state, target, tree.map(lambda x: x.clone(memory_format=torch.contiguous_format), copied))
    return state


def load_params(directory: str, map_location: Any = "cpu") -> tuple[Any, dict]:
    """The params of the newest good checkpoint of a results folder.

    Args:
      directory: a ``funrl.run`` results folder (``config.json`` and ``checkpoints/``).
      map_location: where the tensors are loaded.

    Returns:
      ``(params, info)``: params with leaves ``[S, ...]`` (one row per seed of
      the source run) and ``info`` = ``{"dir", "algo", "env", "seeds", "update"}``
      (``update``: the checkpoint's update count, ``num_updates`` for a finished run).

    Raises:
      FileNotFoundError: ``directory`` has no ``config.json``.
      ValueError: its ``config.json`` is not valid JSON or lacks a key (the message names both).
      funrl.checkpoint.CheckpointError: no usable checkpoint.
    """
    config_path = os.path.join(directory, "config.json")
    if not os.path.exists(config_path):
        raise FileNotFoundError(f"init: {directory!r} is not a funrl results folder (no config.json)")
    config = read_config_json(config_path, required=("algo", "env", "seeds"))
    module = get(config["algo"])
    manager = ckpt.CheckpointManager(os.path.join(directory, "checkpoints"))
    if manager.latest_step() is None:
        raise ckpt.CheckpointError(f"init: {os.path.join(directory, 'checkpoints')}: no checkpoint to start from")
    update, saved, _ = manager.load(map_location=map_location)
    params = params_of(module, saved["state"])
    info = {"dir": directory, "algo": config["algo"], "env": config["env"], "seeds": config["seeds"], "update": update}
    return params, info


def select_seeds(params: Any, seeds: int, init_seed: int | None = None) -> Any:
    """Source params (leaves ``[S_src, ...]``) for a run of ``seeds`` seeds.

    ``init_seed`` None: seed for seed (``S_src`` must equal ``seeds``);
    otherwise row ``init_seed`` repeated ``seeds`` times.

    Raises:
      ValueError: the seed counts differ (naming both) or ``init_seed`` is out of range.
    """
    source_seeds = tree.leaves(params)[0].shape[0]
    if init_seed is None:
        if source_seeds != seeds:
            raise ValueError(
                f"init: the source run has {source_seeds} seeds, this run has {seeds}; train as many seeds, "
                f"or pass init_seed (--init-seed I) to start every seed from the source's seed I"
            )
        return params
    if isinstance(init_seed, bool) or not isinstance(init_seed, int) or not 0 <= init_seed < source_seeds:
        raise ValueError(f"init_seed: expected an int in [0, {source_seeds}) (the source run's seeds), got {init_seed!r}")
    return tree.map(lambda x: x[init_seed].unsqueeze(0).expand(seeds, *x.shape[1:]).clone(), params)


def check_same_params(expected: Any, given: Any, name: str = "init") -> None:
    """Raise unless ``given`` has the paths, shapes and dtypes of ``expected`` (both with a leading seed axis).

    Raises:
      ValueError: naming the first path that differs, with the expected and
        given shapes (per seed: without the leading seed axis) or dtypes.
    """
    e_paths, g_paths = param_paths(expected), param_paths(given)
    e_by_path = dict(zip(e_paths, tree.leaves(expected)))
    g_by_path = dict(zip(g_paths, tree.leaves(given)))
    for path in e_paths:
        shown = repr(path) if path else "the params"
        if path not in g_by_path:
            raise ValueError(
                f"{name}: the loaded params have no {shown} (expected shape {tuple(e_by_path[path].shape[1:])}); "
                f"loaded paths: {', '.join(g_paths)}"
            )
        e, g = e_by_path[path], g_by_path[path]
        if e.shape[1:] != g.shape[1:]:
            raise ValueError(
                f"{name}: {shown} has shape {tuple(g.shape[1:])} in the loaded params, expected {tuple(e.shape[1:])}"
            )
        if e.dtype != g.dtype:
            raise ValueError(f"{name}: {shown} has dtype {g.dtype} in the loaded params, expected {e.dtype}")
        if e.shape[0] != g.shape[0]:
            raise ValueError(f"{name}: the loaded params have {g.shape[0]} seeds, the state has {e.shape[0]}")
    extra = [p for p in g_paths if p not in e_by_path]
    if extra:
        raise ValueError(
            f"{name}: the loaded params have {extra[0]!r}, which this algorithm's params do not; "
            f"expected paths: {', '.join(e_paths)}"
        )


def warm_start(
    module: ModuleType, state: Any, directory: str, init_seed: int | None = None, config: Any = None
) -> tuple[Any, dict]:
    """A batched initial state whose params (and targets) are the final params of the run in ``directory``.

    Args:
      module: the algorithm module of ``state`` (``funrl.algorithms.get(name)``).
      state: a freshly initialised batched state (leaves ``[S, ...]``).
      directory: the source results folder.
      init_seed: None (seed for seed) or the source seed every seed starts from.
      config: the run's Config; params that ``module.params_set_by_config(config)``
        names (if the module has it) keep their fresh values.

    Returns:
      ``(state, info)`` with ``info`` as from :func:`load_params` plus ``init_seed``.
    """
    device = tree.leaves(params_of(module, state))[0].device
    params, info = load_params(directory, map_location=device)
    seeds = tree.leaves(params_of(module, state))[0].shape[0]
    params = select_seeds(params, seeds, init_seed)
    return with_params(module, state, params, keep_fresh(module, config)), {**info, "init_seed": init_seed}


def keep_fresh(module: ModuleType, config: Any) -> tuple[str, ...]:
    """The param paths a warm start leaves as initialised: ``module.params_set_by_config(config)``, if any."""
    fn = getattr(module, "params_set_by_config", None)
    return tuple(fn(config)) if fn is not None and config is not None else ()
