"""DDPG's critic, actor and target steps against CleanRL's ``ddpg_continuous_action.py`` in plain torch.

The reference holds ``nn.Sequential`` copies of funrl's actor (relu, tanh,
scaled to the action box) and critic (relu on ``concat(obs, action)``), their
target copies, and one ``torch.optim.Adam`` each; on the transitions that
funrl sampled (recomputed from the state's key with ``replay.sample_indices``)
it replays six updates of CleanRL's loop::

    y = reward + (1 - terminated) * gamma * qf1_target(next_obs, target_actor(next_obs))
    qf1_loss = F.mse_loss(qf1(obs, action), y); q_optimizer.step()
    every policy_frequency-th step:
        actor_loss = -qf1(obs, actor(obs)).mean(); actor_optimizer.step()   # the updated critic
        target <- tau * online + (1 - tau) * target   (actor and critic)

``terminated`` comes from the env's rule (Pendulum never terminates; the
``TwoStep`` probe terminates on leaving ``s = 1``), not from the buffer; on
Pendulum episodes are cut at 3 steps, so batches hold truncations, which must
bootstrap.  The targets start from another init (as after a warm start), so
online vs target networks matter from the first step; gamma 0.9, tau 0.3 and
lr 0.01 make a wrong coefficient visible.  Params, targets, both Adam moments
and the reported losses are compared after every update.

Mutations of ``funrl/algorithms/ddpg.py`` this module catches (each applied
alone; ``notes/mutations-ddpg.json``): ``(~terminated)`` dropped; terminated
and truncated both stored as terminated; gamma fixed to 1; the online actor
or critic in the target; the critic loss halved; the actor loss's sign
flipped; the actor ascending the old critic; tau ignored (hard copy); targets
from the pre-step params; the actor every step (delay ignored); the actor's
action scale dropped; learning from ``>`` instead of ``>=`` learning_starts;
the learning rate fixed to 1e-3.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from funrl import random as jr
from funrl.algorithms import ddpg, replay
from torch_reference import (
    CleanRLActor,
    CleanRLQNetwork,
    adam_moments,
    as_funrl,
    deterministic_test_envs,
    funrl_adam_moments,
    run_updates,
)

GAMMA, TAU, LR, BATCH = 0.9, 0.3, 0.01, 8
E, UPDATES = 2, 7


@pytest.mark.parametrize("env_name", ["pendulum", "two_step"])
def test_critic_actor_and_target_steps_equal_cleanrl_formulas(env_name):
    env, env_params, terminates = deterministic_test_envs()[env_name]
    config = ddpg.Config(
        total_timesteps=E * UPDATES, num_envs=E, learning_starts=4, batch_size=BATCH, buffer_size=32,
        policy_frequency=2, learning_rate=LR, gamma=GAMMA, tau=TAU, hidden_sizes=(16, 16),
    )
    algo = ddpg.make_algorithm(config, env, env_params)
    assert algo.num_updates == UPDATES
    states, metrics = run_updates(algo, UPDATES)
    data = states[-1].buffer.data  # 14 transitions in 32 slots: nothing overwritten

    space = env.action_space(env_params)
    low, high = space.low.reshape(-1).float(), space.high.reshape(-1).float()
    actor, qf1 = CleanRLActor(states[0].params["actor"], low, high), CleanRLQNetwork(states[0].params["critic"])
    target_actor = CleanRLActor(states[0].target_params["actor"], low, high)
    qf1_target = CleanRLQNetwork(states[0].target_params["critic"])
    q_optimizer = torch.optim.Adam(qf1.parameters(), lr=LR)
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=LR)
    ends_in_batches = actor_steps = 0
    for u in range(1, UPDATES + 1):
        global_step = u * E
        if global_step < config.learning_starts:
            torch.testing.assert_close(states[u].params, states[0].params, rtol=0, atol=0)
            continue
        _, k_batch = jr.split(jr.split(states[u - 1].key, 4)[0])
        idx = replay.sample_indices(states[u].buffer, k_batch, BATCH)
        obs, action, reward, next_obs = (data[k][idx] for k in ("obs", "action", "reward", "next_obs"))
        terminated = terminates(obs)
        ends_in_batches += int(terminated.sum()) if env_name == "two_step" else int(((idx // E) % 3 == 2).sum())

        with torch.no_grad():
            next_q = reward + (1 - terminated) * GAMMA * qf1_target(next_obs, target_actor(next_obs))
        q = qf1(obs, action)
        qf1_loss = F.mse_loss(q, next_q)
        q_optimizer.zero_grad()
        qf1_loss.backward()
        q_optimizer.step()

        actor_loss = -qf1(obs, actor(obs)).mean()
        if (global_step // E - 1) % config.policy_frequency == 0:
            actor_steps += 1
            actor_optimizer.zero_grad()
            actor_loss.backward()
            actor_optimizer.step()
            with torch.no_grad():
                for net, target in ((actor, target_actor), (qf1, qf1_target)):
                    for p, t in zip(net.parameters(), target.parameters()):
                        t.copy_(TAU * p + (1 - TAU) * t)

        m = metrics[u - 1]
        for name, value in (("critic_loss", qf1_loss), ("q_value", q.mean()), ("actor_loss", actor_loss)):
            torch.testing.assert_close(m[name], value.detach(), rtol=1e-5, atol=1e-6, msg=f"{name}, update {u}")
        s = states[u]
        expected = {
            "params": {"actor": as_funrl(actor), "critic": as_funrl(qf1)},
            "target_params": {"actor": as_funrl(target_actor), "critic": as_funrl(qf1_target)},
            # Adam's first steps move each weight by about lr * sign(gradient): its moments show the gradients' sizes
            "critic_moments": adam_moments(q_optimizer, qf1),
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
