"""Advantage Actor-Critic (A2C; Mnih et al., 2016, synchronous), Stable-Baselines3-style, as pure pieces.

Read top to bottom: Config -> state -> policy -> optimizer -> init -> (the
shared rollout of :mod:`funrl.algorithms.on_policy`) -> learn (GAE, one gradient step on the whole rollout) -> update (the glue) ->
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

Actions (:mod:`funrl.algorithms.on_policy`, PPO's policy and rollout): a
``funrl.distributions.Categorical`` for ``Discrete`` spaces; for ``Box`` spaces a diagonal Gaussian with
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
from typing import Any, NamedTuple

import torch

from funrl import optim
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
    step_size,
    with_finite_guard,
    with_frozen,
)
from funrl.envs.wrappers import LogWrapper
from funrl.losses.multistep import truncated_generalized_advantage_estimation

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


def _policy(config: Config, env, env_params) -> on_policy.Policy:
    """SB3's separate actor and critic (:func:`funrl.algorithms.on_policy.policy`; PPO's networks)."""
    return on_policy.policy(env, env_params, config.hidden_sizes, config.activation, config.network,
                            log_std_init=config.log_std_init, algo="A2C")


def make_algorithm(config: Config, env, env_params, lift=one_seed_lift) -> Algorithm:
    """A2C's ``init`` and ``update`` with every per-seed piece passed through ``lift``."""
    env = LogWrapper(env)
    E, T = config.num_envs, config.num_steps
    pol = _policy(config, env, env_params)
    mask = freeze_mask(config.freeze, lambda: pol.init(jr.key(0)))
    env_reset = torch.func.vmap(env.reset, in_dims=(0, None))
    rollout = on_policy.make_rollout(pol, env, env_params, E, T, lift, bootstrap_truncation=config.bootstrap_truncation)
    # GAE of each env's column: r [T, E], discount [T, E], values [T + 1, E] -> [T, E]
    gae_per_env = torch.func.vmap(truncated_generalized_advantage_estimation, in_dims=(1, 1, None, 1), out_dims=1)

    def optimizer(hp) -> optim.GradientTransformation:
        """RMSprop (or Adam) at this seed's learning rate, after global-norm clipping."""
        direction = (optim.scale_by_rms(decay=config.alpha, eps=config.eps) if config.use_rms_prop
                     else optim.scale_by_adam(eps=config.eps))
        tx = optim.chain(optim.clip_by_global_norm(config.max_grad_norm), direction,
                         optim.scale_by_learning_rate(step_size(hp["learning_rate"])))
        return with_finite_guard(with_frozen(tx, mask), config.skip_nonfinite)

    # ---------------------------------------------------------------- init
    def init(key, hparams=None) -> A2CState:
        k_params, k_env, k_next = jr.split(key, 3)
        params = pol.init(k_params)
        obs, env_state = env_reset(jr.split(k_env, E), env_params)
        hp = hyperparams_from_config(config, HYPERPARAMS, hparams, key.device)
        return A2CState(
            params=params,
            opt_state=optimizer(hp).init(params),
            env_state=env_state,
            obs=obs,
            key=k_next,
            update_step=torch.zeros((), dtype=torch.int64, device=key.device),
            hparams=hp,
        )

    # ---------------------------------------------------------------- learning
    def loss_fn(params, batch: dict, hp):
        adv = batch["advantage"]
        if config.normalize_advantage:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        dist = pol.dist(params, batch["obs"])
        pg_loss = -(dist.log_prob(batch["action"]) * adv.detach()).mean()
        entropy = dist.entropy().mean()
        v_loss = ((pol.value(params, batch["obs"]) - batch["return"]) ** 2).mean()
        loss = pg_loss - hp["ent_coef"] * entropy + hp["vf_coef"] * v_loss
        return loss, {"pg_loss": pg_loss.detach(), "v_loss": v_loss.detach(), "entropy": entropy.detach()}

    def learn(params, opt_state, obs, hp, traj: on_policy.Transition):
        """One optimiser step on the whole rollout ``traj`` (leaves [T, E, ...]); ``obs``: the last observation."""
        # SB3: a time limit is not a terminal state; the step's return continues with V(final_obs)
        reward = traj.reward + hp["gamma"] * traj.final_value if config.bootstrap_truncation else traj.reward
        last_value = pol.value(params, obs)  # [E]
        values = torch.cat([traj.value, last_value[None]], 0)  # [T + 1, E]
        discount = hp["gamma"] * (~traj.done).to(torch.float32)
        advantages = gae_per_env(reward, discount, hp["gae_lambda"], values).detach()  # [T, E]
        batch = {
            "obs": traj.obs.reshape((T * E,) + traj.obs.shape[2:]),
            "action": traj.action.reshape((T * E,) + traj.action.shape[2:]),
            "advantage": advantages.reshape(-1),
            "return": (advantages + traj.value).reshape(-1).detach(),
        }
        grads, aux = torch.func.grad(loss_fn, has_aux=True)(params, batch, hp)
        updates, opt_state = optimizer(hp).update(grads, opt_state, params)
        metrics = episode_metrics(traj.episode_return, traj.episode_length, traj.episode_done)
        metrics.update(aux)
        return optim.apply_updates(params, updates), opt_state, metrics

    (learn_l,) = lift_pieces(lift, learn)

    # ---------------------------------------------------------------- the glue
    def update(state: A2CState):
        traj, env_state, obs, key = rollout(state.params, state.env_state, state.obs, state.key)
        params, opt_state, metrics = learn_l(state.params, state.opt_state, obs, state.hparams, traj)
        state = state._replace(params=params, opt_state=opt_state, env_state=env_state, obs=obs, key=key,
                               update_step=state.update_step + 1)
        return state, metrics

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
    pol = _policy(config, env, env_params)

    def act(state: A2CState, key, obs):
        return pol.mode(state.params, obs)

    return act
