"""Twin Delayed DDPG (Fujimoto et al., 2018), CleanRL-style, as pure pieces.

TD3 is DDPG (``funrl.algorithms.ddpg``) with three changes, all in
:func:`learn`; it acts as DDPG does (``continuous.deterministic_policy``
through ``off_policy.env_step``) and shares DDPG's networks, replay layout and
action helpers (``funrl.algorithms.continuous``):

1. *twin critics*: two Q-networks, the target is the smaller of the two target
   values (against overestimation);
2. *target policy smoothing*: the target action gets clipped Gaussian noise
   (``policy_noise`` 0.2, clipped to ``noise_clip`` 0.5, in units of the
   action scale);
3. *delayed policy updates*: the actor and the targets move every
   ``policy_frequency`` (2) critic steps.

Read top to bottom: Config -> state -> init -> rollout_step -> learn -> update
(the glue) -> make_train.  Defaults are CleanRL's ``td3_continuous_action.py``
(256-256 relu networks with torch's default init, Adam lr 3e-4, gamma 0.99,
tau 0.005, batch 256, exploration noise 0.1) with Pendulum-v1's budget:
``learning_starts`` 1000 instead of 25k, ``learning_rate`` 1e-3 (SB3 zoo) and
a 20k-slot buffer instead of 1e6 (see ``ddpg``'s module docstring for why).

Episode ends and branch-free learning starts / delays work as in ``ddpg``:
``info["final_obs"]`` is stored as ``next_obs``, only ``terminated`` stops the
bootstrap, and every update computes both gradient steps and keeps them with
``torch.where`` on the step counter.

Usage::

    env, env_params = funrl.envs.make("Pendulum-v1")
    train = td3.make_train(td3.Config(), env, env_params)
    state, metrics = train(funrl.random.key(0))
    states, metrics = torch.func.vmap(train)(funrl.random.split(key, 8))
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from funrl import optim, tree
from funrl import random as jr
from funrl.algorithms import continuous, networks, off_policy, replay
from funrl.algorithms.common import (
    Algorithm,
    check_batch_fits_buffer,
    check_config,
    check_freeze,
    check_skip_nonfinite,
    check_total_timesteps,
    freeze_mask,
    hyperparams_from_config,
    lift_pieces,
    make_train_from,
    one_seed_lift,
)
from funrl.algorithms.continuous import box_spec, clip_actions, replay_item
from funrl.envs.wrappers import LogWrapper


@dataclasses.dataclass(frozen=True)
class Config:
    """TD3 hyper-parameters (CleanRL's, with Pendulum-v1's budget; see the module docstring)."""

    total_timesteps: int = 20_000  #: env steps per seed (all envs together)
    num_envs: int = 1  #: parallel envs per seed
    train_frequency: int = 1  #: steps of every env between gradient steps
    buffer_size: int = 20_000  #: replay capacity per seed (CleanRL 1e6)
    learning_starts: int = 1_000  #: env steps of uniformly random actions before learning
    batch_size: int = 256  #: transitions per gradient step
    learning_rate: float = 1e-3  #: Adam step size of actor and critics (batchable; CleanRL 3e-4)
    gamma: float = 0.99  #: discount (batchable)
    tau: float = 0.005  #: Polyak step of the target networks (batchable)
    exploration_noise: float = 0.1  #: Gaussian action noise, in units of the action scale (batchable)
    policy_noise: float = 0.2  #: target smoothing noise, in units of the action scale (batchable)
    noise_clip: float = 0.5  #: clip of the target smoothing noise, same units (batchable)
    policy_frequency: int = 2  #: critic steps between actor (and target) updates
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
        continuous.check_continuous_config(self)

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.train_frequency

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // self.steps_per_update)


#: Config fields that can differ per seed in one vmapped run (tensors in the state).
HYPERPARAMS = ("learning_rate", "gamma", "tau", "exploration_noise", "policy_noise", "noise_clip")

#: Where the learned params live in the state (a path of fields and keys); ``funrl train --init`` sets them.
PARAMS = "params"
#: Target copies in the state (path -> the params path they copy); a warm start sets them to the loaded params.
TARGETS: dict = {"target_params": "params"}


class TD3State(NamedTuple):
    """Everything one seed's training carries between updates (a pytree)."""

    params: dict  #: {"actor": ..., "critic": {"q1": ..., "q2": ...}}
    target_params: dict  #: Polyak-averaged copies of ``params``
    actor_opt_state: Any
    critic_opt_state: Any  #: one Adam over both critics (CleanRL's ``q_optimizer``)
    buffer: replay.ReplayState
    env_state: Any  #: batched over num_envs
    obs: torch.Tensor  #: [num_envs, *obs_shape]
    key: torch.Tensor  #: (2,)
    global_step: torch.Tensor  #: int64 (): env steps so far (all envs)
    hparams: dict  #: name -> float tensor ()


