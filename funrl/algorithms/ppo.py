"""Proximal Policy Optimisation (Schulman et al., 2017), CleanRL-style, as pure pieces.

Read top to bottom: Config -> state -> policy -> optimizer -> init -> (the
shared rollout of :mod:`funrl.algorithms.on_policy`) -> prepare (GAE, shuffling) -> minibatch_update (clipped surrogate, clipped value
loss, entropy) -> update (the glue) -> make_train.

Defaults are CleanRL's ``ppo.py`` for CartPole-v1 (4 envs x 128 steps, 4
epochs of 4 minibatches, Adam lr 2.5e-4 annealed to 0, eps 1e-5, gamma 0.99,
GAE lambda 0.95, clip 0.2 on ratio and value, entropy 0.01, value 0.5,
grad-norm 0.5, separate 64-64 tanh actor and critic with orthogonal init).
Continuous action spaces use a diagonal Gaussian with a state-independent
log-std (CleanRL's ``ppo_continuous_action.py``); actions are clipped to the
action bounds before they reach the env, log-probs use the unclipped sample.

Episode ends: like CleanRL, a truncated episode is treated as terminated in GAE
(no bootstrap from the final observation).

Usage::

    env, env_params = funrl.envs.make("CartPole-v1")
    train = ppo.make_train(ppo.Config(), env, env_params)
    state, metrics = train(funrl.random.key(0))                  # one seed
    states, metrics = torch.func.vmap(train)(funrl.random.split(key, 8))  # 8 seeds
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from funrl import optim, tree
from funrl import random as jr
from funrl.algorithms import networks, on_policy
from funrl.algorithms.common import (
    Algorithm,
    check_config,
    check_freeze,
    check_hidden_sizes,
    check_skip_nonfinite,
    check_total_timesteps,
    episode_metrics,
    freeze_mask,
    hyperparams_from_config,
    lift_pieces,
    make_train_from,
    one_seed_lift,
    shared,
    step_size,
    with_finite_guard,
    with_frozen,
)
from funrl.envs.wrappers import LogWrapper
from funrl.losses.multistep import truncated_generalized_advantage_estimation
from funrl.losses.policy_gradients import clipped_surrogate_pg_loss


@dataclasses.dataclass(frozen=True)
class Config:
    """PPO hyper-parameters (CleanRL's CartPole defaults)."""

    total_timesteps: int = 500_000  #: env steps per seed
    num_envs: int = 4  #: parallel envs per seed
    num_steps: int = 128  #: rollout length per env per update
    update_epochs: int = 4  #: passes over each rollout
    num_minibatches: int = 4  #: minibatches per epoch
    learning_rate: float = 2.5e-4  #: Adam step size (batchable)
    anneal_lr: bool = True  #: decay the learning rate linearly to 0
    adam_eps: float = 1e-5  #: Adam epsilon (CleanRL's)
    gamma: float = 0.99  #: discount (batchable)
    gae_lambda: float = 0.95  #: GAE lambda (batchable)
    clip_coef: float = 0.2  #: ratio clip range (batchable)
    clip_vloss: bool = True  #: clip the value loss like the ratio
    norm_adv: bool = True  #: normalise advantages per minibatch
    ent_coef: float = 0.01  #: entropy bonus (batchable)
    vf_coef: float = 0.5  #: value-loss weight (batchable)
    max_grad_norm: float = 0.5  #: global gradient-norm clip
    hidden_sizes: tuple = (64, 64)  #: actor and critic hidden layers
    activation: str = "tanh"  #: hidden activation
    network: str = ""  #: a factory "package.module:function" of your own networks, roles actor, critic (see networks.py); "" the MLPs above
    freeze: str = ""  #: regex over param paths kept fixed in training ("" none; funrl train --freeze)
    skip_nonfinite: int = 0  #: skip optimizer steps whose gradients are NaN/inf, up to this many in a row (0: off)

    def __post_init__(self):
        check_freeze(self)
        check_skip_nonfinite(self)
        check_hidden_sizes(self)
        networks.check_network(self)
        check_config(
            self,
            positive=("learning_rate", "adam_eps", "clip_coef", "max_grad_norm"),
            unit=("gamma", "gae_lambda"),
            ints=("total_timesteps", "num_envs", "num_steps", "update_epochs", "num_minibatches"),
        )
        check_total_timesteps(self, ("num_envs", "num_steps"))
        if (self.num_envs * self.num_steps) % self.num_minibatches:
            raise ValueError(
                f"config.num_minibatches: must divide num_envs * num_steps = {self.num_envs * self.num_steps}, "
                f"got {self.num_minibatches}"
            )

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // self.batch_size)


#: Config fields that can differ per seed in one vmapped run (tensors in the state).
HYPERPARAMS = ("learning_rate", "gamma", "gae_lambda", "clip_coef", "ent_coef", "vf_coef")

#: Where the learned params live in the state (a path of fields and keys); ``funrl train --init`` sets them.
PARAMS = "params"
#: Target copies in the state (path -> the params path they copy); a warm start sets them to the loaded params.
TARGETS: dict = {}


class PPOState(NamedTuple):
    """Everything one seed's training carries between updates (a pytree)."""

    params: dict  #: {"actor": ..., "critic": ..., ["log_std": ...]}
    opt_state: Any
    env_state: Any  #: batched over num_envs
    obs: torch.Tensor  #: [num_envs, *obs_shape]
    key: torch.Tensor  #: (2,)
    update_step: torch.Tensor  #: int64 ()
    hparams: dict  #: name -> float tensor ()


def _policy(config: Config, env, env_params) -> on_policy.Policy:
    """CleanRL's separate actor and critic (:func:`funrl.algorithms.on_policy.policy`)."""
    return on_policy.policy(env, env_params, config.hidden_sizes, config.activation, config.network)


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """PPO's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    env = LogWrapper(env)
    E, T = config.num_envs, config.num_steps
    M = config.num_minibatches
    B = config.batch_size // M
    num_updates = config.num_updates
    pol = _policy(config, env, env_params)
    mask = freeze_mask(config.freeze, lambda: pol.init(jr.key(0)))
    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))
    rollout = on_policy.make_rollout(pol, env, env_params, E, T, lift)

    def optimizer(hp) -> optim.GradientTransformation:
        """Adam for this seed's hyper-parameters; the rate annealed per update like CleanRL's."""
        lr = step_size(hp["learning_rate"], num_updates if config.anneal_lr else 0, config.update_epochs * M)
        tx = optim.chain(
            optim.clip_by_global_norm(config.max_grad_norm),
            optim.scale_by_adam(eps=config.adam_eps),
            optim.scale_by_learning_rate(lr),
        )
        return with_finite_guard(with_frozen(tx, mask), config.skip_nonfinite)

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> PPOState:
        k_params, k_env, k_next = jr.split(key, 3)
        params = pol.init(k_params)
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        hp = hyperparams_from_config(config, HYPERPARAMS, hparams, key.device)
        return PPOState(
            params=params,
            opt_state=optimizer(hp).init(params),
            env_state=env_state,
            obs=obs,
            key=k_next,
            update_step=torch.zeros((), dtype=torch.int64, device=key.device),
            hparams=hp,
        )

    # ---------------------------------------------------------------- advantages and minibatches
    def prepare(params, obs, key, hp, traj: on_policy.Transition):
        """GAE over the rollout ``traj`` (leaves [T, E, ...]) and ``epochs * M`` shuffled minibatches of B."""
        last_value = pol.value(params, obs)  # [E]
        values = torch.cat([traj.value, last_value[None]], 0)  # [T+1, E]
        discount = hp["gamma"] * (~traj.done).to(torch.float32)
        gae = torch.func.vmap(truncated_generalized_advantage_estimation, in_dims=(1, 1, None, 1), out_dims=1)
        advantages = gae(traj.reward, discount, hp["gae_lambda"], values)  # [T, E]
        returns = advantages + traj.value
        flat = {
            "obs": traj.obs.reshape((T * E,) + traj.obs.shape[2:]),
            "action": traj.action.reshape((T * E,) + traj.action.shape[2:]),
            "log_prob": traj.log_prob.reshape(-1),
            "value": traj.value.reshape(-1),
            "advantage": advantages.reshape(-1),
            "return": returns.reshape(-1),
        }
        key, *epoch_keys = jr.split(key, config.update_epochs + 1)
        # one permutation per epoch; minibatches [epochs * M, B, ...]
        perms = torch.stack([jr.permutation(k, T * E) for k in epoch_keys]).reshape(-1, B)
        minibatches = tree.map(lambda x: x[perms], flat)
        metrics = episode_metrics(traj.episode_return, traj.episode_length, traj.episode_done)
        return key, minibatches, metrics

    # ---------------------------------------------------------------- learning
    def loss_fn(params, mb, hp):
        dist = pol.dist(params, mb["obs"])
        log_ratio = dist.log_prob(mb["action"]) - mb["log_prob"]
        ratio = torch.exp(log_ratio)
        adv = mb["advantage"]
        if config.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = clipped_surrogate_pg_loss(ratio, adv, hp["clip_coef"])
        new_value = pol.value(params, mb["obs"])
        if config.clip_vloss:
            v_clipped = mb["value"] + torch.clamp(new_value - mb["value"], -hp["clip_coef"], hp["clip_coef"])
            v_loss = 0.5 * torch.maximum((new_value - mb["return"]) ** 2, (v_clipped - mb["return"]) ** 2).mean()
        else:
            v_loss = 0.5 * ((new_value - mb["return"]) ** 2).mean()
        ent = dist.entropy().mean()
        loss = pg_loss - hp["ent_coef"] * ent + hp["vf_coef"] * v_loss
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean()
            clipfrac = ((ratio - 1.0).abs() > hp["clip_coef"]).float().mean()
        aux = {"pg_loss": pg_loss, "v_loss": v_loss, "entropy": ent, "approx_kl": approx_kl, "clipfrac": clipfrac}
        return loss, aux

    @shared("index")  # one minibatch number for every seed
    def minibatch_update(params, opt_state, hp, minibatches: dict, index: torch.Tensor):
        """One Adam step on minibatch ``index`` of ``minibatches`` (leaves [epochs * M, B, ...])."""
        mb = tree.map(lambda x: torch.index_select(x, 0, index.reshape(1)).squeeze(0), minibatches)
        grads, aux = torch.func.grad(loss_fn, has_aux=True)(params, mb, hp)
        updates, opt_state = optimizer(hp).update(grads, opt_state, params)
        return optim.apply_updates(params, updates), opt_state, aux

    prepare_l, minibatch_update_l = lift_pieces(lift, prepare, minibatch_update)
    indices = [torch.tensor(i) for i in range(config.update_epochs * M)]

    # ---------------------------------------------------------------- the glue
    def update(state: PPOState):
        device = state.update_step.device
        traj, env_state, obs, key = rollout(state.params, state.env_state, state.obs, state.key)
        key, minibatches, metrics = prepare_l(state.params, obs, key, state.hparams, traj)
        params, opt_state, losses = state.params, state.opt_state, []
        for index in indices:
            params, opt_state, aux = minibatch_update_l(params, opt_state, state.hparams, minibatches, index.to(device))
            losses.append(aux)
        state = state._replace(params=params, opt_state=opt_state, env_state=env_state, obs=obs, key=key,
                               update_step=state.update_step + 1)
        metrics = dict(metrics)
        metrics.update({k: torch.stack([a[k] for a in losses]).mean(0) for k in losses[0]})
        return state, metrics

    return Algorithm(init=init, update=update, num_updates=num_updates, steps_per_update=T * E)


def make_train(config: Config, env, env_params):
    """``train(key, hparams=None) -> (state, metrics)``: a whole PPO run for one seed, pure.

    ``torch.func.vmap(train)(keys)`` trains one seed per key; pass
    ``hparams={"learning_rate": lrs, ...}`` (tensors with the seed axis) to sweep
    the batchable fields in :data:`HYPERPARAMS`.
    """
    return make_train_from(make_algorithm, config, env, env_params)


def evaluation_policy(config: Config, env, env_params):
    """``act(state, key, obs[K, ...]) -> actions`` : the greedy (discrete) or mean (continuous) action."""
    pol = _policy(config, env, env_params)

    def act(state: PPOState, key, obs):
        return pol.mode(state.params, obs)

    return act
