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

Use :func:`get` to look a module up by name and :data:`DEFAULT_ENVS` for the
env or task each algorithm is tuned for.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

__all__ = ["ALGORITHMS", "DEFAULT_ENVS", "get", "list_algorithms", "module_path"]

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
