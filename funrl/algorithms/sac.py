"""Soft Actor-Critic (Haarnoja et al., 2018) with automatic entropy tuning, CleanRL-style, as pure pieces.

Read top to bottom: Config -> the squashed Gaussian policy -> state -> init ->
rollout_step (sample an action, step the envs: ``off_policy.env_step``) ->
learn_critic (store the update's transitions, twin soft-Q step, Polyak
targets) -> learn_actor (policy and temperature step) -> update (the glue) ->
make_train.

Defaults are CleanRL's ``sac_continuous_action.py``: 256-256 relu networks
with torch's default init; the policy outputs a mean and a log-std squashed
into ``[-5, 2]`` by ``tanh`` (CleanRL's smooth clamp) and acts with
``tanh(u) * scale + bias``, ``u ~ N(mean, std)``; twin Q-networks on
``concat(obs, action)``; Adam with ``q_lr`` 1e-3 for the critics and the
temperature, ``policy_lr`` 3e-4 for the policy; target entropy ``-|A|``
(``log_alpha`` starts at 0, i.e. alpha = 1); gamma 0.99, tau 0.005, batch
256; targets move every step; the policy and temperature take
``policy_frequency`` (2) steps every ``policy_frequency``-th update
(CleanRL's "compensate for the delay").  Pendulum-v1's budget replaces
CleanRL's MuJoCo one: ``learning_starts`` 1000 (CleanRL 5000) and a 20k-slot
buffer (CleanRL 1e6; see ``ddpg``'s module docstring).

The log-density of an action is exact (``funrl.distributions.TanhNormal``
never inverts tanh) minus ``sum log(scale)`` for the rescaling to the action
box; CleanRL adds 1e-6 inside the log instead.

Episode ends and branch-free learning starts / delays work as in ``ddpg``:
``info["final_obs"]`` is stored as ``next_obs``, only ``terminated`` stops the
bootstrap, and every update computes its gradient steps and keeps them with
``torch.where`` on the step counter.  So the ``policy_frequency`` policy steps
of an update are computed on every update and kept on every
``policy_frequency``-th: a vmapped/compiled run has one graph for every
update, at the price of computing (and dropping) the policy steps of the
other updates.

Usage::

    env, env_params = funrl.envs.make("Pendulum-v1")
    train = sac.make_train(sac.Config(), env, env_params)
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
from funrl.algorithms.continuous import box_spec, flat_obs, replay_item
from funrl.envs.wrappers import LogWrapper

#: CleanRL's bounds of the policy's log-std.
LOG_STD_MIN, LOG_STD_MAX = networks.LOG_STD_MIN, networks.LOG_STD_MAX


@dataclasses.dataclass(frozen=True)
class Config:
    """SAC hyper-parameters (CleanRL's, with Pendulum-v1's budget; see the module docstring)."""

    total_timesteps: int = 20_000  #: env steps per seed (all envs together)
    num_envs: int = 1  #: parallel envs per seed
    train_frequency: int = 1  #: steps of every env between gradient steps
    buffer_size: int = 20_000  #: replay capacity per seed (CleanRL 1e6)
    learning_starts: int = 1_000  #: env steps of uniformly random actions before learning (CleanRL 5000)
    batch_size: int = 256  #: transitions per gradient step
    gamma: float = 0.99  #: discount (batchable)
    tau: float = 0.005  #: Polyak step of the target critics (batchable)
    policy_lr: float = 3e-4  #: Adam step size of the policy (batchable)
    q_lr: float = 1e-3  #: Adam step size of the critics and of the temperature (batchable)
    policy_frequency: int = 2  #: the policy takes this many steps every this many updates
    target_network_frequency: int = 1  #: updates between Polyak steps of the target critics
    autotune: bool = True  #: learn the temperature towards the target entropy -|A|
    alpha: float = 0.2  #: fixed temperature when ``autotune`` is off (batchable)
    hidden_sizes: tuple = (256, 256)  #: policy and critic hidden layers (relu)
    network: str = ""  #: a factory "package.module:function" of your own networks, roles actor, critic (see networks.py); "" the MLPs above
    freeze: str = ""  #: regex over param paths kept fixed in training ("" none; funrl train --freeze)
    skip_nonfinite: int = 0  #: skip optimizer steps whose gradients are NaN/inf, up to this many in a row (0: off)

    def __post_init__(self):
        check_freeze(self)
        check_skip_nonfinite(self)
        check_config(
            self,
            positive=("policy_lr", "q_lr"),
            unit=("gamma", "tau"),
            ints=(
                "total_timesteps",
                "num_envs",
                "train_frequency",
                "buffer_size",
                "batch_size",
                "policy_frequency",
                "target_network_frequency",
            ),
        )
        check_total_timesteps(self, ("num_envs", "train_frequency"))
        check_batch_fits_buffer(self)
        continuous.check_continuous_config(self)
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ValueError(f"config.alpha: expected a number > 0, got {self.alpha!r}")

    @property
    def steps_per_update(self) -> int:
        return self.num_envs * self.train_frequency

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // self.steps_per_update)


#: Config fields that can differ per seed in one vmapped run (tensors in the state).
HYPERPARAMS = ("gamma", "tau", "policy_lr", "q_lr", "alpha")

#: Where the learned params live in the state (a path of fields and keys); ``funrl train --init`` sets them.
PARAMS = "params"
#: Target copies in the state (path -> the params path they copy); a warm start sets them to the loaded params.
TARGETS: dict = {"target_params": "params.critic"}


def params_set_by_config(config: Config) -> tuple[str, ...]:
    """Param paths whose value the config sets rather than learns: a warm start keeps them fresh.

    With ``autotune`` off, ``log_alpha`` is ``log(config.alpha)`` for the whole
    run, so it must come from this run's config, not from the source run.
    """
    return () if config.autotune else ("log_alpha",)


# ---------------------------------------------------------------- the policy
#: SAC's networks live in funrl.algorithms.networks; this name stays for code that imports it from here
squashed_gaussian_policy = networks.squashed_gaussian_actor


# ---------------------------------------------------------------- state
class SACState(NamedTuple):
    """Everything one seed's training carries between updates (a pytree)."""

    params: dict  #: {"actor": ..., "critic": {"q1": ..., "q2": ...}, "log_alpha": ()}
    target_params: dict  #: Polyak-averaged copy of ``params["critic"]``
    actor_opt_state: Any
    critic_opt_state: Any  #: one Adam over both critics (CleanRL's ``q_optimizer``)
    alpha_opt_state: Any
    buffer: replay.ReplayState
    env_state: Any  #: batched over num_envs
    obs: torch.Tensor  #: [num_envs, *obs_shape]
    key: torch.Tensor  #: (2,)
    global_step: torch.Tensor  #: int64 (): env steps so far (all envs)
    hparams: dict  #: name -> float tensor ()


