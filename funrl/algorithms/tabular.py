"""Tabular Q-learning, Sarsa and expected Sarsa on finite MDPs, as pure pieces.

Read top to bottom: Config -> state -> init -> rollout_step (one env step of
every env and the TD update of the Q-table) -> summarize (the update's
metrics) -> update (the glue) -> make_train.

``Config.method`` picks the TD error (``funrl.losses.value_learning``; Sutton
& Barto, 2018, chapter 6):

* ``"q_learning"`` (Watkins, 1989): ``r + gamma max_a Q(s', a) - Q(s, a)``;
* ``"sarsa"`` (Rummery & Niranjan, 1994): ``r + gamma Q(s', a') - Q(s, a)`` with
  ``a'`` the epsilon-greedy action taken next;
* ``"expected_sarsa"`` (van Seijen et al., 2009): ``r + gamma sum_a pi(a|s')
  Q(s', a) - Q(s, a)`` with ``pi`` the epsilon-greedy policy of the current Q.

Behaviour: epsilon-greedy in the current Q (greedy ties broken at random), with
epsilon annealed linearly from ``start_e`` to ``end_e`` over
``exploration_fraction * total_timesteps`` env steps (counted per seed, like
DQN's).  The action executed at a step is chosen at the end of the previous
step, from the Q-table *before* that step's update (Sutton & Barto's Sarsa
order), for all three methods, so the Sarsa target uses exactly the action that
is executed next.

Several envs per seed (``num_envs``): every env steps at once, all TD errors
are computed from the same Q-table, and each visited ``(s, a)`` moves by
``learning_rate`` times the *mean* TD error of the transitions that visited it
in that step (``scatter_add`` of errors and counts).  With one env this is the
textbook update; with many, a pair visited by k envs at once gets one averaged
step rather than k steps, so the effective step size never exceeds
``learning_rate`` (summing could overshoot for learning rates above 1/k).

Step size: with ``anneal_lr`` (the default) the step taken at global step
``g`` uses ``learning_rate * (1 - g / total_timesteps)``: large steps while
the policy still changes, then averaging that removes the noise of the last
updates.  Why it matters for Sarsa (measured on slippery FrozenLake 4x4, 16
seeds, 200k steps): Sarsa learns the values of its epsilon-greedy behaviour,
so a pair that the final, nearly greedy behaviour seldom takes keeps the value
it had under the early, random behaviour.  With the former defaults
(constant step 0.1, epsilon to 0.1 over half the run) every seed's greedy
policy took the wrong action in state 2 (which the final behaviour takes about
once per 37k steps), 1.8% below the optimal value; lower final epsilon, longer
runs (1M steps) or annealing a 0.1 step did not change that.  A larger,
annealed step (0.5) with epsilon reaching 0.01 after 30% of the run lets the
few late visits correct that value: 14 of 16 seeds optimal in each of two
seed sets, IQM = the optimal value; Q-learning reaches it on 16 of 16 seeds,
expected Sarsa on 15 of 16.

Episode ends: ``terminated`` cuts the bootstrap (discount 0); a time-limit
truncation bootstraps from the real final state (``info["final_obs"]``), as
DQN does, so the Q-table estimates the discounted values of the MDP without
the time limit -- the values :mod:`funrl.dp` computes from
``env.absorbing_tables()``.  After an episode ends the next action is chosen at
the auto-reset state; Sarsa's target at a truncation uses a separate draw at
the final state.

Metrics per update: episode statistics, mean |TD error|, epsilon and, with
``track_greedy_value``, ``greedy_value``: the exact discounted value of the
greedy policy of the Q-table from the initial-state distribution (policy
evaluation by a linear solve, :func:`funrl.dp.policy_evaluation`, with the
env's own tables).  The Q-table is ``state.q`` (float32 ``[S, A]``).

Usage::

    env, env_params = funrl.envs.make("FrozenLake-v1")
    train = tabular.make_train(tabular.Config(method="q_learning"), env, env_params)
    state, metrics = train(funrl.random.key(0))                           # one seed
    states, metrics = torch.func.vmap(train)(funrl.random.split(key, 8))  # 8 seeds
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from funrl import dp, tree
from funrl import random as jr
from funrl.algorithms.common import (
    Algorithm,
    check_config,
    check_total_timesteps,
    episode_metrics,
    hyperparams_from_config,
    lift_pieces,
    make_train_from,
    one_seed_lift,
)
from funrl.envs import spaces
from funrl.envs.wrappers import LogWrapper
from funrl.losses.policies import epsilon_greedy_probs, epsilon_greedy_sample
from funrl.losses.value_learning import expected_sarsa, q_learning, sarsa

__all__ = ["Config", "HYPERPARAMS", "METHODS", "TabularState", "make_algorithm", "make_train", "evaluation_policy"]

#: the TD methods ``Config.method`` accepts
METHODS = ("q_learning", "sarsa", "expected_sarsa")


@dataclasses.dataclass(frozen=True)
class Config:
    """Tabular TD-control hyper-parameters (defaults for FrozenLake-v1, 4x4 slippery; see the module doc)."""

    method: str = "q_learning"  #: "q_learning", "sarsa" or "expected_sarsa"
    total_timesteps: int = 200_000  #: env steps per seed (all envs together)
    num_envs: int = 8  #: parallel envs per seed
    num_steps: int = 125  #: env steps per env between two metric reports (one update)
    learning_rate: float = 0.5  #: TD step size at the start (batchable)
    anneal_lr: bool = True  #: decay the step size linearly to 0 over the run (see the module doc)
    gamma: float = 0.99  #: discount (batchable)
    start_e: float = 1.0  #: initial exploration rate (batchable)
    end_e: float = 0.01  #: final exploration rate (batchable)
    exploration_fraction: float = 0.3  #: fraction of total_timesteps to anneal epsilon over (batchable)
    initial_q: float = 0.0  #: initial value of every Q-table entry
    track_greedy_value: bool = True  #: report the greedy policy's exact value every update

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"config.method: expected one of {METHODS}, got {self.method!r}")
        check_config(
            self,
            positive=("learning_rate",),
            unit=("gamma", "start_e", "end_e", "exploration_fraction"),
            ints=("total_timesteps", "num_envs", "num_steps"),
        )
        check_total_timesteps(self, ("num_envs", "num_steps"))
        if isinstance(self.initial_q, bool) or not isinstance(self.initial_q, (int, float)):
            raise ValueError(f"config.initial_q: expected a number, got {self.initial_q!r}")
        if not isinstance(self.anneal_lr, bool):
            raise ValueError(f"config.anneal_lr: expected a bool, got {self.anneal_lr!r}")
        if not isinstance(self.track_greedy_value, bool):
            raise ValueError(f"config.track_greedy_value: expected a bool, got {self.track_greedy_value!r}")
        if self.track_greedy_value and self.gamma >= 1:
            raise ValueError(
                f"config.gamma: track_greedy_value evaluates the greedy policy exactly and needs gamma < 1, "
                f"got {self.gamma} (set track_greedy_value=False for undiscounted learning)"
            )

    @property
    def steps_per_update(self) -> int:
        """Env steps per seed in one update."""
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // self.steps_per_update)


#: Config fields that can differ per seed in one vmapped run (tensors in the state).
HYPERPARAMS = ("learning_rate", "gamma", "start_e", "end_e", "exploration_fraction")

#: Where the learned params live in the state (a path of fields and keys); ``funrl train --init`` sets them.
PARAMS = "q"
#: Target copies in the state (path -> the params path they copy); a warm start sets them to the loaded params.
TARGETS: dict = {}


class TabularState(NamedTuple):
    """Everything one seed's training carries between updates (a pytree)."""

    q: torch.Tensor  #: float32 [S, A], the Q-table
    env_state: Any  #: batched over num_envs
    obs: torch.Tensor  #: int64 [num_envs], current states
    action: torch.Tensor  #: int64 [num_envs], the actions to take next (chosen at the end of the previous step)
    key: torch.Tensor  #: (2,)
    global_step: torch.Tensor  #: int64 (): env steps taken by this seed
    hparams: dict  #: name -> float tensor ()


