"""Advantage Actor-Critic (A2C; Mnih et al., 2016, synchronous), Stable-Baselines3-style, as pure pieces.

Read top to bottom: Config -> networks -> state -> init -> rollout_step ->
learn (GAE, one gradient step on the whole rollout) -> update (the glue) ->
make_train.

One update collects ``num_envs x num_steps`` env steps, computes advantages
with GAE (``gae_lambda = 1``: the n-step return minus the value) and takes one
optimiser step on SB3's loss

    loss = -mean(A_t log pi(a_t | s_t)) - ent_coef * mean(H(pi(. | s_t)))
           + vf_coef * mean((V(s_t) - R_t)^2)

(``R_t = A_t + V(s_t)``; note SB3's value loss has no factor 1/2, unlike
CleanRL's PPO).  Advantages are not normalised by default (SB3's
``normalize_advantage=False``).

Defaults are the rl-baselines3-zoo A2C settings for CartPole-v1 (8 envs, 500k
steps, ``ent_coef=0``) on top of SB3's A2C defaults: 5 steps per env per
update, RMSprop lr 7e-4 (``alpha=0.99``, ``eps=1e-5``), gamma 0.99, GAE lambda
1, value weight 0.5, gradient-norm clip 0.5, and separate 64-64 tanh actor and
critic with orthogonal init (gains sqrt(2), 0.01 for the policy head, 1 for the
value head).

RMSprop: SB3's A2C uses ``torch.optim.RMSprop`` (eps added *outside* the
square root, second moment starting at 0); ``funrl.optim.scale_by_rms``
follows exactly those numerics.  SB3's ``RMSpropTFLike`` (the TF1 / SB2
variant, used by some zoo Atari configs) differs in two ways: eps inside the
square root and the second moment starting at 1 (``initial_scale=1.0`` gives
the latter, not the former); it is not provided here.

Episode ends, as SB3: a terminated or truncated step stops the GAE recursion
(discount 0), and where an episode was *truncated* by a time limit (and not
terminated) the reward is increased by ``gamma * V(final_obs)`` so that the
time limit does not look like a terminal state to the critic
(``bootstrap_truncation``).

Actions: a softmax policy for ``Discrete`` spaces (losses from
``funrl.losses.policy_gradients``); for ``Box`` spaces a diagonal Gaussian with
a state-independent log-std (SB3's, initialised to ``log_std_init``), whose
samples are clipped to the action bounds before they reach the env while
log-probs use the unclipped sample.

Usage::

    env, env_params = funrl.envs.make("CartPole-v1")
    train = a2c.make_train(a2c.Config(), env, env_params)
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
from funrl.losses.policy_gradients import entropy_loss, policy_gradient_loss

__all__ = ["Config", "HYPERPARAMS", "A2CState", "make_algorithm", "make_train", "evaluation_policy"]


@dataclasses.dataclass(frozen=True)
class Config:
    """A2C hyper-parameters (SB3 defaults with the rl-zoo CartPole-v1 settings)."""

    total_timesteps: int = 500_000  #: env steps per seed
    num_envs: int = 8  #: parallel envs per seed (zoo: n_envs 8)
    num_steps: int = 5  #: rollout length per env per update (SB3's n_steps)
    learning_rate: float = 7e-4  #: step size (batchable)
    use_rms_prop: bool = True  #: RMSprop (SB3's default), else Adam
    alpha: float = 0.99  #: RMSprop second-moment decay (torch's alpha)
    eps: float = 1e-5  #: RMSprop / Adam epsilon (SB3's rms_prop_eps; SB3's Adam eps is also 1e-5)
    gamma: float = 0.99  #: discount (batchable)
    gae_lambda: float = 1.0  #: GAE lambda; 1 = n-step returns (batchable)
    ent_coef: float = 0.0  #: entropy bonus (batchable; zoo CartPole: 0)
    vf_coef: float = 0.5  #: value-loss weight (batchable)
    max_grad_norm: float = 0.5  #: global gradient-norm clip
    normalize_advantage: bool = False  #: standardise advantages over the rollout
    bootstrap_truncation: bool = True  #: add gamma * V(final_obs) to the reward of truncated steps
    log_std_init: float = 0.0  #: initial log-std of the Gaussian policy (Box actions)
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
            positive=("learning_rate", "eps", "max_grad_norm"),
            unit=("alpha", "gamma", "gae_lambda"),
            ints=("total_timesteps", "num_envs", "num_steps"),
        )
        check_total_timesteps(self, ("num_envs", "num_steps"))
        for name in ("use_rms_prop", "normalize_advantage", "bootstrap_truncation"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config.{name}: expected a bool, got {getattr(self, name)!r}")
        for name in ("ent_coef", "vf_coef"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"config.{name}: expected a number >= 0, got {v!r}")
        if self.normalize_advantage and self.num_envs * self.num_steps < 2:
            raise ValueError(
                "config.normalize_advantage: standardising over the rollout needs num_envs * num_steps >= 2, "
                f"got {self.num_envs} * {self.num_steps}"
            )

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, self.total_timesteps // self.batch_size)


#: Config fields that can differ per seed in one vmapped run (tensors in the state).
HYPERPARAMS = ("learning_rate", "gamma", "gae_lambda", "ent_coef", "vf_coef")

#: Where the learned params live in the state (a path of fields and keys); ``funrl train --init`` sets them.
PARAMS = "params"
#: Target copies in the state (path -> the params path they copy); a warm start sets them to the loaded params.
TARGETS: dict = {}


class A2CState(NamedTuple):
    """Everything one seed's training carries between updates (a pytree)."""

    params: dict  #: {"actor": ..., "critic": ..., ["log_std": ...]}
    opt_state: Any
    env_state: Any  #: batched over num_envs
    obs: torch.Tensor  #: [num_envs, *obs_shape]
    key: torch.Tensor  #: (2,)
    update_step: torch.Tensor  #: int64 ()
    hparams: dict  #: name -> float tensor ()


