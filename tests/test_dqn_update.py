"""DQN's gradient steps and target updates against CleanRL's ``dqn.py`` formulas in plain torch.

The reference holds ``nn.Sequential`` copies of funrl's initial Q-network and
target network and ``torch.optim.Adam`` (with funrl's ``adam_eps``); on the
transitions that funrl sampled (recomputed from the learner's key with
``replay.sample_indices``) it replays four gradient steps of CleanRL's update::

    target_max = target_network(next_obs).max(dim=1)            # double_q: target at argmax of online
    td_target  = reward + gamma * target_max * (1 - terminated)
    loss       = F.mse_loss(td_target, q_network(obs).gather(1, action))   # huber: F.smooth_l1_loss
    loss.backward(); [clip_grad_norm_]; optimizer.step()
    every target_network_frequency steps: target <- tau * online + (1 - tau) * target

``terminated`` is recomputed from the stored next observation with CartPole's
bounds, not read from the buffer; a pole that falls at 0.1 rad and episodes cut
at 10 steps make the sampled batches hold terminations *and* truncations
(which must bootstrap).  The run starts from a target network unlike the
online one (another init, as after a warm start), so online vs target and the
Double-DQN selector matter; non-default gamma, tau, learning rate and Adam eps
make a wrong coefficient visible, and the gradient clip is active when set.
Params, target params, Adam's moments and the reported loss are compared after
every update.

Mutations of ``funrl/algorithms/dqn.py`` this module catches (each applied
alone; see the report of the ``updates`` helper, issue 13 item 6):
``gamma * (1 - terminated)`` -> ``gamma``; ``-> 1.0 * (1 - terminated)``;
target net -> online net for ``q_t``; Double-DQN selector from the target net;
huber <-> mse swapped; ``(td * td).mean()`` -> ``0.5 * (td * td).mean()``;
Adam without ``adam_eps``; ``max_grad_norm`` ignored; tau ignored (hard copy);
target update from the pre-step params; ``terminated | truncated`` stored;
the auto-reset observation stored as ``next_obs``; learning from ``>``
instead of ``>=`` learning_starts; the learning rate fixed to 1e-3; ``max`` ->
``min`` in ``losses.value_learning.q_learning``.  (``notes/mutations-dqn.json``
lists them for ``notes/mutate.py``.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from funrl import random as jr
from funrl.algorithms import dqn, replay
from funrl.envs import make
from torch_reference import adam_moments, as_funrl, funrl_adam_moments, module

GAMMA, TAU, LR, EPS, BATCH = 0.9, 0.3, 0.01, 1e-3, 32
# a pole that falls at 0.1 rad (gymnasium: 12 degrees) and episodes cut at 10 steps: terminations *and* truncations
X_THRESHOLD, THETA_THRESHOLD, MAX_STEPS = 2.4, 0.1, 10


def _cleanrl_step(q_network, target_network, optimizer, batch, loss_name, double_q, max_grad_norm):
    """One CleanRL gradient step on ``batch``; returns the loss and the TD errors."""
    with torch.no_grad():
        q_next = target_network(batch["next_obs"])
        if double_q:
            target_max = q_next.gather(1, q_network(batch["next_obs"]).argmax(1, keepdim=True)).squeeze(1)
        else:
            target_max, _ = q_next.max(dim=1)
        td_target = batch["reward"] + GAMMA * target_max * (1 - batch["terminated"])
    old_val = q_network(batch["obs"]).gather(1, batch["action"][:, None]).squeeze(1)
    loss = F.smooth_l1_loss(old_val, td_target) if loss_name == "huber" else F.mse_loss(td_target, old_val)
    optimizer.zero_grad()
    loss.backward()
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(q_network.parameters(), max_grad_norm)
        assert norm > max_grad_norm  # the clip is active
    optimizer.step()
    return loss.detach(), (td_target - old_val).detach()


@pytest.mark.parametrize(
    "loss_name, double_q, max_grad_norm",
    [("mse", False, None), ("mse", True, 0.5), ("huber", False, 0.5), ("huber", True, None)],
)
def test_gradient_and_target_steps_equal_cleanrl_formulas(loss_name, double_q, max_grad_norm):
    env, env_params = make("CartPole-v1", max_episode_steps=MAX_STEPS, theta_threshold_radians=THETA_THRESHOLD)
    E, F_ = 2, 4  # 8 env steps per update
    config = dqn.Config(
        total_timesteps=40, num_envs=E, train_frequency=F_, learning_starts=16, target_network_frequency=16,
        buffer_size=64, batch_size=BATCH, learning_rate=LR, adam_eps=EPS, gamma=GAMMA, tau=TAU,
        hidden_sizes=(16, 16), loss=loss_name, double_q=double_q, max_grad_norm=max_grad_norm,
    )
    algo = dqn.make_algorithm(config, env, env_params)
    state0 = algo.init(jr.key(4))
    # a target network unlike the online one from the first step on (as after a warm start), so that
    # which network selects and which evaluates the next action shows in every step
    state0 = state0._replace(learner=state0.learner._replace(target_params=algo.init(jr.key(8)).learner.params))
    states, metrics = [state0], []
    for _ in range(algo.num_updates):
        state, m = algo.update(states[-1])
        states.append(state)
        metrics.append(m)
    data = states[-1].buffer.data  # nothing is overwritten: N transitions, 64 slots
    N = int(states[-1].buffer.size)
    assert N == 40

    q_network = module(states[0].learner.params, "relu")
    target_network = module(states[0].learner.target_params, "relu")
    optimizer = torch.optim.Adam(q_network.parameters(), lr=LR, eps=EPS)
    seen = dict.fromkeys(
        ("terminated", "truncated", "huber_linear", "huber_quadratic", "online_and_target_argmax_differ"), 0
    )
    for u in range(1, algo.num_updates + 1):
        global_step = u * E * F_
        if global_step < config.learning_starts:
            torch.testing.assert_close(states[u].learner.params, states[0].learner.params, rtol=0, atol=0)
            continue
        _, k_sample = jr.split(states[u - 1].learner.key, 2)
        idx = replay.sample_indices(states[u].buffer, k_sample, BATCH)
        next_obs = data["next_obs"][idx]
        terminated = (next_obs[:, 0].abs() > X_THRESHOLD) | (next_obs[:, 2].abs() > THETA_THRESHOLD)
        # an episode end that is not a termination: the next slot of the same env starts elsewhere
        ended = (data["obs"][(idx + E).clamp(max=N - 1)] != next_obs).any(-1) & (idx + E < N)
        seen["terminated"] += int(terminated.sum())
        seen["truncated"] += int((ended & ~terminated).sum())
        batch = {"obs": data["obs"][idx], "action": data["action"][idx], "reward": data["reward"][idx],
                 "next_obs": next_obs, "terminated": terminated.float()}
        with torch.no_grad():
            online_pick, target_pick = q_network(next_obs).argmax(1), target_network(next_obs).argmax(1)
        seen["online_and_target_argmax_differ"] += int((online_pick != target_pick).sum())
        loss, td = _cleanrl_step(q_network, target_network, optimizer, batch, loss_name, double_q, max_grad_norm)
        seen["huber_linear"] += int((td.abs() > 1).sum())
        seen["huber_quadratic"] += int((td.abs() < 1).sum())
        torch.testing.assert_close(metrics[u - 1]["td_loss"], loss, rtol=1e-5, atol=1e-7, msg=f"td_loss, update {u}")
        if global_step % config.target_network_frequency == 0:
            with torch.no_grad():
                for t, p in zip(target_network.parameters(), q_network.parameters()):
                    t.copy_(TAU * p + (1.0 - TAU) * t)
        learner = states[u].learner
        got = {"params": learner.params, "target_params": learner.target_params}
        expected = {"params": as_funrl(q_network), "target_params": as_funrl(target_network)}
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=lambda m: f"update {u}: {m}")
        # Adam's first steps move each weight by about lr * sign(gradient): its moments show the gradients' sizes
        torch.testing.assert_close(funrl_adam_moments(learner.opt_state), adam_moments(optimizer, q_network),
                                   rtol=1e-5, atol=1e-9, msg=lambda m: f"update {u}: {m}")
    # the batches exercised every branch: terminal and time-limit ends, both sides of the Huber kink,
    # next actions that the online and the target network rank differently
    assert all(v > 0 for v in seen.values()), seen
    # and the target network never caught up with the online one
    assert not torch.allclose(states[-1].learner.target_params["linear_0"]["weight"],
                              states[-1].learner.params["linear_0"]["weight"], atol=1e-4)