#: the state fields ``learn_critic`` reads and changes (the acting fields are off_policy.Actor's)
CRITIC_FIELDS = ("params", "target_params", "critic_opt_state", "buffer", "key")
#: the state fields ``learn_actor`` reads and changes
ACTOR_FIELDS = ("params", "actor_opt_state", "alpha_opt_state", "key")


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """SAC's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    spec = box_spec(env, env_params)
    env = LogWrapper(env)
    E, B = config.num_envs, config.batch_size
    init_actor, _, sample_action = networks.squashed_gaussian_actor(spec, config.hidden_sizes, config.network)
    critic = networks.continuous_q_network(spec, config.hidden_sizes, config.network)
    target_entropy = -float(spec.act_dim)
    mask = freeze_mask(config.freeze, lambda: {
        "actor": init_actor(jr.key(0)),
        "critic": {"q1": critic.init(jr.key(1)), "q2": critic.init(jr.key(2))},
        "log_alpha": torch.zeros(()),
    })

    def optimizer(learning_rate, role: str) -> optim.GradientTransformation:
        # built from the seed's own rate, inside the piece: one rate per seed of a vmapped batch
        return off_policy.adam_optimizer(learning_rate, None if mask is None else mask[role], config.skip_nonfinite)

    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> SACState:
        k_actor, k_q1, k_q2, k_env, k_next = jr.split(key, 5)
        hp = hyperparams_from_config(config, HYPERPARAMS, hparams, key.device)
        # autotune starts from alpha = 1 (CleanRL); otherwise alpha stays at config.alpha
        log_alpha = torch.zeros_like(hp["alpha"]) if config.autotune else torch.log(hp["alpha"])
        params = {
            "actor": init_actor(k_actor),
            "critic": {"q1": critic.init(k_q1), "q2": critic.init(k_q2)},
            "log_alpha": log_alpha,
        }
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        return SACState(
            params=params,
            target_params=tree.map(torch.clone, params["critic"]),
            actor_opt_state=optimizer(hp["policy_lr"], "actor").init(params["actor"]),
            critic_opt_state=optimizer(hp["q_lr"], "critic").init(params["critic"]),
            alpha_opt_state=optimizer(hp["q_lr"], "log_alpha").init(params["log_alpha"]),
            buffer=replay.init(replay_item(spec, key), config.buffer_size),
            env_state=env_state,
            obs=obs,
            key=k_next,
            global_step=torch.zeros((), dtype=torch.int64, device=key.device),
            hparams=hp,
        )

    # ---------------------------------------------------------------- acting
    def rollout_step(acting: off_policy.Actor, actor_params):
        explore = acting.global_step < config.learning_starts

        def policy(keys, obs):
            k_policy, k_random = keys
            action, _ = sample_action(actor_params, k_policy, flat_obs(obs))
            return continuous.warmup_actions(k_random, action, spec, explore).reshape((E,) + spec.act_shape)

        return off_policy.env_step(policy, env, env_params, acting, num_keys=2)

    # ---------------------------------------------------------------- learning
    def is_learning(global_step) -> torch.Tensor:
        return global_step >= config.learning_starts

    def update_index(global_step) -> torch.Tensor:
        """The number of the current update, from 0 (the rollout of this update has run)."""
        return global_step // config.steps_per_update - 1

    def critic_loss_fn(critic_params, batch, target):
        q1 = critic.apply(critic_params["q1"], batch["obs"], batch["action"])
        q2 = critic.apply(critic_params["q2"], batch["obs"], batch["action"])
        loss = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
        return loss, {"critic_loss": loss, "q_value": q1.mean()}

    def learn_critic(learner: dict, global_step, hp: dict, transitions: list, step_infos: list):
        """Store the update's transitions; one soft-Q step on a fresh batch and the Polyak step of the targets.

        ``learner``: the state's :data:`CRITIC_FIELDS`, returned changed, with
        the batch's observations (the policy's next steps use them, as
        CleanRL) and the metrics.
        """
        metrics = off_policy.episode_summary(step_infos)
        buffer = off_policy.store(learner["buffer"], transitions, continuous.transition_layout)
        key, k_batch, k_next = jr.split(learner["key"], 3)
        batch = replay.sample(buffer, k_batch, B)
        params, target_params = learner["params"], learner["target_params"]

        with torch.no_grad():
            alpha = torch.exp(params["log_alpha"])
            next_action, next_log_prob = sample_action(params["actor"], k_next, batch["next_obs"])
            q1_next = critic.apply(target_params["q1"], batch["next_obs"], next_action)
            q2_next = critic.apply(target_params["q2"], batch["next_obs"], next_action)
            soft_value = torch.minimum(q1_next, q2_next) - alpha * next_log_prob
            target = batch["reward"] + hp["gamma"] * (~batch["terminated"]).to(torch.float32) * soft_value
        grads, metrics_q = torch.func.grad(critic_loss_fn, has_aux=True)(params["critic"], batch, target)
        updates, critic_opt_state = optimizer(hp["q_lr"], "critic").update(grads, learner["critic_opt_state"])
        new_critic = optim.apply_updates(params["critic"], updates)

        learning = is_learning(global_step)
        critic_params = tree.where(learning, new_critic, params["critic"])
        target_turn = learning & (torch.remainder(update_index(global_step), config.target_network_frequency) == 0)
        targets = tree.where(
            target_turn, optim.incremental_update(critic_params, target_params, hp["tau"]), target_params
        )
        learner = {
            "params": {**params, "critic": critic_params},
            "target_params": targets,
            "critic_opt_state": tree.where(learning, critic_opt_state, learner["critic_opt_state"]),
            "buffer": buffer,
            "key": key,
        }
        metrics.update(metrics_q)
        return learner, batch["obs"], metrics

    def actor_loss_fn(actor_params, critic_params, alpha, key, obs):
        action, log_prob = sample_action(actor_params, key, obs)
        q1 = critic.apply(critic_params["q1"], obs, action)
        q2 = critic.apply(critic_params["q2"], obs, action)
        loss = (alpha * log_prob - torch.minimum(q1, q2)).mean()
        return loss, {"actor_loss": loss}

    def alpha_loss_fn(log_alpha, log_prob):
        loss = (-torch.exp(log_alpha) * (log_prob + target_entropy)).mean()
        return loss, {"alpha_loss": loss}

    def learn_actor(learner: dict, global_step, hp: dict, obs: torch.Tensor):
        """One policy step and one temperature step, kept every ``policy_frequency``-th update.

        ``learner``: the state's :data:`ACTOR_FIELDS`, returned changed.
        """
        params = learner["params"]
        key, k_actor, k_alpha = jr.split(learner["key"], 3)
        alpha = torch.exp(params["log_alpha"]).detach()
        grads, metrics = torch.func.grad(actor_loss_fn, has_aux=True)(params["actor"], params["critic"], alpha, k_actor, obs)
        updates, actor_opt_state = optimizer(hp["policy_lr"], "actor").update(grads, learner["actor_opt_state"])
        new_actor = optim.apply_updates(params["actor"], updates)

        # the temperature sees fresh actions of the updated policy (CleanRL)
        with torch.no_grad():
            _, log_prob = sample_action(new_actor, k_alpha, obs)
        grad_alpha, metrics_alpha = torch.func.grad(alpha_loss_fn, has_aux=True)(params["log_alpha"], log_prob)
        update_alpha, alpha_opt_state = optimizer(hp["q_lr"], "log_alpha").update(grad_alpha, learner["alpha_opt_state"])
        new_log_alpha = optim.apply_updates(params["log_alpha"], update_alpha)

        actor_turn = is_learning(global_step) & (torch.remainder(update_index(global_step), config.policy_frequency) == 0)
        alpha_turn = actor_turn & config.autotune
        learner = {
            "params": {
                **params,
                "actor": tree.where(actor_turn, new_actor, params["actor"]),
                "log_alpha": torch.where(alpha_turn, new_log_alpha, params["log_alpha"]),
            },
            "actor_opt_state": tree.where(actor_turn, actor_opt_state, learner["actor_opt_state"]),
            "alpha_opt_state": tree.where(alpha_turn, alpha_opt_state, learner["alpha_opt_state"]),
            "key": key,
        }
        metrics.update(metrics_alpha)
        metrics["alpha"] = alpha
        metrics["entropy"] = -log_prob.mean()
        return learner, metrics

    rollout_step_l, learn_critic_l, learn_actor_l = lift_pieces(lift, rollout_step, learn_critic, learn_actor)

    # ---------------------------------------------------------------- the glue
    def update(state: SACState):
        acting, transitions, step_infos = off_policy.collect(
            rollout_step_l, off_policy.actor_of(state), config.train_frequency, state.params["actor"])
        state = off_policy.with_actor(state, acting)
        learner, obs, metrics = learn_critic_l(off_policy.fields_of(state, CRITIC_FIELDS), state.global_step,
                                               state.hparams, transitions, step_infos)
        state = state._replace(**learner)
        actor_metrics = []
        for _ in range(config.policy_frequency):
            learner, m = learn_actor_l(off_policy.fields_of(state, ACTOR_FIELDS), state.global_step, state.hparams, obs)
            state = state._replace(**learner)
            actor_metrics.append(m)
        metrics = dict(metrics)
        metrics.update({k: torch.stack([m[k] for m in actor_metrics]).mean(0) for k in actor_metrics[0]})
        return state, metrics

    return Algorithm(init=init, update=update, num_updates=config.num_updates, steps_per_update=config.steps_per_update)


def make_train(config: Config, env, env_params):
    """``train(key, hparams=None) -> (state, metrics)``: a whole SAC run for one seed, pure.

    ``torch.func.vmap(train)(keys)`` trains one seed per key; ``hparams`` sweeps
    the batchable fields in :data:`HYPERPARAMS` (tensors with the seed axis).
    """
    return make_train_from(make_algorithm, config, env, env_params)


def evaluation_policy(config: Config, env, env_params):
    """``act(state, key, obs[K, ...]) -> actions[K, *action_shape]``: ``tanh(mean)`` scaled to the box."""
    spec = box_spec(env, env_params)
    _, distribution, _ = networks.squashed_gaussian_actor(spec, config.hidden_sizes, config.network)

    def act(state: SACState, key, obs):
        scale = continuous.action_scale(spec, obs.device)
        bias = continuous.action_bias(spec, obs.device)
        a = distribution(state.params["actor"], flat_obs(obs)).mode() * scale + bias
        return a.reshape((obs.shape[0],) + spec.act_shape)

    return act