class StepInfo(NamedTuple):
    """What one rollout step reports for the update's metrics (shapes [num_envs])."""

    abs_td: torch.Tensor
    episode_return: torch.Tensor
    episode_length: torch.Tensor
    episode_done: torch.Tensor


def _epsilon(hp: dict, total_timesteps: int, step: torch.Tensor) -> torch.Tensor:
    """Linear anneal from ``start_e`` (step 0) to ``end_e`` (``exploration_fraction * total_timesteps``), then flat."""
    duration = hp["exploration_fraction"] * total_timesteps
    frac = torch.clamp(step.to(torch.float32) / torch.clamp(duration, min=1e-8), max=1.0)
    frac = torch.where(duration > 0, frac, torch.ones_like(frac))
    return hp["start_e"] + frac * (hp["end_e"] - hp["start_e"])


def _sizes(env, env_params) -> tuple[int, int]:
    obs_space = env.observation_space(env_params)
    act_space = env.action_space(env_params)
    if not isinstance(obs_space, spaces.Discrete) or not isinstance(act_space, spaces.Discrete):
        raise ValueError(
            f"env: tabular methods need Discrete observation and action spaces, got {obs_space!r} and "
            f"{act_space!r} for {env.name}"
        )
    return obs_space.n, act_space.n


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """Tabular TD control's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    S, A = _sizes(env, env_params)
    if config.track_greedy_value:
        if not hasattr(env, "absorbing_tables"):
            raise ValueError(
                f"config.track_greedy_value: needs an env with exact tables (a funrl.envs.tabular.FiniteMDP), "
                f"got {env.name}; set track_greedy_value=False"
            )
        P_dp, R_dp = env.absorbing_tables()  # float64, terminal states absorbing
        init_dist = env.initial_distribution
    env = LogWrapper(env)
    E, T = config.num_envs, config.num_steps
    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))
    env_step = torch.func.vmap(env.step, in_dims=(0, 0, 0, None))
    td_error = {
        "q_learning": torch.func.vmap(q_learning),
        "sarsa": torch.func.vmap(sarsa),
        "expected_sarsa": torch.func.vmap(expected_sarsa),
    }[config.method]

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> TabularState:
        k_env, k_act, k_next = jr.split(key, 3)
        hp = hyperparams_from_config(config, HYPERPARAMS, hparams, key.device)
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        q = torch.full((S, A), float(config.initial_q), dtype=torch.float32, device=key.device)
        global_step = torch.zeros((), dtype=torch.int64, device=key.device)
        epsilon = _epsilon(hp, config.total_timesteps, global_step)
        action = epsilon_greedy_sample(k_act, torch.index_select(q, 0, obs), epsilon)
        return TabularState(
            q=q, env_state=env_state, obs=obs, action=action, key=k_next, global_step=global_step, hparams=hp
        )

    # ---------------------------------------------------------------- one env step and its TD update
    def rollout_step(state: TabularState):
        key, k_env, k_final, k_reset = jr.split(state.key, 4)
        hp = state.hparams
        s, a, q = state.obs, state.action, state.q
        obs, env_state, reward, terminated, truncated, info = env_step(
            jr.split(k_env, E), state.env_state, a, env_params
        )
        s_final = info["final_obs"]  # the real next state (obs is the reset state where an episode ended)
        done = terminated | truncated
        global_step = state.global_step + E
        eps = _epsilon(hp, config.total_timesteps, global_step)

        q_tm1 = torch.index_select(q, 0, s)  # [E, A]
        q_t = torch.index_select(q, 0, s_final)
        a_final = epsilon_greedy_sample(k_final, q_t, eps)
        a_reset = epsilon_greedy_sample(k_reset, torch.index_select(q, 0, obs), eps)
        discount_t = hp["gamma"] * (~terminated).to(torch.float32)
        r_t = reward.to(torch.float32)
        if config.method == "q_learning":
            td = td_error(q_tm1, a, r_t, discount_t, q_t)
        elif config.method == "sarsa":
            td = td_error(q_tm1, a, r_t, discount_t, q_t, a_final)
        else:
            td = td_error(q_tm1, a, r_t, discount_t, q_t, epsilon_greedy_probs(q_t, eps))

        # simultaneous transitions: each visited (s, a) moves by the mean of its TD errors
        index = s * A + a
        td_sum = torch.zeros(S * A, dtype=q.dtype, device=q.device).scatter_add(0, index, td)
        visits = torch.zeros(S * A, dtype=q.dtype, device=q.device).scatter_add(0, index, torch.ones_like(td))
        lr = hp["learning_rate"]
        if config.anneal_lr:  # the step size of the step taken at global step g is lr * (1 - g / total)
            lr = lr * torch.clamp(1.0 - state.global_step.to(torch.float32) / config.total_timesteps, min=0.0)
        q = q + lr * (td_sum / torch.clamp(visits, min=1.0)).reshape(S, A)

        step_info = StepInfo(
            abs_td=td.abs(),
            episode_return=info["returned_episode_returns"].to(torch.float32),
            episode_length=info["returned_episode_lengths"].to(torch.float32),
            episode_done=info["returned_episode"],
        )
        state = state._replace(
            q=q,
            env_state=env_state,
            obs=obs,
            action=torch.where(done, a_reset, a_final),
            key=key,
            global_step=global_step,
        )
        return state, step_info

    # ---------------------------------------------------------------- metrics
    def summarize(state: TabularState, step_infos: list):
        traj = tree.stack(step_infos)  # leaves [T, E]
        metrics = episode_metrics(traj.episode_return, traj.episode_length, traj.episode_done)
        metrics["abs_td_error"] = traj.abs_td.mean()
        metrics["epsilon"] = _epsilon(state.hparams, config.total_timesteps, state.global_step)
        if config.track_greedy_value:
            P, R = P_dp.to(state.q.device), R_dp.to(state.q.device)
            pi = dp.greedy_policy(state.q.to(torch.float64))
            v = dp.policy_evaluation(P, R, state.hparams["gamma"].to(torch.float64), pi)
            metrics["greedy_value"] = (init_dist.to(v) * v).sum().to(torch.float32)
        return metrics

    rollout_step_l, summarize_l = lift_pieces(lift, rollout_step, summarize)

    # ---------------------------------------------------------------- the glue
    def update(state: TabularState):
        step_infos = []
        for _ in range(T):
            state, step_info = rollout_step_l(state)
            step_infos.append(step_info)
        return state, summarize_l(state, step_infos)

    return Algorithm(init=init, update=update, num_updates=config.num_updates, steps_per_update=T * E)


def make_train(config: Config, env, env_params):
    """``train(key, hparams=None) -> (state, metrics)``: a whole tabular run for one seed, pure.

    ``torch.func.vmap(train)(keys)`` trains one seed per key; pass
    ``hparams={"learning_rate": lrs, ...}`` (tensors with the seed axis) to sweep
    the batchable fields in :data:`HYPERPARAMS`.
    """
    return make_train_from(make_algorithm, config, env, env_params)


def evaluation_policy(config: Config, env, env_params):
    """``act(state, key, obs[K]) -> actions [K]``: the greedy action of the Q-table (ties: lowest index)."""
    _sizes(env, env_params)

    def act(state: TabularState, key, obs):
        return torch.argmax(torch.index_select(state.q, 0, obs.reshape(-1)), -1).reshape(obs.shape)

    return act