#: the state fields ``learn`` reads and changes (the acting fields are off_policy.Actor's)
LEARNER_FIELDS = ("params", "target_params", "actor_opt_state", "critic_opt_state", "buffer", "key")


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """TD3's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    spec = box_spec(env, env_params)
    env = LogWrapper(env)
    E, B = config.num_envs, config.batch_size
    actor = networks.deterministic_actor(spec, config.hidden_sizes, config.network)
    critic = networks.continuous_q_network(spec, config.hidden_sizes, config.network)
    mask = freeze_mask(
        config.freeze,
        lambda: {"actor": actor.init(jr.key(0)), "critic": {"q1": critic.init(jr.key(1)), "q2": critic.init(jr.key(2))}},
    )

    def optimizer(learning_rate, role: str) -> optim.GradientTransformation:
        # built from the seed's own rate, inside the piece: one rate per seed of a vmapped batch
        return off_policy.adam_optimizer(learning_rate, None if mask is None else mask[role], config.skip_nonfinite)

    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> TD3State:
        k_actor, k_q1, k_q2, k_env, k_next = jr.split(key, 5)
        hp = hyperparams_from_config(config, HYPERPARAMS, hparams, key.device)
        params = {"actor": actor.init(k_actor), "critic": {"q1": critic.init(k_q1), "q2": critic.init(k_q2)}}
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        return TD3State(
            params=params,
            target_params=tree.map(torch.clone, params),
            actor_opt_state=optimizer(hp["learning_rate"], "actor").init(params["actor"]),
            critic_opt_state=optimizer(hp["learning_rate"], "critic").init(params["critic"]),
            buffer=replay.init(replay_item(spec, key), config.buffer_size),
            env_state=env_state,
            obs=obs,
            key=k_next,
            global_step=torch.zeros((), dtype=torch.int64, device=key.device),
            hparams=hp,
        )

    # ---------------------------------------------------------------- acting (DDPG's and TD3's)
    rollout_step = continuous.deterministic_env_step(actor, spec, env, env_params, config.learning_starts)

    # ---------------------------------------------------------------- learning
    def critic_loss_fn(critic_params, batch, target):
        q1 = critic.apply(critic_params["q1"], batch["obs"], batch["action"])
        q2 = critic.apply(critic_params["q2"], batch["obs"], batch["action"])
        loss = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
        return loss, {"critic_loss": loss, "q_value": q1.mean()}

    def actor_loss_fn(actor_params, q1_params, obs):
        # the actor follows the first critic only (as in the paper and CleanRL)
        return continuous.dpg_actor_loss(actor, critic, actor_params, q1_params, obs)

    def learn(learner: dict, global_step, hp: dict, transitions: list, step_infos: list):
        """Store the update's transitions; one twin-critic step, the actor and target step every ``policy_frequency``-th update.

        ``learner``: the state's :data:`LEARNER_FIELDS`, returned changed.
        """
        metrics = off_policy.episode_summary(step_infos)
        buffer = off_policy.store(learner["buffer"], transitions, continuous.transition_layout)
        lr = hp["learning_rate"]
        actor_tx, critic_tx = optimizer(lr, "actor"), optimizer(lr, "critic")
        key, k_batch, k_smooth = jr.split(learner["key"], 3)
        batch = replay.sample(buffer, k_batch, B)
        params, targets = learner["params"], learner["target_params"]

        with torch.no_grad():
            scale = continuous.action_scale(spec, lr.device)
            noise = jr.normal(k_smooth, (B, spec.act_dim), torch.float32) * hp["policy_noise"]
            noise = torch.clamp(noise, -hp["noise_clip"], hp["noise_clip"]) * scale
            next_action = clip_actions(actor.apply(targets["actor"], batch["next_obs"]) + noise, spec)
            q1_next = critic.apply(targets["critic"]["q1"], batch["next_obs"], next_action)
            q2_next = critic.apply(targets["critic"]["q2"], batch["next_obs"], next_action)
            not_terminal = (~batch["terminated"]).to(torch.float32)
            target = batch["reward"] + hp["gamma"] * not_terminal * torch.minimum(q1_next, q2_next)
        grads, critic_aux = torch.func.grad(critic_loss_fn, has_aux=True)(params["critic"], batch, target)
        updates, critic_opt_state = critic_tx.update(grads, learner["critic_opt_state"])
        new_critic = optim.apply_updates(params["critic"], updates)

        grads, actor_aux = torch.func.grad(actor_loss_fn, has_aux=True)(params["actor"], new_critic["q1"], batch["obs"])
        updates, actor_opt_state = actor_tx.update(grads, learner["actor_opt_state"])
        new_actor = optim.apply_updates(params["actor"], updates)

        learning = global_step >= config.learning_starts
        update_index = global_step // config.steps_per_update - 1  # this update's number, from 0
        actor_turn = learning & (torch.remainder(update_index, config.policy_frequency) == 0)
        new_params = {
            "actor": tree.where(actor_turn, new_actor, params["actor"]),
            "critic": tree.where(learning, new_critic, params["critic"]),
        }
        new_targets = tree.where(actor_turn, optim.incremental_update(new_params, targets, hp["tau"]), targets)
        learner = {
            "params": new_params,
            "target_params": new_targets,
            "actor_opt_state": tree.where(actor_turn, actor_opt_state, learner["actor_opt_state"]),
            "critic_opt_state": tree.where(learning, critic_opt_state, learner["critic_opt_state"]),
            "buffer": buffer,
            "key": key,
        }
        metrics.update(critic_aux)
        metrics.update(actor_aux)
        return learner, metrics

    rollout_step_l, learn_l = lift_pieces(lift, rollout_step, learn)

    # ---------------------------------------------------------------- the glue
    def update(state: TD3State):
        acting, transitions, step_infos = off_policy.collect(
            rollout_step_l, off_policy.actor_of(state), config.train_frequency,
            state.params["actor"], state.hparams["exploration_noise"])
        state = off_policy.with_actor(state, acting)
        learner, metrics = learn_l(off_policy.fields_of(state, LEARNER_FIELDS), state.global_step, state.hparams,
                                   transitions, step_infos)
        return state._replace(**learner), metrics

    return Algorithm(init=init, update=update, num_updates=config.num_updates, steps_per_update=config.steps_per_update)


def make_train(config: Config, env, env_params):
    """``train(key, hparams=None) -> (state, metrics)``: a whole TD3 run for one seed, pure.

    ``torch.func.vmap(train)(keys)`` trains one seed per key; ``hparams`` sweeps
    the batchable fields in :data:`HYPERPARAMS` (tensors with the seed axis).
    """
    return make_train_from(make_algorithm, config, env, env_params)


def evaluation_policy(config: Config, env, env_params):
    """``act(state, key, obs[K, ...]) -> actions[K, *action_shape]``: the deterministic actor, no noise."""
    return continuous.deterministic_evaluation_policy(config, env, env_params)
