"""Proximal Policy Optimisation (Schulman et al., 2017), CleanRL-style, as pure pieces.

Read top to bottom: Config -> networks -> state -> init -> rollout_step ->
prepare (GAE, shuffling) -> minibatch_update (clipped surrogate, clipped value
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
import math
from typing import Any, NamedTuple

import torch

from funrl import optim, tree
from funrl import random as jr
from funrl.algorithms import networks
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
    make_train_from,
    one_seed_lift,
    with_finite_guard,
    with_frozen,
)
from funrl.envs import spaces
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
    traj: Any  #: the rollout buffer: a Transition of [num_steps, num_envs, ...] tensors


class Transition(NamedTuple):
    obs: torch.Tensor
    action: torch.Tensor
    log_prob: torch.Tensor
    value: torch.Tensor
    reward: torch.Tensor
    done: torch.Tensor
    episode_return: torch.Tensor
    episode_length: torch.Tensor
    episode_done: torch.Tensor


def _policy(config: Config, env, env_params):
    """Actor and critic networks and a function giving (log_prob, entropy, value) and sampling."""
    obs_space = env.observation_space(env_params)
    act_space = env.action_space(env_params)
    discrete = isinstance(act_space, spaces.Discrete)
    act_dim = act_space.n if discrete else int(math.prod(act_space.shape))
    actor, critic = networks.actor_critic(obs_space.shape, act_dim, config.hidden_sizes, config.activation, config.network)
    if discrete:
        low = high = None
    else:
        low, high = act_space.low, act_space.high

    def init(key):
        ka, kc = jr.split(key)
        params = {"actor": actor.init(ka), "critic": critic.init(kc)}
        if not discrete:
            params["log_std"] = torch.zeros(act_dim)
        return params

    def flat(obs):
        return obs.reshape(obs.shape[0], -1).to(torch.float32)

    def value(params, obs):
        return critic.apply(params["critic"], flat(obs)).squeeze(-1)

    def sample(params, key, obs):
        """Action [N, ...], log_prob [N] for observations [N, ...]."""
        out = actor.apply(params["actor"], flat(obs))
        if discrete:
            logp_all = torch.log_softmax(out, -1)
            a = jr.categorical(key, out)
            return a, logp_all.gather(-1, a[:, None]).squeeze(-1)
        std = torch.exp(params["log_std"])
        a = out + std * jr.normal(key, out.shape)
        return a, _normal_log_prob(a, out, params["log_std"])

    def evaluate(params, obs, action):
        """log_prob [N], entropy [N] of ``action`` under the current policy."""
        out = actor.apply(params["actor"], flat(obs))
        if discrete:
            logp_all = torch.log_softmax(out, -1)
            logp = logp_all.gather(-1, action[:, None]).squeeze(-1)
            entropy = -(logp_all.exp() * logp_all).sum(-1)
            return logp, entropy
        log_std = params["log_std"]
        ent = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum().expand(out.shape[0])
        return _normal_log_prob(action, out, log_std), ent

    def to_env(action):
        if discrete:
            return action
        return torch.clamp(action, low.to(action), high.to(action)).reshape((action.shape[0],) + act_space.shape)

    def mode(params, obs):
        """The greedy (Discrete) or mean (Box) action for observations [N, ...]."""
        out = actor.apply(params["actor"], flat(obs))
        return torch.argmax(out, -1) if discrete else to_env(out)

    return init, value, sample, evaluate, to_env, discrete, mode


def _normal_log_prob(x, mean, log_std):
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """PPO's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    env = LogWrapper(env)
    E, T = config.num_envs, config.num_steps
    M = config.num_minibatches
    B = config.batch_size // M
    num_updates = config.num_updates
    init_params, value_fn, sample_fn, evaluate_fn, to_env, discrete, _ = _policy(config, env, env_params)
    tx = optim.chain(optim.clip_by_global_norm(config.max_grad_norm), optim.scale_by_adam(eps=config.adam_eps))
    tx = with_finite_guard(with_frozen(tx, freeze_mask(config.freeze, lambda: init_params(jr.key(0)))), config.skip_nonfinite)
    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))
    env_step = torch.func.vmap(env.step, in_dims=(0, 0, 0, None))

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> PPOState:
        k_params, k_env, k_next = jr.split(key, 3)
        params = init_params(k_params)
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        hp = hyperparams_from_config(config, HYPERPARAMS, hparams, key.device)
        # the rollout buffer lives in the state so that the rollout writes one
        # step at a time and `prepare` gets a handful of [T, E, ...] tensors
        # (not T separate transitions: a 128x larger graph to compile)
        example, _ = _transition(k_next, params, obs, env_state)
        traj = tree.map(lambda x: torch.zeros((T,) + tuple(x.shape), dtype=x.dtype, device=x.device), example)
        return PPOState(
            params=params,
            opt_state=tx.init(params),
            env_state=env_state,
            obs=obs,
            key=k_next,
            update_step=torch.zeros((), dtype=torch.int64, device=key.device),
            hparams=hp,
            traj=traj,
        )

    # ---------------------------------------------------------------- rollout
    def _transition(key, params, obs_tm1, env_state):
        k_act, k_env = jr.split(key)
        action, log_prob = sample_fn(params, k_act, obs_tm1)
        value = value_fn(params, obs_tm1)
        obs, env_state, reward, terminated, truncated, info = env_step(
            jr.split(k_env, E), env_state, to_env(action), env_params
        )
        transition = Transition(
            obs=obs_tm1,
            action=action,
            log_prob=log_prob,
            value=value,
            reward=reward.to(torch.float32),
            done=terminated | truncated,
            episode_return=info["returned_episode_returns"].to(torch.float32),
            episode_length=info["returned_episode_lengths"].to(torch.float32),
            episode_done=info["returned_episode"],
        )
        return transition, (obs, env_state)

    def rollout_step(state: PPOState, t: torch.Tensor):
        key, k_step = jr.split(state.key)
        transition, (obs, env_state) = _transition(k_step, state.params, state.obs, state.env_state)
        at_t = torch.arange(T, device=t.device) == t
        traj = tree.map(
            lambda buf, x: torch.where(at_t.reshape((T,) + (1,) * x.ndim), x[None].to(buf.dtype), buf),
            state.traj,
            transition,
        )
        return state._replace(env_state=env_state, obs=obs, key=key, traj=traj)

    # ---------------------------------------------------------------- advantages and minibatches
    def prepare(state: PPOState):
        traj = state.traj  # leaves [T, E, ...]
        hp = state.hparams
        last_value = value_fn(state.params, state.obs)  # [E]
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
        key, *epoch_keys = jr.split(state.key, config.update_epochs + 1)
        # one permutation per epoch; minibatches [epochs * M, B, ...]
        perms = torch.stack([jr.permutation(k, T * E) for k in epoch_keys]).reshape(-1, B)
        minibatches = tree.map(lambda x: x[perms], flat)
        metrics = episode_metrics(traj.episode_return, traj.episode_length, traj.episode_done)
        return state._replace(key=key), minibatches, metrics

    # ---------------------------------------------------------------- learning
    def loss_fn(params, mb, hp):
        log_prob, entropy = evaluate_fn(params, mb["obs"], mb["action"])
        log_ratio = log_prob - mb["log_prob"]
        ratio = torch.exp(log_ratio)
        adv = mb["advantage"]
        if config.norm_adv:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss = clipped_surrogate_pg_loss(ratio, adv, hp["clip_coef"])
        new_value = value_fn(params, mb["obs"])
        if config.clip_vloss:
            v_clipped = mb["value"] + torch.clamp(new_value - mb["value"], -hp["clip_coef"], hp["clip_coef"])
            v_loss = 0.5 * torch.maximum((new_value - mb["return"]) ** 2, (v_clipped - mb["return"]) ** 2).mean()
        else:
            v_loss = 0.5 * ((new_value - mb["return"]) ** 2).mean()
        ent = entropy.mean()
        loss = pg_loss - hp["ent_coef"] * ent + hp["vf_coef"] * v_loss
        with torch.no_grad():
            approx_kl = ((ratio - 1) - log_ratio).mean()
            clipfrac = ((ratio - 1.0).abs() > hp["clip_coef"]).float().mean()
        aux = {"pg_loss": pg_loss, "v_loss": v_loss, "entropy": ent, "approx_kl": approx_kl, "clipfrac": clipfrac}
        return loss, aux

    def minibatch_update(state: PPOState, minibatches: dict, index: torch.Tensor):
        mb = tree.map(lambda x: torch.index_select(x, 0, index.reshape(1)).squeeze(0), minibatches)
        hp = state.hparams
        grads, aux = torch.func.grad(loss_fn, has_aux=True)(state.params, mb, hp)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if config.anneal_lr:
            frac = 1.0 - state.update_step.to(torch.float32) / num_updates
            lr = hp["learning_rate"] * frac
        else:
            lr = hp["learning_rate"]
        params = optim.apply_updates(state.params, tree.map(lambda u: -lr * u, updates))
        return state._replace(params=params, opt_state=opt_state), aux

    def finish(state: PPOState):
        return state._replace(update_step=state.update_step + 1)

    rollout_step_l = lift(rollout_step, in_dims=(0, None))
    prepare_l = lift(prepare)
    minibatch_update_l = lift(minibatch_update, in_dims=(0, 0, None))
    finish_l = lift(finish)
    indices = [torch.tensor(i) for i in range(config.update_epochs * M)]
    steps = [torch.tensor(t) for t in range(T)]

    # ---------------------------------------------------------------- the glue
    def update(state: PPOState):
        device = state.update_step.device
        for t in steps:
            state = rollout_step_l(state, t.to(device))
        state, minibatches, metrics = prepare_l(state)
        losses = []
        for index in indices:
            state, aux = minibatch_update_l(state, minibatches, index.to(device))
            losses.append(aux)
        state = finish_l(state)
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
    *_, mode = _policy(config, env, env_params)

    def act(state: PPOState, key, obs):
        return mode(state.params, obs)

    return act
