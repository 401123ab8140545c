"""TD3's twin-critic, delayed actor and target steps against CleanRL's ``td3_continuous_action.py`` in plain torch.

``tests/test_td3.py`` checks the first critic gradient and the gating; this
module replays the whole loop, the actor and the targets included.  The
reference holds ``nn.Sequential`` copies of funrl's actor (relu, tanh, scaled
to the action box) and twin critics (relu on ``concat(obs, action)``), their
target copies, ``torch.optim.Adam`` for the actor and one over both critics;
on the transitions that funrl sampled and the smoothing noise it drew (both
recomputed from the state's key) it replays six updates of CleanRL's loop::

    a' = clamp(target_actor(next_obs) + clamp(noise * policy_noise, -noise_clip, noise_clip) * scale, low, high)
    y = reward + (1 - terminated) * gamma * min(qf1_target(next_obs, a'), qf2_target(next_obs, a'))
    qf_loss = F.mse_loss(qf1(obs, action), y) + F.mse_loss(qf2(obs, action), y); q_optimizer.step()
    every policy_frequency-th step:
        actor_loss = -qf1(obs, actor(obs)).mean(); actor_optimizer.step()   # the updated qf1
        target <- tau * online + (1 - tau) * target   (actor, qf1, qf2)

``terminated`` comes from the env's rule (Pendulum never terminates; the
``TwoStep`` probe terminates on leaving ``s = 1``), not from the buffer; on
Pendulum episodes are cut at 3 steps, so batches hold truncations.  The
targets start from another init (as after a warm start); gamma 0.9, tau 0.3,
lr 0.01, policy noise 0.4 clipped at 0.3 make a wrong coefficient visible.
Params, targets, both Adam moments and the reported losses are compared after
every update.

Mutations of ``funrl/algorithms/td3.py`` this module catches (each applied
alone; ``notes/mutations-td3.json``): min -> max of the twin targets; the
smoothing noise dropped; the noise not clipped; the action scale dropped from
the noise; ``(~terminated)`` dropped; gamma fixed to 1; the second critic's
loss dropped; the actor following q2; the actor ascending the old critic; the
actor loss's sign flipped; tau ignored; the actor every step (delay ignored);
targets from the pre-step params.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from funrl import random as jr
from funrl.algorithms import replay, td3
from torch_reference import (
    CleanRLActor,
    CleanRLQNetwork,
    adam_moments,
    as_funrl,
    deterministic_test_envs,
    funrl_adam_moments,
    run_updates,
)

GAMMA, TAU, LR, BATCH, NOISE, NOISE_CLIP = 0.9, 0.3, 0.01, 8, 0.4, 0.3
E, UPDATES = 2, 7


@pytest.mark.parametrize("env_name", ["pendulum", "two_step"])
def test_twin_critic_actor_and_target_steps_equal_cleanrl_formulas(env_name):
    env, env_params, terminates = deterministic_test_envs()[env_name]
    config = td3.Config(
        total_timesteps=E * UPDATES, num_envs=E, learning_starts=4, batch_size=BATCH, buffer_size=32,
        policy_frequency=2, learning_rate=LR, gamma=GAMMA, tau=TAU, policy_noise=NOISE, noise_clip=NOISE_CLIP,
        hidden_sizes=(16, 16),
    )
    algo = td3.make_algorithm(config, env, env_params)
    assert algo.num_updates == UPDATES
    states, metrics = run_updates(algo, UPDATES)
    data = states[-1].buffer.data  # 14 transitions in 32 slots: nothing overwritten

    space = env.action_space(env_params)
    low, high = space.low.reshape(-1).float(), space.high.reshape(-1).float()
    p0, t0 = states[0].params, states[0].target_params
    actor, qf1, qf2 = CleanRLActor(p0["actor"], low, high), CleanRLQNetwork(p0["critic"]["q1"]), CleanRLQNetwork(p0["critic"]["q2"])
    target_actor = CleanRLActor(t0["actor"], low, high)
    qf1_target, qf2_target = CleanRLQNetwork(t0["critic"]["q1"]), CleanRLQNetwork(t0["critic"]["q2"])
    q_optimizer = torch.optim.Adam(list(qf1.parameters()) + list(qf2.parameters()), lr=LR)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=LR)
    noise_clipped = 0
    ends_in_batches = actor_steps = 0
    for u in range(1, UPDATES + 1):
        global_step = u * E
        if global_step < config.learning_starts:
            torch.testing.assert_close(states[u].params, states[0].params, rtol=0, atol=0)
            continue
        _, k_batch, k_smooth = jr.split(jr.split(states[u - 1].key, 4)[0], 3)
        idx = replay.sample_indices(states[u].buffer, k_batch, BATCH)
        obs, action, reward, next_obs = (data[k][idx] for k in ("obs", "action", "reward", "next_obs"))
        terminated = terminates(obs)
        ends_in_batches += int(terminated.sum()) if env_name == "two_step" else int(((idx // E) % 3 == 2).sum())
        noise = jr.normal(k_smooth, action.shape, torch.float32)  # CleanRL: torch.randn_like(data.actions)
        noise_clipped += int(((noise * NOISE).abs() > NOISE_CLIP).sum())

        with torch.no_grad():
            clipped_noise = (noise * NOISE).clamp(-NOISE_CLIP, NOISE_CLIP) * target_actor.scale
            next_action = (target_actor(next_obs) + clipped_noise).clamp(low, high)
            min_q = torch.min(qf1_target(next_obs, next_action), qf2_target(next_obs, next_action))
            next_q = reward + (1 - terminated) * GAMMA * min_q
        q = qf1(obs, action)
        qf_loss = F.mse_loss(q, next_q) + F.mse_loss(qf2(obs, action), next_q)
        q_optimizer.zero_grad()
        qf_loss.backward()
        q_optimizer.step()

        actor_loss = -qf1(obs, actor(obs)).mean()
        if (global_step // E - 1) % config.policy_frequency == 0:
            actor_steps += 1
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()
            with torch.no_grad():
                for net, target in ((actor, target_actor), (qf1, qf1_target), (qf2, qf2_target)):
                    for p, t in zip(net.parameters(), target.parameters()):
                        t.copy_(TAU * p + (1 - TAU) * t)

        m = metrics[u - 1]
        for name, value in (("critic_loss", qf_loss), ("q_value", q.mean()), ("actor_loss", actor_loss)):
            torch.testing.assert_close(m[name], value.detach(), rtol=1e-5, atol=1e-6, msg=f"{name}, update {u}")
        s = states[u]
        critic_moments = {name: adam_moments(q_optimizer, net) for name, net in (("q1", qf1), ("q2", qf2))}
        expected = {
            "params": {"actor": as_funrl(actor), "critic": {"q1": as_funrl(qf1), "q2": as_funrl(qf2)}},
            "target_params": {"actor": as_funrl(target_actor),
                              "critic": {"q1": as_funrl(qf1_target), "q2": as_funrl(qf2_target)}},
            # Adam's first steps move each weight by about lr * sign(gradient): its moments show the gradients' sizes
            "critic_moments": {k: {name: critic_moments[name][k] for name in ("q1", "q2")} for k in ("mu", "nu")},
        }
        got = {"params": s.params, "target_params": s.target_params,
               "critic_moments": funrl_adam_moments(s.critic_opt_state)}
        if actor_steps:
            expected["actor_moments"] = adam_moments(actor_optimizer, actor)
            got["actor_moments"] = funrl_adam_moments(s.actor_opt_state)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7, msg=lambda msg: f"update {u}: {msg}")
    assert actor_steps == 3
    # the batches held terminal transitions (two_step) or time-limit ends (pendulum: every 3rd step of an env)
    assert ends_in_batches > 0
    assert noise_clipped > 0  # the noise clip was active
