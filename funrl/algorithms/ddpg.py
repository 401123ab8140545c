"""Deep Deterministic Policy Gradient (Lillicrap et al., 2016), CleanRL-style, as pure pieces.

Read top to bottom: Config -> networks -> state -> init -> rollout_step (act,
step the env, store the transition) -> learn (one critic step, a delayed actor
step, Polyak targets) -> update (the glue) -> make_train.

Defaults follow CleanRL's ``ddpg_continuous_action.py`` (actor and critic
256-256 relu with torch's default ``nn.Linear`` init, the actor's tanh output
scaled to the action box, the critic on ``concat(obs, action)``, Adam lr 3e-4
for both, gamma 0.99, tau 0.005, batch 256, Gaussian exploration noise 0.1 of
the action scale, actor and target updates every 2nd step) except where
CleanRL's MuJoCo budget does not fit Pendulum-v1's 20k-step one:

* ``learning_starts`` 1000 (CleanRL 25k, longer than the whole Pendulum run);
* ``learning_rate`` 1e-3 (the SB3 zoo's Pendulum value; 3e-4 is too slow to
  reach -200 within 20k steps);
* ``buffer_size`` 20k (CleanRL 1e6).  The buffer holds every transition of the
  default run, so nothing is ever evicted, as with CleanRL's 1e6 at its
  budget; and the buffer lives in the per-seed state, so 1e6 slots would cost
  36 MB per seed (and a copy per step, since ``replay.add`` is out of place).

Episode ends: the buffer stores ``info["final_obs"]`` (the real last
observation, not the auto-reset one) as ``next_obs`` and bootstraps through
time-limit truncation; only ``terminated`` stops the bootstrap.

One update = ``train_frequency`` steps of ``num_envs`` envs, then one gradient
step.  Learning starts and the actor's delay are branch-free: every update
computes both gradient steps and keeps them with ``torch.where`` on the step
counter, so a vmapped/compiled run has one graph for every update.

Usage::

    env, env_params = funrl.envs.make("Pendulum-v1")
    train = ddpg.make_train(ddpg.Config(), env, env_params)
    state, metrics = train(funrl.random.key(0))                           # one seed
    states, metrics = torch.func.vmap(train)(funrl.random.split(key, 8))  # 8 seeds
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import torch

from funrl import optim, tree
from funrl import random as jr
from funrl.algorithms import networks, replay
from funrl.algorithms.common import (
    Algorithm,
    check_batch_fits_buffer,
    check_config,
    check_freeze,
    check_hidden_sizes,
    check_skip_nonfinite,
    check_total_timesteps,
    episode_metrics,
    freeze_mask,
    hyperparams_from_config,
    make_train_from,
    one_seed_lift,
    with_finite_guard,
    with_frozen,
)
from funrl.envs import spaces
from funrl.envs.core import select_tree
from funrl.envs.wrappers import LogWrapper
from funrl.losses.exploration import add_gaussian_noise
from funrl.losses.policy_gradients import dpg_loss


@dataclasses.dataclass(frozen=True)
class Config:
    """DDPG hyper-parameters (CleanRL's, with Pendulum-v1's budget; see the module docstring)."""

    total_timesteps: int = 20_000  #: env steps per seed (all envs together)
    num_envs: int = 1  #: parallel envs per seed
    train_frequency: int = 1  #: steps of every env between gradient steps
    buffer_size: int = 20_000  #: replay capacity per seed (CleanRL 1e6; see the module docstring)
    learning_starts: int = 1_000  #: env steps of uniformly random actions before learning
    batch_size: int = 256  #: transitions per gradient step
    learning_rate: float = 1e-3  #: Adam step size of actor and critic (batchable; CleanRL 3e-4)
    gamma: float = 0.99  #: discount (batchable)
    tau: float = 0.005  #: Polyak step of the target networks (batchable)
    exploration_noise: float = 0.1  #: Gaussian action noise, in units of the action scale (batchable)
    policy_frequency: int = 2  #: gradient steps between actor (and target) updates
    hidden_sizes: tuple = (256, 256)  #: actor and critic hidden layers (relu)
    network: str = ""  #: a factory "package.module:function" of your own networks, roles actor, critic (see networks.py); "" the MLPs above
    freeze: str = ""  #: regex over param paths kept fixed in training ("" none; funrl train --freeze)
    skip_nonfinite: int = 0  #: skip optimizer steps whose gradients are NaN/inf, up to this many in a row (0: off)

    def __post_init__(self):
        check_freeze(self)
        check_skip_nonfinite(self)
        check_config(
            self,
            positive=("learning_rate",),
            unit=("gamma", "tau"),
            ints=("total_timesteps", "num_envs", "train_frequency", "buffer_size", "batch_size", "policy_frequency"),
        )
        check_total_timesteps(self, ("num_envs", "train_frequency"))
        check_batch_fits_buffer(self)
        _check_common(self)

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.train_frequency

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // self.steps_per_update)


#: Config fields that can differ per seed in one vmapped run (tensors in the state).
HYPERPARAMS = ("learning_rate", "gamma", "tau", "exploration_noise")

#: Where the learned params live in the state (a path of fields and keys); ``funrl train --init`` sets them.
PARAMS = "params"
#: Target copies in the state (path -> the params path they copy); a warm start sets them to the loaded params.
TARGETS: dict = {"target_params": "params"}


def _check_common(config) -> None:
    """Checks shared by DDPG, TD3 and SAC configs (fields every one of them has).

    ``hidden_sizes`` may be any sequence of positive ints (a saved
    ``config.json`` gives a list) and is stored as a tuple.
    """
    ls = config.learning_starts
    if isinstance(ls, bool) or not isinstance(ls, int) or ls < 0:
        raise ValueError(f"config.learning_starts: expected an int >= 0, got {ls!r}")
    check_hidden_sizes(config)
    object.__setattr__(config, "hidden_sizes", tuple(config.hidden_sizes))  # frozen dataclass
    networks.check_network(config)
    for name in ("exploration_noise", "policy_noise", "noise_clip"):
        v = getattr(config, name, 0.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"config.{name}: expected a number >= 0, got {v!r}")


# ---------------------------------------------------------------- networks (shared with TD3 and SAC)
class BoxSpec(NamedTuple):
    """What the networks need to know about a continuous-action env."""

    obs_dim: int  #: flattened observation size
    act_dim: int  #: flattened action size
    act_shape: tuple  #: the env's action shape
    low: torch.Tensor  #: float32 [act_dim] lower action bound
    high: torch.Tensor  #: float32 [act_dim] upper action bound
    obs_shape: tuple = ()  #: the env's observation shape (what a custom network's actor receives)


def box_spec(env, env_params) -> BoxSpec:
    """Sizes and bounds of a continuous-action env.

    Raises:
      ValueError: the action space is not a bounded ``Box`` (DDPG, TD3 and SAC
        squash actions into the box with tanh).
    """
    act_space = env.action_space(env_params)
    if not isinstance(act_space, spaces.Box) or not act_space.dtype.is_floating_point:
        raise ValueError(f"env: expected a continuous (float Box) action space, got {act_space!r} for {env.name}")
    low = act_space.low.reshape(-1).to(torch.float32)
    high = act_space.high.reshape(-1).to(torch.float32)
    # (meta tensors carry no values to check: funrl's device-placement test runs algorithms on them)
    if low.device.type != "meta" and not bool(torch.isfinite(low).all() and torch.isfinite(high).all()):
        raise ValueError(f"env: expected a bounded action space (finite low and high), got {act_space!r} for {env.name}")
    obs_dim = int(math.prod(env.observation_space(env_params).shape))
    obs_shape = tuple(env.observation_space(env_params).shape)
    return BoxSpec(obs_dim, int(math.prod(act_space.shape)), tuple(act_space.shape), low, high, obs_shape)


def flat_obs(obs: torch.Tensor) -> torch.Tensor:
    """``[N, *obs_shape] -> float32 [N, obs_dim]``."""
    return obs.reshape(obs.shape[0], -1).to(torch.float32)


#: the networks live in funrl.algorithms.networks; these names stay for code that imports them from here
deterministic_actor = networks.deterministic_actor
q_network = networks.continuous_q_network


def replay_item(spec: BoxSpec, key: torch.Tensor) -> dict:
    """One stored transition (zeros on ``key``'s device): the layout of DDPG's, TD3's and SAC's buffers.

    Built with ``key.new_zeros`` so that under ``vmap`` every seed gets a
    buffer of its own rather than a stride-0 broadcast of one.
    """
    f32 = torch.float32
    return {
        "obs": key.new_zeros((spec.obs_dim,), dtype=f32),
        "action": key.new_zeros((spec.act_dim,), dtype=f32),
        "reward": key.new_zeros((), dtype=f32),
        "next_obs": key.new_zeros((spec.obs_dim,), dtype=f32),
        "terminated": key.new_zeros((), dtype=torch.bool),
    }


def uniform_actions(key: torch.Tensor, spec: BoxSpec, n: int) -> torch.Tensor:
    """``n`` uniformly random actions in the box: float32 ``[n, act_dim]`` (CleanRL's ``action_space.sample()``)."""
    return jr.uniform(key, (n, spec.act_dim), torch.float32, spec.low.to(key.device), spec.high.to(key.device))


def clip_actions(action: torch.Tensor, spec: BoxSpec) -> torch.Tensor:
    """Clamp ``[N, act_dim]`` actions into the box."""
    return torch.clamp(action, spec.low.to(action.device), spec.high.to(action.device))


def select(pred: torch.Tensor, on_true, on_false):
    """Leaf-wise ``torch.where(pred, on_true, on_false)``: how a masked gradient step is kept or dropped."""
    return select_tree(pred, on_true, on_false)


# ---------------------------------------------------------------- state
class DDPGState(NamedTuple):
    """Everything one seed's training carries between updates (a pytree)."""

    params: dict  #: {"actor": ..., "critic": ...}
    target_params: dict  #: Polyak-averaged copies of ``params``
    actor_opt_state: Any
    critic_opt_state: Any
    buffer: replay.ReplayState
    env_state: Any  #: batched over num_envs
    obs: torch.Tensor  #: [num_envs, *obs_shape]
    key: torch.Tensor  #: (2,)
    global_step: torch.Tensor  #: int64 (): env steps so far (all envs)
    hparams: dict  #: name -> float tensor ()


class StepInfo(NamedTuple):
    """What a rollout step hands to ``learn`` for the episode metrics ([num_envs] each)."""

    episode_return: torch.Tensor
    episode_length: torch.Tensor
    episode_done: torch.Tensor


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """DDPG's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    spec = box_spec(env, env_params)
    env = LogWrapper(env)
    E, B = config.num_envs, config.batch_size
    actor = networks.deterministic_actor(spec, config.hidden_sizes, config.network)
    critic = networks.continuous_q_network(spec, config.hidden_sizes, config.network)
    # the learning rate is applied by hand so that it can be a per-seed tensor
    tx = optim.scale_by_adam()
    mask = freeze_mask(config.freeze, lambda: {"actor": actor.init(jr.key(0)), "critic": critic.init(jr.key(1))})
    actor_tx = with_finite_guard(with_frozen(tx, None if mask is None else mask["actor"]), config.skip_nonfinite)
    critic_tx = with_finite_guard(with_frozen(tx, None if mask is None else mask["critic"]), config.skip_nonfinite)
    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))
    env_step = torch.func.vmap(env.step, in_dims=(0, 0, 0, None))

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> DDPGState:
        k_actor, k_critic, k_env, k_next = jr.split(key, 4)
        params = {"actor": actor.init(k_actor), "critic": critic.init(k_critic)}
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        return DDPGState(
            params=params,
            target_params=tree.map(torch.clone, params),
            actor_opt_state=actor_tx.init(params["actor"]),
            critic_opt_state=critic_tx.init(params["critic"]),
            buffer=replay.init(replay_item(spec, key), config.buffer_size),
            env_state=env_state,
            obs=obs,
            key=k_next,
            global_step=torch.zeros((), dtype=torch.int64, device=key.device),
            hparams=hyperparams_from_config(config, HYPERPARAMS, hparams, key.device),
        )

    # ---------------------------------------------------------------- acting
    def rollout_step(state: DDPGState):
        key, k_noise, k_random, k_env = jr.split(state.key, 4)
        obs = flat_obs(state.obs)
        scale = (spec.high - spec.low).to(obs.device) / 2
        policy_action = actor.apply(state.params["actor"], obs)
        noisy = clip_actions(add_gaussian_noise(k_noise, policy_action, scale * state.hparams["exploration_noise"]), spec)
        explore = state.global_step < config.learning_starts
        action = torch.where(explore, uniform_actions(k_random, spec, E), noisy)
        next_obs, env_state, reward, terminated, truncated, info = env_step(
            jr.split(k_env, E), state.env_state, action.reshape((E,) + spec.act_shape), env_params
        )
        buffer = replay.add(
            state.buffer,
            {
                "obs": obs,
                "action": action,
                "reward": reward.to(torch.float32),
                "next_obs": flat_obs(info["final_obs"]),  # not next_obs: that is the auto-reset one
                "terminated": terminated,
            },
        )
        step_info = StepInfo(
            episode_return=info["returned_episode_returns"].to(torch.float32),
            episode_length=info["returned_episode_lengths"].to(torch.float32),
            episode_done=info["returned_episode"],
        )
        # clone: a fresh key keeps the compiled piece's input strides the same every call
        state = state._replace(
            buffer=buffer, env_state=env_state, obs=next_obs, key=key.clone(), global_step=state.global_step + E
        )
        return state, step_info

    # ---------------------------------------------------------------- learning
    def critic_loss_fn(critic_params, batch, target):
        q = critic.apply(critic_params, batch["obs"], batch["action"])
        loss = ((q - target) ** 2).mean()
        return loss, {"critic_loss": loss, "q_value": q.mean()}

    def actor_loss_fn(actor_params, critic_params, obs):
        a = actor.apply(actor_params, obs)
        # dQ/da at the actor's action; dpg_loss's gradient w.r.t. a is -dQ/da,
        # the same as CleanRL's -Q(s, actor(s)).mean() per sample
        dqda, q_sum = torch.func.grad_and_value(lambda act: critic.apply(critic_params, obs, act).sum())(a.detach())
        # dpg_loss is elementwise without dqda_clipping, so one call on the flattened
        # batch equals the per-sample losses (and skips a vmap)
        loss = dpg_loss(a.reshape(-1), dqda.reshape(-1)).sum() / obs.shape[0]
        return loss, {"actor_loss": -q_sum / obs.shape[0]}

    def learn(state: DDPGState, step_infos: list):
        """One critic step, the actor step every ``policy_frequency``-th update, Polyak targets.

        Steps before ``learning_starts`` and skipped actor steps are computed
        and dropped with ``torch.where`` (no branch on the step counter).
        """
        traj = tree.stack(step_infos)  # leaves [train_frequency, E]
        metrics = episode_metrics(traj.episode_return, traj.episode_length, traj.episode_done)
        hp = state.hparams
        lr = hp["learning_rate"]
        key, k_batch = jr.split(state.key)
        batch = replay.sample(state.buffer, k_batch, B)
        params, targets = state.params, state.target_params

        with torch.no_grad():
            next_action = actor.apply(targets["actor"], batch["next_obs"])
            q_next = critic.apply(targets["critic"], batch["next_obs"], next_action)
            target = batch["reward"] + hp["gamma"] * (~batch["terminated"]).to(torch.float32) * q_next
        grads, critic_aux = torch.func.grad(critic_loss_fn, has_aux=True)(params["critic"], batch, target)
        updates, critic_opt_state = critic_tx.update(grads, state.critic_opt_state)
        new_critic = optim.apply_updates(params["critic"], tree.map(lambda u: -lr * u, updates))

        # CleanRL's order: the actor ascends the freshly updated critic
        grads, actor_aux = torch.func.grad(actor_loss_fn, has_aux=True)(params["actor"], new_critic, batch["obs"])
        updates, actor_opt_state = actor_tx.update(grads, state.actor_opt_state)
        new_actor = optim.apply_updates(params["actor"], tree.map(lambda u: -lr * u, updates))

        learning = state.global_step >= config.learning_starts
        update_index = state.global_step // config.steps_per_update - 1  # this update's number, from 0
        actor_turn = learning & (torch.remainder(update_index, config.policy_frequency) == 0)
        new_params = {
            "actor": select(actor_turn, new_actor, params["actor"]),
            "critic": select(learning, new_critic, params["critic"]),
        }
        # CleanRL moves the targets only with the actor
        new_targets = select(actor_turn, optim.incremental_update(new_params, targets, hp["tau"]), targets)
        state = state._replace(
            params=new_params,
            target_params=new_targets,
            actor_opt_state=select(actor_turn, actor_opt_state, state.actor_opt_state),
            critic_opt_state=select(learning, critic_opt_state, state.critic_opt_state),
            key=key.clone(),
        )
        metrics.update(critic_aux)
        metrics.update(actor_aux)
        return state, metrics

    rollout_step_l = lift(rollout_step)
    learn_l = lift(learn)

    # ---------------------------------------------------------------- the glue
    def update(state: DDPGState):
        step_infos = []
        for _ in range(config.train_frequency):
            state, step_info = rollout_step_l(state)
            step_infos.append(step_info)
        return learn_l(state, step_infos)

    return Algorithm(init=init, update=update, num_updates=config.num_updates, steps_per_update=config.steps_per_update)


def make_train(config: Config, env, env_params):
    """``train(key, hparams=None) -> (state, metrics)``: a whole DDPG run for one seed, pure.

    ``torch.func.vmap(train)(keys)`` trains one seed per key; pass
    ``hparams={"learning_rate": lrs, ...}`` (tensors with the seed axis) to sweep
    the batchable fields in :data:`HYPERPARAMS`.
    """
    return make_train_from(make_algorithm, config, env, env_params)


def evaluation_policy(config: Config, env, env_params):
    """``act(state, key, obs[K, ...]) -> actions[K, *action_shape]``: the deterministic actor, no noise."""
    spec = box_spec(env, env_params)
    actor = networks.deterministic_actor(spec, config.hidden_sizes, config.network)

    def act(state: DDPGState, key, obs):
        a = actor.apply(state.params["actor"], flat_obs(obs))
        return a.reshape((obs.shape[0],) + spec.act_shape)

    return act
