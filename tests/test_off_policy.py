"""Tests of funrl.algorithms.off_policy: the env step, storage and optimizer shared by DQN, DDPG, TD3 and SAC."""

import dataclasses

import pytest
import torch

from funrl import envs, optim, tree
from funrl import random as jr
from funrl.algorithms import off_policy, replay
from funrl.envs.wrappers import LogWrapper

E = 3


def _cartpole():
    env, params = envs.make("CartPole-v1")
    env = LogWrapper(env)
    obs, env_state = torch.func.vmap(env.reset, in_dims=(0, None))(jr.split(jr.key(1), E), params)
    actor = off_policy.Actor(env_state=env_state, obs=obs, key=jr.key(2), global_step=torch.tensor(5))
    return env, params, actor


def test_env_step_shapes_keys_and_transition():
    env, params, actor = _cartpole()
    seen = {}

    def policy(keys, obs):
        seen["keys"], seen["obs"] = keys, obs
        return torch.tensor([0, 1, 1])

    new, transition, info = off_policy.env_step(policy, env, params, actor, num_keys=2)
    split = jr.split(actor.key, 4)  # carried key, two policy keys, the envs' key
    assert len(seen["keys"]) == 2 and torch.equal(torch.stack(seen["keys"]), split[1:3])
    assert torch.equal(new.key, split[0]) and new.key.is_contiguous()
    assert torch.equal(seen["obs"], actor.obs) and int(new.global_step) == 5 + E
    # the env stepped with the policy's actions and the last key, split over the envs
    want_obs, _, want_reward, want_term, _, _ = torch.func.vmap(env.step, in_dims=(0, 0, 0, None))(
        jr.split(split[3], E), actor.env_state, torch.tensor([0, 1, 1]), params)
    assert torch.equal(new.obs, want_obs)
    assert set(transition) == set(off_policy.TRANSITION_KEYS)
    assert torch.equal(transition["obs"], actor.obs) and torch.equal(transition["action"], torch.tensor([0, 1, 1]))
    assert transition["reward"].dtype == torch.float32 and torch.equal(transition["reward"], want_reward.float())
    assert torch.equal(transition["next_obs"], want_obs)  # no episode ended: final_obs is the next obs
    assert transition["terminated"].dtype == torch.bool and torch.equal(transition["terminated"], want_term)
    assert isinstance(info, off_policy.StepInfo) and info.episode_done.shape == (E,)


def test_env_step_stores_the_final_observation_not_the_reset_one():
    env, params, actor = _cartpole()
    # push the pole far over: the next step terminates every env and auto-resets it
    state = actor.env_state
    inner = dataclasses.replace(state.env_state, theta=torch.full((E,), 0.5))
    actor = actor._replace(env_state=dataclasses.replace(state, env_state=inner))
    new, transition, info = off_policy.env_step(lambda keys, obs: torch.ones(E, dtype=torch.int64), env, params, actor)
    assert bool(transition["terminated"].all()) and bool(info.episode_done.all())
    assert torch.all(transition["next_obs"][:, 2] > 0.2)  # the pole angle past the limit
    assert not torch.equal(transition["next_obs"], new.obs)  # new.obs is the reset observation


def test_env_step_bad_inputs():
    env, params, actor = _cartpole()
    with pytest.raises(TypeError, match="policy"):
        off_policy.env_step(None, env, params, actor)
    with pytest.raises(TypeError, match="actor"):
        off_policy.env_step(lambda k, o: o, env, params, tuple(actor))
    with pytest.raises(ValueError, match="num_keys"):
        off_policy.env_step(lambda k, o: o, env, params, actor, num_keys=0)
    with pytest.raises(ValueError, match="num_envs=3"):
        off_policy.env_step(lambda k, o: torch.zeros(2, dtype=torch.int64), env, params, actor)


def _transition(values):
    v = torch.as_tensor(values, dtype=torch.float32)
    return {"obs": torch.stack([v, -v], -1), "terminated": v > 4}


def test_store_adds_in_step_order_and_keeps_the_newest():
    buf = replay.init({"obs": torch.zeros(2), "terminated": torch.zeros((), dtype=torch.bool)}, 4)
    # two steps of three envs: six items in a four-slot buffer, as if added one by one
    new = off_policy.store(buf, [_transition([1, 2, 3]), _transition([4, 5, 6])])
    assert new.data["obs"][:, 0].tolist() == [5.0, 6.0, 3.0, 4.0]
    assert new.data["terminated"].tolist() == [True, True, False, False]
    assert int(new.position) == 2 and int(new.size) == 4
    assert int(buf.size) == 0  # out of place
    layout = lambda t: {**t, "obs": 10 * t["obs"]}  # noqa: E731
    assert off_policy.store(buf, [_transition([1])], layout).data["obs"][0].tolist() == [10.0, -10.0]


