"""Deep Deterministic Policy Gradient (Lillicrap et al., 2016), CleanRL-style, as pure pieces.

Read top to bottom: Config -> state -> init -> rollout_step (act with the
noisy actor, step the envs: ``off_policy.env_step``) -> learn (store the
update's transitions, one critic step, a delayed actor step, Polyak targets)
-> update (the glue) -> make_train.  The action-box helpers and the actor's
exploration live in ``funrl.algorithms.continuous`` (TD3 and SAC share them),
the env step in ``funrl.algorithms.off_policy`` (DQN, TD3 and SAC share it).

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
  36 MB per seed (and a copy per update, since ``replay.add`` is out of place).

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
from funrl.envs.wrappers import LogWrapper


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
        continuous.check_continuous_config(self)

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


#: the continuous-control helpers live in funrl.algorithms.continuous and the networks in
#: funrl.algorithms.networks; these names stay for code that imports them from here
BoxSpec = continuous.BoxSpec
box_spec = continuous.box_spec
flat_obs = continuous.flat_obs
replay_item = continuous.replay_item
uniform_actions = continuous.uniform_actions
clip_actions = continuous.clip_actions
deterministic_actor = networks.deterministic_actor
q_network = networks.continuous_q_network
StepInfo = off_policy.StepInfo


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


#: the state fields ``learn`` reads and changes (the acting fields are off_policy.Actor's)
LEARNER_FIELDS = ("params", "target_params", "actor_opt_state", "critic_opt_state", "buffer", "key")


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """DDPG's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    spec = box_spec(env, env_params)
    env = LogWrapper(env)
    E, B = config.num_envs, config.batch_size
    actor = networks.deterministic_actor(spec, config.hidden_sizes, config.network)
    critic = networks.continuous_q_network(spec, config.hidden_sizes, config.network)
    mask = freeze_mask(config.freeze, lambda: {"actor": actor.init(jr.key(0)), "critic": critic.init(jr.key(1))})

    def optimizer(learning_rate, role: str) -> optim.GradientTransformation:
        # built from the seed's own rate, inside the piece: one rate per seed of a vmapped batch
        return off_policy.adam_optimizer(learning_rate, None if mask is None else mask[role], config.skip_nonfinite)

    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> DDPGState:
        k_actor, k_critic, k_env, k_next = jr.split(key, 4)
        hp = hyperparams_from_config(config, HYPERPARAMS, hparams, key.device)
        params = {"actor": actor.init(k_actor), "critic": critic.init(k_critic)}
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        return DDPGState(
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
        q = critic.apply(critic_params, batch["obs"], batch["action"])
        loss = ((q - target) ** 2).mean()
        return loss, {"critic_loss": loss, "q_value": q.mean()}

    def actor_loss_fn(actor_params, critic_params, obs):
        return continuous.dpg_actor_loss(actor, critic, actor_params, critic_params, obs)

    def learn(learner: dict, global_step, hp: dict, transitions: list, step_infos: list):
        """Store the update's transitions; one critic step, the actor step every ``policy_frequency``-th update, Polyak targets.

        ``learner``: the state's :data:`LEARNER_FIELDS`, returned changed.
        Steps before ``learning_starts`` and skipped actor steps are computed
        and dropped with ``torch.where`` (no branch on the step counter).
        """
        metrics = off_policy.episode_summary(step_infos)
        buffer = off_policy.store(learner["buffer"], transitions, continuous.transition_layout)
        actor_tx = optimizer(hp["learning_rate"], "actor")
        critic_tx = optimizer(hp["learning_rate"], "critic")
        key, k_batch = jr.split(learner["key"])
        batch = replay.sample(buffer, k_batch, B)
        params, targets = learner["params"], learner["target_params"]

        with torch.no_grad():
            next_action = actor.apply(targets["actor"], batch["next_obs"])
            q_next = critic.apply(targets["critic"], batch["next_obs"], next_action)
            target = batch["reward"] + hp["gamma"] * (~batch["terminated"]).to(torch.float32) * q_next
        grads, critic_aux = torch.func.grad(critic_loss_fn, has_aux=True)(params["critic"], batch, target)
        updates, critic_opt_state = critic_tx.update(grads, learner["critic_opt_state"])
        new_critic = optim.apply_updates(params["critic"], updates)

        # CleanRL's order: the actor ascends the freshly updated critic
        grads, actor_aux = torch.func.grad(actor_loss_fn, has_aux=True)(params["actor"], new_critic, batch["obs"])
        updates, actor_opt_state = actor_tx.update(grads, learner["actor_opt_state"])
        new_actor = optim.apply_updates(params["actor"], updates)

        learning = global_step >= config.learning_starts
        update_index = global_step // config.steps_per_update - 1  # this update's number, from 0
        actor_turn = learning & (torch.remainder(update_index, config.policy_frequency) == 0)
        new_params = {
            "actor": tree.where(actor_turn, new_actor, params["actor"]),
            "critic": tree.where(learning, new_critic, params["critic"]),
        }
        # CleanRL moves the targets only with the actor
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
    def update(state: DDPGState):
        acting, transitions, step_infos = off_policy.collect(
            rollout_step_l, off_policy.actor_of(state), config.train_frequency,
            state.params["actor"], state.hparams["exploration_noise"])
        state = off_policy.with_actor(state, acting)
        learner, metrics = learn_l(off_policy.fields_of(state, LEARNER_FIELDS), state.global_step, state.hparams,
                                   transitions, step_infos)
        return state._replace(**learner), metrics

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
    return continuous.deterministic_evaluation_policy(config, env, env_params)