class Transition(NamedTuple):
    """One rollout step of every env (leaves ``[num_envs, ...]``); ``learn`` stacks ``num_steps`` of them."""

    obs: torch.Tensor
    action: torch.Tensor
    value: torch.Tensor
    reward: torch.Tensor  #: includes the truncation bootstrap when bootstrap_truncation
    done: torch.Tensor
    episode_return: torch.Tensor
    episode_length: torch.Tensor
    episode_done: torch.Tensor


def _actor_critic(config: Config, env, env_params):
    """Actor and critic networks: ``(init, value, sample, policy_terms, to_env, discrete)``.

    The networks are :func:`funrl.algorithms.networks.actor_critic` (PPO's).
    ``policy_terms(params, obs, action, advantage) -> (pg_loss, entropy)``
    gives the policy-gradient loss and the mean entropy for a batch.
    """
    obs_space = env.observation_space(env_params)
    act_space = env.action_space(env_params)
    discrete = isinstance(act_space, spaces.Discrete)
    if not discrete and not isinstance(act_space, spaces.Box):
        raise ValueError(f"env: A2C needs a Discrete or Box action space, got {act_space!r} for {env.name}")
    act_dim = act_space.n if discrete else int(math.prod(act_space.shape))
    actor, critic = networks.actor_critic(obs_space.shape, act_dim, config.hidden_sizes, config.activation, config.network)

    def init(key):
        ka, kc = jr.split(key)
        params = {"actor": actor.init(ka), "critic": critic.init(kc)}
        if not discrete:
            params["log_std"] = torch.full((act_dim,), float(config.log_std_init), device=key.device)
        return params

    def flat(obs):
        return obs.reshape(obs.shape[0], -1).to(torch.float32)

    def value(params, obs):
        return critic.apply(params["critic"], flat(obs)).squeeze(-1)

    def sample(params, key, obs):
        out = actor.apply(params["actor"], flat(obs))
        if discrete:
            return jr.categorical(key, out)
        return out + torch.exp(params["log_std"]) * jr.normal(key, out.shape)

    def policy_terms(params, obs, action, advantage):
        out = actor.apply(params["actor"], flat(obs))
        if discrete:
            ones = torch.ones_like(advantage)
            return policy_gradient_loss(out, action, advantage, ones), -entropy_loss(out, ones)
        log_std = params["log_std"]
        z = (action - out) * torch.exp(-log_std)
        log_prob = (-0.5 * z * z - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        entropy = (0.5 + 0.5 * math.log(2 * math.pi) + log_std).sum()
        return -(log_prob * advantage.detach()).mean(), entropy

    def to_env(action):
        if discrete:
            return action
        low, high = act_space.low.to(action), act_space.high.to(action)
        return torch.clamp(action, low.reshape(-1), high.reshape(-1)).reshape((action.shape[0],) + act_space.shape)

    def mode(params, obs):
        out = actor.apply(params["actor"], flat(obs))
        return torch.argmax(out, -1) if discrete else to_env(out)

    return init, value, sample, policy_terms, to_env, mode


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """A2C's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    env = LogWrapper(env)
    E, T = config.num_envs, config.num_steps
    init_params, value_fn, sample_fn, policy_terms, to_env, _ = _actor_critic(config, env, env_params)
    direction = optim.scale_by_rms(decay=config.alpha, eps=config.eps) if config.use_rms_prop else optim.scale_by_adam(
        eps=config.eps
    )
    tx = optim.chain(optim.clip_by_global_norm(config.max_grad_norm), direction)
    tx = with_finite_guard(with_frozen(tx, freeze_mask(config.freeze, lambda: init_params(jr.key(0)))), config.skip_nonfinite)
    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))
    env_step = torch.func.vmap(env.step, in_dims=(0, 0, 0, None))
    # GAE of each env's column: r [T, E], discount [T, E], values [T + 1, E] -> [T, E]
    gae_per_env = torch.func.vmap(truncated_generalized_advantage_estimation, in_dims=(1, 1, None, 1), out_dims=1)

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> A2CState:
        k_params, k_env, k_next = jr.split(key, 3)
        params = init_params(k_params)
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        return A2CState(
            params=params,
            opt_state=tx.init(params),
            env_state=env_state,
            obs=obs,
            key=k_next,
            update_step=torch.zeros((), dtype=torch.int64, device=key.device),
            hparams=hyperparams_from_config(config, HYPERPARAMS, hparams, key.device),
        )

    # ---------------------------------------------------------------- rollout
    def rollout_step(state: A2CState):
        key, k_act, k_env = jr.split(state.key, 3)
        action = sample_fn(state.params, k_act, state.obs)
        value = value_fn(state.params, state.obs)
        obs, env_state, reward, terminated, truncated, info = env_step(
            jr.split(k_env, E), state.env_state, to_env(action), env_params
        )
        reward = reward.to(torch.float32)
        if config.bootstrap_truncation:
            # SB3: a time limit is not a terminal state; the step's return continues with V(final_obs)
            final_value = value_fn(state.params, info["final_obs"])
            timeout = (truncated & ~terminated).to(torch.float32)
            reward = reward + state.hparams["gamma"] * timeout * final_value
        transition = Transition(
            obs=state.obs,
            action=action,
            value=value,
            reward=reward,
            done=terminated | truncated,
            episode_return=info["returned_episode_returns"].to(torch.float32),
            episode_length=info["returned_episode_lengths"].to(torch.float32),
            episode_done=info["returned_episode"],
        )
        return state._replace(env_state=env_state, obs=obs, key=key), transition

    # ---------------------------------------------------------------- learning
    def loss_fn(params, batch: dict, hp):
        adv = batch["advantage"]
        if config.normalize_advantage:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg_loss, entropy = policy_terms(params, batch["obs"], batch["action"], adv)
        v_loss = ((value_fn(params, batch["obs"]) - batch["return"]) ** 2).mean()
        loss = pg_loss - hp["ent_coef"] * entropy + hp["vf_coef"] * v_loss
        return loss, {"pg_loss": pg_loss.detach(), "v_loss": v_loss.detach(), "entropy": entropy.detach()}

    def learn(state: A2CState, transitions: list):
        traj = tree.stack(transitions)  # leaves [T, E, ...]
        hp = state.hparams
        last_value = value_fn(state.params, state.obs)  # [E]
        values = torch.cat([traj.value, last_value[None]], 0)  # [T + 1, E]
        discount = hp["gamma"] * (~traj.done).to(torch.float32)
        advantages = gae_per_env(traj.reward, discount, hp["gae_lambda"], values).detach()  # [T, E]
        batch = {
            "obs": traj.obs.reshape((T * E,) + traj.obs.shape[2:]),
            "action": traj.action.reshape((T * E,) + traj.action.shape[2:]),
            "advantage": advantages.reshape(-1),
            "return": (advantages + traj.value).reshape(-1).detach(),
        }
        grads, aux = torch.func.grad(loss_fn, has_aux=True)(state.params, batch, hp)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optim.apply_updates(state.params, tree.map(lambda u: -hp["learning_rate"] * u, updates))
        metrics = episode_metrics(traj.episode_return, traj.episode_length, traj.episode_done)
        metrics.update(aux)
        state = state._replace(params=params, opt_state=opt_state, update_step=state.update_step + 1)
        return state, metrics

    rollout_step_l = lift(rollout_step)
    learn_l = lift(learn)

    # ---------------------------------------------------------------- the glue
    def update(state: A2CState):
        transitions = []
        for _ in range(T):
            state, transition = rollout_step_l(state)
            transitions.append(transition)
        return learn_l(state, transitions)

    return Algorithm(init=init, update=update, num_updates=config.num_updates, steps_per_update=T * E)


def make_train(config: Config, env, env_params):
    """``train(key, hparams=None) -> (state, metrics)``: a whole A2C run for one seed, pure.

    ``torch.func.vmap(train)(keys)`` trains one seed per key; pass
    ``hparams={"learning_rate": lrs, ...}`` (tensors with the seed axis) to sweep
    the batchable fields in :data:`HYPERPARAMS`.
    """
    return make_train_from(make_algorithm, config, env, env_params)


def evaluation_policy(config: Config, env, env_params):
    """``act(state, key, obs[K, ...]) -> actions``: the most probable (Discrete) or mean (Box) action."""
    *_, mode = _actor_critic(config, env, env_params)

    def act(state: A2CState, key, obs):
        return mode(state.params, obs)

    return act