def test_store_bad_inputs():
    buf = replay.init({"obs": torch.zeros(2), "terminated": torch.zeros((), dtype=torch.bool)}, 4)
    with pytest.raises(ValueError, match="transitions"):
        off_policy.store(buf, [])
    with pytest.raises(TypeError, match="layout"):
        off_policy.store(buf, [_transition([1])], layout=3)


def test_collect_loops_and_lists():
    calls = []

    def step(actor, inc):
        calls.append(int(actor))
        return actor + inc, {"t": actor}, off_policy.StepInfo(actor, actor, actor > 0)

    actor, transitions, infos = off_policy.collect(step, torch.tensor(0), 3, torch.tensor(2))
    assert int(actor) == 6 and calls == [0, 2, 4]
    assert [int(t["t"]) for t in transitions] == [0, 2, 4] and len(infos) == 3
    with pytest.raises(ValueError, match="num_steps"):
        off_policy.collect(step, torch.tensor(0), 0)


def test_episode_summary_hand_computed():
    infos = [
        off_policy.StepInfo(torch.tensor([10.0, 0.0]), torch.tensor([5.0, 0.0]), torch.tensor([True, False])),
        off_policy.StepInfo(torch.tensor([0.0, 30.0]), torch.tensor([0.0, 7.0]), torch.tensor([False, True])),
    ]
    m = off_policy.episode_summary(infos)
    assert float(m["episode_return"]) == 20.0 and float(m["episode_length"]) == 6.0 and float(m["episodes"]) == 2.0
    with pytest.raises(ValueError, match="step_infos"):
        off_policy.episode_summary([{"episode_return": 1}])


def test_actor_of_with_actor_fields_of():
    from typing import NamedTuple

    class S(NamedTuple):
        env_state: torch.Tensor
        obs: torch.Tensor
        key: torch.Tensor
        global_step: torch.Tensor
        params: torch.Tensor

    s = S(*(torch.tensor(float(i)) for i in range(5)))
    a = off_policy.actor_of(s)
    assert isinstance(a, off_policy.Actor) and float(a.global_step) == 3.0
    s2 = off_policy.with_actor(s, a._replace(obs=torch.tensor(9.0)))
    assert float(s2.obs) == 9.0 and float(s2.params) == 4.0
    assert off_policy.fields_of(s, ("params", "key")) == {"params": s.params, "key": s.key}
    with pytest.raises(TypeError, match="lacks"):
        off_policy.actor_of(object())
    with pytest.raises(TypeError, match="actor"):
        off_policy.with_actor(s, tuple(a))
    with pytest.raises(TypeError, match="no field"):
        off_policy.fields_of(s, ("buffer",))


@pytest.mark.exactness
def test_adam_optimizer_is_adam_then_minus_lr_bit_for_bit():
    params = {"w": torch.tensor([1.0, -2.0, 3.0]), "b": torch.tensor(0.5)}
    grads = [{"w": torch.tensor([0.3, -0.1, 2.0]), "b": torch.tensor(-0.7)},
             {"w": torch.tensor([-0.2, 0.4, 1.0]), "b": torch.tensor(0.1)}]
    lr = torch.tensor(3e-3)
    tx, adam = off_policy.adam_optimizer(lr), optim.scale_by_adam()
    s, sa = tx.init(params), adam.init(params)
    for g in grads:
        u, s = tx.update(g, s)
        ua, sa = adam.update(g, sa)
        # what the algorithms did by hand before
        assert tree.equal(u, tree.map(lambda x: -lr * x, ua))
    # first step by hand: m_hat = g, v_hat = g^2, so the update is -lr * g / (|g| + eps)
    u1, _ = tx.update(grads[0], tx.init(params))
    torch.testing.assert_close(u1["w"], -3e-3 * grads[0]["w"] / (grads[0]["w"].abs() + 1e-8), rtol=1e-6, atol=0)


def test_adam_optimizer_freeze_guard_and_clip():
    params = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3.0])}
    g = {"a": torch.tensor([0.5, 0.5]), "b": torch.tensor([0.5])}
    tx = off_policy.adam_optimizer(0.1, {"a": True, "b": False}, skip_nonfinite=1)
    s = tx.init(params)
    assert isinstance(s, optim.ApplyIfFiniteState)
    u, s = tx.update(g, s)
    assert u["a"].tolist() == [0.0, 0.0] and u["b"].tolist() != [0.0]
    u, s2 = tx.update({"a": g["a"], "b": torch.tensor([float("nan")])}, s)
    assert u["b"].tolist() == [0.0] and int(s2.total_notfinite) == 1  # skipped
    # clipping to norm 0.1 of a gradient of norm 5 then Adam's first step: -lr * sign(g)
    clipped = off_policy.adam_optimizer(0.1, max_grad_norm=0.1)
    u, _ = clipped.update({"a": torch.tensor([3.0, 4.0])}, clipped.init({"a": torch.zeros(2)}))
    torch.testing.assert_close(u["a"], torch.tensor([-0.1, -0.1]), rtol=1e-6, atol=0)
