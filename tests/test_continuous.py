"""Tests of funrl.algorithms.continuous: the action box, exploration and actor helpers of DDPG, TD3 and SAC."""

import pytest
import torch

from funrl import envs, tree
from funrl import random as jr
from funrl.algorithms import continuous, ddpg, networks, off_policy, td3
from funrl.envs.wrappers import LogWrapper


def _pendulum():
    env, params = envs.make("Pendulum-v1")
    return env, params, continuous.box_spec(env, params)


def test_box_spec_pendulum_and_errors():
    env, params, spec = _pendulum()
    assert (spec.obs_dim, spec.act_dim, spec.act_shape, spec.obs_shape) == (3, 1, (1,), (3,))
    assert spec.low.tolist() == [-2.0] and spec.high.tolist() == [2.0]
    cartpole, cp_params = envs.make("CartPole-v1")
    with pytest.raises(ValueError, match="continuous"):
        continuous.box_spec(cartpole, cp_params)
    assert ddpg.box_spec is continuous.box_spec  # the old import path still works


def test_scale_bias_clip_hand_computed():
    spec = continuous.BoxSpec(1, 2, (2,), torch.tensor([-1.0, 0.0]), torch.tensor([3.0, 1.0]))
    assert continuous.action_scale(spec).tolist() == [2.0, 0.5]
    assert continuous.action_bias(spec).tolist() == [1.0, 0.5]
    a = torch.tensor([[-5.0, 0.5], [2.0, 7.0]])
    assert continuous.clip_actions(a, spec).tolist() == [[-1.0, 0.5], [2.0, 1.0]]
    with pytest.raises(ValueError, match="act_dim=2"):
        continuous.clip_actions(torch.zeros(3, 1), spec)
    with pytest.raises(TypeError, match="spec"):
        continuous.action_scale((1, 2))


def test_uniform_and_warmup_actions():
    spec = continuous.BoxSpec(1, 2, (2,), torch.tensor([-1.0, 0.0]), torch.tensor([3.0, 1.0]))
    u = continuous.uniform_actions(jr.key(0), spec, 500)
    assert u.shape == (500, 2) and u.dtype == torch.float32
    assert bool((u >= spec.low).all() and (u <= spec.high).all())
    assert abs(float(u[:, 0].mean()) - 1.0) < 0.2  # the middle of [-1, 3]
    policy = torch.full((4, 2), 0.25)
    assert torch.equal(continuous.warmup_actions(jr.key(1), policy, spec, torch.tensor(False)), policy)
    assert torch.equal(continuous.warmup_actions(jr.key(1), policy, spec, torch.tensor(True)),
                       continuous.uniform_actions(jr.key(1), spec, 4))
    with pytest.raises(ValueError, match="n:"):
        continuous.uniform_actions(jr.key(0), spec, 0)
    with pytest.raises(TypeError, match="explore"):
        continuous.warmup_actions(jr.key(1), policy, spec, torch.tensor(1))


def test_deterministic_policy_noise_and_warmup():
    env, params, spec = _pendulum()
    actor = networks.deterministic_actor(spec, (8,))
    p = actor.init(jr.key(0))
    obs = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    keys = list(jr.split(jr.key(5), 2))
    quiet = continuous.deterministic_policy(actor, spec, p, 0.0, torch.tensor(False))(keys, obs)
    assert quiet.shape == (4, 1) and torch.equal(quiet, actor.apply(p, obs))
    noisy = continuous.deterministic_policy(actor, spec, p, torch.tensor(0.1), torch.tensor(False))(keys, obs)
    # noise: 0.1 of the action scale (2) times N(0, 1) from the first key, then clipped to [-2, 2]
    want = torch.clamp(actor.apply(p, obs) + jr.normal(keys[0], (4, 1), torch.float32) * 0.2, -2.0, 2.0)
    torch.testing.assert_close(noisy, want, rtol=0, atol=1e-6)
    random = continuous.deterministic_policy(actor, spec, p, 0.1, torch.tensor(True))(keys, obs)
    assert torch.equal(random, continuous.uniform_actions(keys[1], spec, 4))


