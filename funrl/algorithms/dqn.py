"""Deep Q-Network (Mnih et al., 2015), CleanRL-style, as pure pieces.

Read top to bottom: Config -> Q-network -> state -> init -> rollout_step
(epsilon-greedy action, env step: ``off_policy.env_step``, shared with DDPG,
TD3 and SAC) -> learn (store the update's transitions in the replay buffer
with ``off_policy.store``, one gradient step on a sampled batch) -> update_target ->
update (the glue) -> make_train.

Defaults are CleanRL's ``dqn.py`` for CartPole-v1: 500k steps, Adam lr 2.5e-4,
a 10k-transition buffer, gamma 0.99, a hard target copy (tau 1) every 500
steps, batches of 128, epsilon annealed linearly from 1 to 0.05 over half the
run, learning from step 10k, one gradient step every 10 env steps, a 120-84
ReLU MLP with PyTorch's default layer init, and CleanRL's loss
``mean((target - q)**2)`` (``loss="huber"`` uses the Huber loss instead, and
``double_q=True`` the Double-DQN target of van Hasselt et al., 2016).

One :func:`update` is ``train_frequency`` rollout steps (each steps
``num_envs`` envs), one gradient step (after adding the update's
``train_frequency * num_envs`` transitions to the buffer, in step order, so the
buffer holds what CleanRL's would) and one target-network update.  All counters are in *env steps* per seed
(``global_step`` grows by ``num_envs`` per rollout step), so ``num_envs > 1``
keeps the meaning of ``learning_starts``, ``exploration_fraction`` and
``target_network_frequency``.  Learning and target updates are switched on
by ``torch.where`` on the state (never a Python branch), so the same graph runs
before and after ``learning_starts``:

* the gradient step is applied (to params and the Adam state) once
  ``global_step >= learning_starts`` (CleanRL: ``>``; its first update also
  comes one env step later — an off-by-one that does not matter);
* the target moves towards the online net, ``target <- tau * online + (1 - tau)
  * target``, in every update whose env steps cross a multiple of
  ``target_network_frequency`` while learning is on.

Episode ends: the buffer stores the real next observation
(``info["final_obs"]``, not the auto-reset one) and bootstraps through
truncations: only ``terminated`` zeroes the discount (CleanRL does the same
through ``infos["final_observation"]`` and ``terminations``).

Usage::

    env, env_params = funrl.envs.make("CartPole-v1")
    train = dqn.make_train(dqn.Config(), env, env_params)
    state, metrics = train(funrl.random.key(0))                           # one seed
    states, metrics = torch.func.vmap(train)(funrl.random.split(key, 8))  # 8 seeds
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from funrl import optim, tree
from funrl import random as jr
from funrl.algorithms import networks, off_policy, replay
from funrl.algorithms.common import (
    Algorithm,
    check_batch_fits_buffer,
    check_config,
    check_freeze,
    check_hidden_sizes,
    check_skip_nonfinite,
    check_total_timesteps,
    freeze_mask,
    hyperparams_from_config,
    lift_pieces,
    make_train_from,
    one_seed_lift,
)
from funrl.envs import spaces
from funrl.envs.wrappers import LogWrapper
from funrl.losses.base import huber_loss
from funrl.losses.policies import epsilon_greedy_sample
from funrl.losses.value_learning import double_q_learning, q_learning

__all__ = [
    "Config",
    "HYPERPARAMS",
    "DQNState",
    "Actor",
    "Learner",
    "StepInfo",
    "make_algorithm",
    "make_train",
    "evaluation_policy",
    "epsilon_schedule",
]

_LOSSES = ("mse", "huber")


@dataclasses.dataclass(frozen=True)
class Config:
    """DQN hyper-parameters (CleanRL's CartPole defaults)."""

    total_timesteps: int = 500_000  #: env steps per seed
    num_envs: int = 1  #: parallel envs per seed (each rollout step adds num_envs transitions)
    learning_rate: float = 2.5e-4  #: Adam step size (batchable)
    adam_eps: float = 1e-8  #: Adam epsilon (torch.optim.Adam's default, as CleanRL)
    buffer_size: int = 10_000  #: replay capacity in transitions
    gamma: float = 0.99  #: discount (batchable)
    tau: float = 1.0  #: target-network step size; 1 = hard copy (batchable)
    target_network_frequency: int = 500  #: env steps between target updates
    batch_size: int = 128  #: transitions per gradient step
    start_e: float = 1.0  #: initial exploration rate (batchable)
    end_e: float = 0.05  #: final exploration rate (batchable)
    exploration_fraction: float = 0.5  #: fraction of total_timesteps to anneal epsilon over (batchable)
    learning_starts: int = 10_000  #: env steps before the first gradient step
    train_frequency: int = 10  #: rollout steps (of num_envs env steps each) per gradient step
    hidden_sizes: tuple = (120, 84)  #: Q-network hidden layers
    activation: str = "relu"  #: hidden activation
    network: str = ""  #: a factory "package.module:function" of your own networks, roles q (see networks.py); "" the MLPs above
    loss: str = "mse"  #: "mse" (CleanRL: mean squared TD error) or "huber" (SB3 / Nature DQN)
    double_q: bool = False  #: Double-DQN target: online net selects, target net evaluates
    max_grad_norm: float | None = None  #: global gradient-norm clip (None: off, as CleanRL)
    freeze: str = ""  #: regex over param paths kept fixed in training ("" none; funrl train --freeze)
    skip_nonfinite: int = 0  #: skip optimizer steps whose gradients are NaN/inf, up to this many in a row (0: off)

    def __post_init__(self):
        check_freeze(self)
        check_skip_nonfinite(self)
        check_hidden_sizes(self)
        networks.check_network(self)
        check_config(
            self,
            positive=("learning_rate", "adam_eps"),
            unit=("gamma", "tau", "start_e", "end_e", "exploration_fraction"),
            ints=(
                "total_timesteps",
                "num_envs",
                "buffer_size",
                "target_network_frequency",
                "batch_size",
                "train_frequency",
            ),
        )
        check_total_timesteps(self, ("num_envs", "train_frequency"))
        check_batch_fits_buffer(self)
        ls = self.learning_starts
        if isinstance(ls, bool) or not isinstance(ls, int) or ls < 0:
            raise ValueError(f"config.learning_starts: expected an int >= 0, got {ls!r}")
        if self.loss not in _LOSSES:
            raise ValueError(f"config.loss: expected one of {_LOSSES}, got {self.loss!r}")
        if not isinstance(self.double_q, bool):
            raise ValueError(f"config.double_q: expected a bool, got {self.double_q!r}")
        if self.max_grad_norm is not None:
            check_config(self, positive=("max_grad_norm",))

    @property
    def steps_per_update(self) -> int:
        """Env steps per seed in one update."""
        return self.num_envs * self.train_frequency

    @property
    def num_updates(self) -> int:
        """Updates in a run (at least 1)."""
        return max(1, self.total_timesteps // self.steps_per_update)


#: Config fields that can differ per seed in one vmapped run (tensors in the state).
HYPERPARAMS = ("learning_rate", "gamma", "tau", "start_e", "end_e", "exploration_fraction")

#: Where the learned params live in the state (a path of fields and keys); ``funrl train --init`` sets them.
PARAMS = "learner.params"
#: Target copies in the state (path -> the params path they copy); a warm start sets them to the loaded params.
TARGETS: dict = {"learner.target_params": "learner.params"}


#: the acting side of one seed (its envs, their last observation, its key and step counter)
Actor = off_policy.Actor


class Learner(NamedTuple):
    """The learning side of one seed: online and target Q-networks, optimiser state, key."""

    params: dict
    target_params: dict
    opt_state: Any
    key: torch.Tensor  #: (2,)


class DQNState(NamedTuple):
    """Everything one seed's training carries between updates (a pytree).

    Split in parts because each piece takes only the parts it reads: measured
    on this CPU, compiling a piece that takes and returns the whole state costs
    over twice the Dynamo tracing of one that takes what it needs (the target
    update: 13 s vs 5.5 s).
    """

    actor: Actor
    learner: Learner
    buffer: replay.ReplayState  #: items {"obs", "action", "reward", "next_obs", "terminated"}
    hparams: dict  #: name -> float tensor ()

    @property
    def params(self) -> dict:
        """The online Q-network's parameters."""
        return self.learner.params

    @property
    def global_step(self) -> torch.Tensor:
        """Env steps taken by this seed (int64 ``()``)."""
        return self.actor.global_step


#: what one rollout step reports for the update's metrics (shapes [num_envs])
StepInfo = off_policy.StepInfo


def epsilon_schedule(start_e, end_e, duration, step) -> torch.Tensor:
    """CleanRL's ``linear_schedule``: from ``start_e`` at step 0 to ``end_e`` at ``duration``, then flat.

    Args:
      start_e, end_e: floats or float tensors ``()``.
      duration: env steps to anneal over (float or tensor ``()``; 0 means
        ``end_e`` from the start).
      step: int or integer tensor ``()``, env steps taken.

    Returns:
      float32 tensor ``()``.  Equals CleanRL's ``max(slope * t + start_e,
      end_e)`` when ``end_e <= start_e``, and also anneals upwards otherwise.
    """
    step = torch.as_tensor(step)
    start = torch.as_tensor(start_e, dtype=torch.float32, device=step.device)
    end = torch.as_tensor(end_e, dtype=torch.float32, device=step.device)
    duration = torch.as_tensor(duration, dtype=torch.float32, device=step.device)
    # clamp(duration) keeps 0/0 out; a zero duration gives frac = 1 from step 0 on
    frac = torch.clamp(step.to(torch.float32) / torch.clamp(duration, min=1e-8), max=1.0)
    frac = torch.where(duration > 0, frac, torch.ones_like(frac))
    return start + frac * (end - start)


def _q_network(config: Config, env, env_params):
    """The Q-network: ``(init(key) -> params, q_values(params, obs[N, ...]) -> [N, A])``."""
    obs_space = env.observation_space(env_params)
    act_space = env.action_space(env_params)
    if not isinstance(act_space, spaces.Discrete):
        raise ValueError(f"env: DQN needs a Discrete action space, got {act_space!r} for {env.name}")
    net = networks.discrete_q_network(obs_space.shape, act_space.n, config.hidden_sizes, config.activation, config.network)

    def q_values(params, obs):
        return net.apply(params, obs.reshape(obs.shape[0], -1).to(torch.float32))

    return net.init, q_values, act_space.n


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """DQN's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    env = LogWrapper(env)
    E, F = config.num_envs, config.train_frequency
    steps_per_update = config.steps_per_update
    init_params, q_values, _ = _q_network(config, env, env_params)
    mask = freeze_mask(config.freeze, lambda: init_params(jr.key(0)))

    def optimizer(learning_rate) -> optim.GradientTransformation:
        # built from the seed's own rate, inside the piece: one rate per seed of a vmapped batch
        return off_policy.adam_optimizer(learning_rate, mask, config.skip_nonfinite, eps=config.adam_eps,
                                         max_grad_norm=config.max_grad_norm)

    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))

    def epsilon(hp: dict, global_step: torch.Tensor) -> torch.Tensor:
        return epsilon_schedule(hp["start_e"], hp["end_e"], hp["exploration_fraction"] * config.total_timesteps, global_step)

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> DQNState:
        k_params, k_env, k_act, k_learn = jr.split(key, 4)
        hp = hyperparams_from_config(config, HYPERPARAMS, hparams, key.device)
        params = init_params(k_params)
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        scalar = obs[0].reshape(-1)[0]
        example = {
            "obs": obs[0],
            "action": torch.zeros_like(scalar, dtype=torch.int64),
            "reward": torch.zeros_like(scalar, dtype=torch.float32),
            "next_obs": obs[0],
            "terminated": torch.zeros_like(scalar, dtype=torch.float32),
        }
        return DQNState(
            actor=Actor(
                env_state=env_state,
                obs=obs,
                key=k_act,
                global_step=torch.zeros((), dtype=torch.int64, device=key.device),
            ),
            learner=Learner(
                params=params,
                target_params=tree.map(torch.clone, params),
                opt_state=optimizer(hp["learning_rate"]).init(params),
                key=k_learn,
            ),
            buffer=replay.init(example, config.buffer_size),
            hparams=hp,
        )

    # ---------------------------------------------------------------- rollout
    def rollout_step(actor: Actor, params: dict, hp: dict):
        def policy(keys, obs):
            return epsilon_greedy_sample(keys[0], q_values(params, obs), epsilon(hp, actor.global_step))

        return off_policy.env_step(policy, env, env_params, actor, num_keys=1)

    def layout(transition: dict) -> dict:
        # float 0/1, not bool: Inductor copies bool tensors ~400x slower than
        # eager (measured 7.9 ms vs 0.02 ms for 640k), and learn copies the buffer
        return {**transition, "terminated": transition["terminated"].to(torch.float32)}

    # ---------------------------------------------------------------- learning
    def loss_fn(params, target_params, batch, gamma):
        q_tm1 = q_values(params, batch["obs"])
        q_t = q_values(target_params, batch["next_obs"])
        discount_t = gamma * (1.0 - batch["terminated"])
        if config.double_q:
            q_t_selector = q_values(params, batch["next_obs"])
            td = torch.func.vmap(double_q_learning)(q_tm1, batch["action"], batch["reward"], discount_t, q_t, q_t_selector)
        else:
            td = torch.func.vmap(q_learning)(q_tm1, batch["action"], batch["reward"], discount_t, q_t)
        loss = huber_loss(td).mean() if config.loss == "huber" else (td * td).mean()
        q_a = q_tm1.gather(-1, batch["action"][:, None]).squeeze(-1)
        return loss, q_a.detach().mean()

    def learn(learner: Learner, buffer: replay.ReplayState, global_step, hp: dict, transitions: list, step_infos: list):
        # all of the update's transitions go in at once (off_policy.store): a functional
        # add copies the whole buffer, so once per update rather than once per rollout step
        buffer = off_policy.store(buffer, transitions, layout)
        key, k_sample = jr.split(learner.key, 2)
        batch = replay.sample(buffer, k_sample, config.batch_size)
        grads, (loss, q_mean) = torch.func.grad_and_value(loss_fn, has_aux=True)(
            learner.params, learner.target_params, batch, hp["gamma"]
        )
        updates, opt_state = optimizer(hp["learning_rate"]).update(grads, learner.opt_state, learner.params)
        params = optim.apply_updates(learner.params, updates)
        learning = global_step >= config.learning_starts
        # the Adam state is masked too, so its bias correction starts at the first real step
        learner = learner._replace(
            params=tree.where(learning, params, learner.params),
            opt_state=tree.where(learning, opt_state, learner.opt_state),
            key=key,
        )
        metrics = off_policy.episode_summary(step_infos)
        metrics.update(td_loss=loss.detach(), q_values=q_mean, epsilon=epsilon(hp, global_step))
        return learner, buffer, metrics

    def update_target(params: dict, target_params: dict, global_step: torch.Tensor, tau: torch.Tensor):
        period = config.target_network_frequency
        before = global_step - steps_per_update
        crossed = torch.div(global_step, period, rounding_mode="floor") > torch.div(before, period, rounding_mode="floor")
        do = crossed & (global_step >= config.learning_starts)
        return tree.where(do, optim.incremental_update(params, target_params, tau), target_params)

    rollout_step_l, learn_l, update_target_l = lift_pieces(lift, rollout_step, learn, update_target)

    # ---------------------------------------------------------------- the glue
    def update(state: DQNState):
        hp = state.hparams
        actor, transitions, step_infos = off_policy.collect(rollout_step_l, state.actor, F, state.learner.params, hp)
        learner, buffer, metrics = learn_l(state.learner, state.buffer, actor.global_step, hp, transitions, step_infos)
        target = update_target_l(learner.params, learner.target_params, actor.global_step, hp["tau"])
        learner = learner._replace(target_params=target)
        return state._replace(actor=actor, learner=learner, buffer=buffer), metrics

    return Algorithm(init=init, update=update, num_updates=config.num_updates, steps_per_update=steps_per_update)


def make_train(config: Config, env, env_params):
    """``train(key, hparams=None) -> (state, metrics)``: a whole DQN run for one seed, pure.

    ``torch.func.vmap(train)(keys)`` trains one seed per key; pass
    ``hparams={"learning_rate": lrs, ...}`` (tensors with the seed axis) to sweep
    the batchable fields in :data:`HYPERPARAMS`.
    """
    return make_train_from(make_algorithm, config, env, env_params)


def evaluation_policy(config: Config, env, env_params):
    """``act(state, key, obs[K, ...]) -> actions [K]``: the greedy action of the online Q-network."""
    _, q_values, _ = _q_network(config, env, env_params)

    def act(state: DQNState, key, obs):
        return torch.argmax(q_values(state.params, obs), -1)

    return act
