"""funrl's algorithms: one readable file each, all with the same shape.

Every module has ``Config`` (a frozen dataclass of documented defaults),
``HYPERPARAMS`` (the float fields that can differ per seed in one vmapped run),
``make_algorithm(config, env, env_params, lift)`` (``init`` / ``update`` built
from pure per-seed pieces), ``make_train(config, env, env_params) ->
train(key, hparams=None)`` and ``evaluation_policy(config, env, env_params) ->
act(state, key, obs)`` (greedy / mean action for ``funrl eval``).

The language-model algorithms (``sft``, ``grpo``, ``rloo``, ``ppo_lm``) have
the same shape with a task from :mod:`funrl.lm.tasks` in place of the env
(``make_env(task_id)``), ``pretrain`` updates before RL and ``evaluate``
(greedy completions' rewards) in place of ``evaluation_policy``; see
:mod:`funrl.algorithms.lm_common`.

Use :func:`get` to look a module up by name, :data:`DEFAULT_ENVS` for the
env or task each algorithm is tuned for and :func:`resolve_config` for the
``Config`` a run uses (what ``funrl train`` and ``funrl.run`` record in
config.json).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
from types import ModuleType
from typing import Any

__all__ = ["ALGORITHMS", "DEFAULT_ENVS", "get", "list_algorithms", "module_path", "resolve_config", "parse_value"]

#: name -> module path
ALGORITHMS: dict[str, str] = {
    "ppo": "funrl.algorithms.ppo",
    "a2c": "funrl.algorithms.a2c",
    "reinforce": "funrl.algorithms.reinforce",
    "dqn": "funrl.algorithms.dqn",
    "tabular": "funrl.algorithms.tabular",
    "ddpg": "funrl.algorithms.ddpg",
    "td3": "funrl.algorithms.td3",
    "sac": "funrl.algorithms.sac",
    "sft": "funrl.algorithms.sft",
    "grpo": "funrl.algorithms.grpo",
    "rloo": "funrl.algorithms.rloo",
    "ppo_lm": "funrl.algorithms.ppo_lm",
}

#: name -> the env id its defaults are tuned for
DEFAULT_ENVS: dict[str, str] = {
    "ppo": "CartPole-v1",
    "a2c": "CartPole-v1",
    "reinforce": "CartPole-v1",
    "dqn": "CartPole-v1",
    "tabular": "FrozenLake-v1",
    "ddpg": "Pendulum-v1",
    "td3": "Pendulum-v1",
    "sac": "Pendulum-v1",
    "sft": "random-walks",
    "grpo": "random-walks",
    "rloo": "random-walks",
    "ppo_lm": "random-walks",
}


def list_algorithms() -> list[str]:
    """Names accepted by :func:`get` and ``funrl train``."""
    return list(ALGORITHMS)


def get(name: str) -> ModuleType:
    """The algorithm module called ``name`` (e.g. ``"ppo"``).

    Raises:
      ValueError: unknown name (the message lists the known ones and close matches).
    """
    return importlib.import_module(module_path(name))


def module_path(name: str) -> str:
    """The module path of the algorithm called ``name``, without importing it.

    Raises:
      ValueError: unknown name (the message lists the known ones and close matches).
    """
    if not isinstance(name, str) or name.lower() not in ALGORITHMS:
        close = difflib.get_close_matches(str(name).lower(), list(ALGORITHMS), n=2)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"algo: unknown algorithm {name!r}{hint}; known: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name.lower()]


def parse_value(field: dataclasses.Field, default: Any, text: str):
    """Parse a command-line string for a Config field, typed like its default.

    Raises:
      ValueError: naming the field, the expected type and the given text.
    """
    name = f"config.{field.name}"
    if isinstance(default, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}: expected a bool (true/false), got {text!r}")
    if isinstance(default, int):
        try:
            return int(text.replace("_", ""))
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = math.nan
            if f == f and f.is_integer():
                return int(f)
            raise ValueError(f"{name}: expected an int, got {text!r}") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{name}: expected a float, got {text!r}") from None
    if isinstance(default, tuple):
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{name}: expected comma-separated ints like 64,64, got {text!r}") from None
    if isinstance(default, str):
        return text
    raise ValueError(f"{name}: cannot be set from the command line (type {type(default).__name__})")


def resolve_config(algo: str, env_id: str | None = None, total_steps: int | None = None, overrides: dict | None = None):
    """The algorithm module, the env id and the resolved ``Config``.

    Precedence: the Config's defaults < the module's ``ENV_CONFIGS[env_id]`` <
    ``total_steps`` < ``overrides`` (values may be strings from the command
    line; they are parsed to each field's type).
    """
    module = get(algo)
    env_id = env_id or DEFAULT_ENVS[algo.lower()]
    fields = {f.name: f for f in dataclasses.fields(module.Config)}
    base = module.Config()
    values = dict(getattr(module, "ENV_CONFIGS", {}).get(env_id, {}))
    if total_steps is not None:
        values["total_timesteps"] = int(total_steps)
    for k, v in (overrides or {}).items():
        if k == "freeze" and k not in fields:
            raise ValueError(f"freeze: {algo} has no network layers to freeze (its Config has no freeze field)")
        if k not in fields:
            close = difflib.get_close_matches(k, list(fields), n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"--set {k}: unknown {algo} config field{hint}; fields: {', '.join(fields)}")
        values[k] = parse_value(fields[k], getattr(base, k), v) if isinstance(v, str) else v
    return module, env_id, dataclasses.replace(base, **values)