def test_deterministic_env_step_is_an_off_policy_step():
    env, params, spec = _pendulum()
    env = LogWrapper(env)
    actor = networks.deterministic_actor(spec, (8,))
    obs, state = torch.func.vmap(env.reset, in_dims=(0, None))(jr.split(jr.key(1), 2), params)
    acting = off_policy.Actor(state, obs, jr.key(2), torch.tensor(0))
    step = continuous.deterministic_env_step(actor, spec, env, params, learning_starts=10)
    new, transition, info = step(acting, actor.init(jr.key(0)), torch.tensor(0.1))
    assert int(new.global_step) == 2 and transition["action"].shape == (2, 1)
    # before learning_starts the action is the uniform one from the policy's second key
    _, _, k_random, _ = jr.split(acting.key, 4)
    assert torch.equal(transition["action"], continuous.uniform_actions(k_random, spec, 2))
    with pytest.raises(ValueError, match="learning_starts"):
        continuous.deterministic_env_step(actor, spec, env, params, learning_starts=-1)


def test_dpg_actor_loss_gradient_is_minus_mean_q():
    env, params, spec = _pendulum()
    actor = networks.deterministic_actor(spec, (8,))
    critic = networks.continuous_q_network(spec, (8,))
    pa, pc = actor.init(jr.key(0)), critic.init(jr.key(1))
    obs = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    grads, aux = torch.func.grad(continuous.dpg_actor_loss, argnums=2, has_aux=True)(actor, critic, pa, pc, obs)
    oracle = torch.func.grad(lambda p: -critic.apply(pc, obs, actor.apply(p, obs)).mean())(pa)
    assert tree.allclose(grads, oracle, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(aux["actor_loss"], -critic.apply(pc, obs, actor.apply(pa, obs)).mean())
    with pytest.raises(ValueError, match="obs"):
        continuous.dpg_actor_loss(actor, critic, pa, pc, obs[0])


def test_replay_item_and_transition_layout():
    spec = continuous.BoxSpec(6, 2, (1, 2), torch.zeros(2), torch.ones(2), (2, 3))
    item = continuous.replay_item(spec, jr.key(0))
    assert {k: tuple(v.shape) for k, v in item.items()} == {
        "obs": (6,), "action": (2,), "reward": (), "next_obs": (6,), "terminated": ()}
    t = {"obs": torch.arange(24.0).reshape(4, 2, 3), "action": torch.ones(4, 1, 2), "reward": torch.ones(4),
         "next_obs": torch.zeros(4, 2, 3, dtype=torch.float64), "terminated": torch.zeros(4, dtype=torch.bool)}
    out = continuous.transition_layout(t)
    assert out["obs"].shape == (4, 6) and out["obs"][1].tolist() == [6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    assert out["action"].shape == (4, 2) and out["next_obs"].dtype == torch.float32
    with pytest.raises(ValueError, match="missing"):
        continuous.transition_layout({"obs": t["obs"]})


def test_evaluation_policy_and_config_checks():
    env, params, spec = _pendulum()
    config = td3.Config(hidden_sizes=[8])  # a list (config.json) becomes a tuple
    assert config.hidden_sizes == (8,)
    act = continuous.deterministic_evaluation_policy(config, env, params)
    state = td3.make_algorithm(config, env, params).init(jr.key(0))
    obs = torch.zeros(3, 3)
    a = act(state, jr.key(1), obs)
    actor = networks.deterministic_actor(spec, (8,))
    assert a.shape == (3, 1) and torch.equal(a, actor.apply(state.params["actor"], obs))
    with pytest.raises(ValueError, match="learning_starts"):
        ddpg.Config(learning_starts=-1)
    with pytest.raises(ValueError, match="noise_clip"):
        td3.Config(noise_clip=-0.1)
