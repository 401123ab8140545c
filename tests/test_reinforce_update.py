"""Two REINFORCE updates against the textbook formulas written out in plain torch (nn.Module, torch.optim.Adam).

The reference takes the rollouts that funrl collected (recorded by a lift
that wraps :func:`funrl.algorithms.common.one_seed_lift`, so funrl's numbers are
those of a plain run) and recomputes, with ``nn.Sequential`` copies of funrl's
initial actor and critic:

* the discounted returns by a backward loop, cut where the ``LogWrapper``
  recorded an episode end (termination *or* time limit; not the algorithm's own
  ``done``), the rollout's tail bootstrapped from ``V(s_T)`` (baseline) or 0;
* the weights ``G - V(s)`` (value not differentiated) or ``G``, standardised
  over the batch when ``normalize_returns``;
* ``loss = -mean(log pi(a|s) * w) - ent_coef * mean(H) + vf_coef * 0.5 *
  mean((V - G)^2)``, ``clip_grad_norm_``, and ``torch.optim.Adam`` over actor
  and critic with the annealed step size ``lr * (1 - update / num_updates)``.

A pole that falls at 0.06 rad and episodes cut at 6 steps put terminations and
truncations inside the 8-step rollouts; non-default gamma, coefficients, Adam
eps and a gradient clip that is active make a wrong one visible; the second
update has an annealed step size.

Mutations of ``funrl/algorithms/reinforce.py`` this module catches (each applied
alone; ``notes/mutations-reinforce.json``): episode ends ignored in the
discount; truncation not an episode end (``done=terminated``); the tail
bootstrapped from 0 with a baseline; the baseline not subtracted (``weight =
g``); normalisation dropped; normalised without centring;
the entropy bonus's sign flipped; ``vf_coef`` ignored; ``0.5`` dropped from the
value loss; ``anneal_lr`` ignored; gamma fixed to 1; ``adam_eps`` ignored;
``max_grad_norm`` ignored.  (``v.detach()`` -> ``v`` in the weight is an
equivalent mutant: ``policy_gradient_loss`` stops the gradient itself.)
"""

from __future__ import annotations

import pytest
import torch

from funrl import random as jr
from funrl.algorithms import reinforce
from funrl.algorithms.common import one_seed_lift
from funrl.envs import make
from torch_reference import adam_moments, as_funrl, funrl_adam_moments, module

GAMMA, ENT, VF, LR, EPS = 0.9, 0.05, 0.7, 0.01, 1e-3
E, T, UPDATES = 3, 8, 2


def _returns(rewards, ends, tail):
    """``G_t = r_t + gamma * (1 - end_t) * G_{t+1}``, ``G_T = tail``; leaves ``[T, E]``."""
    g, out = tail, torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[0])):
        g = rewards[t] + GAMMA * (1.0 - ends[t].float()) * g
        out[t] = g
    return out


@pytest.mark.parametrize(
    "baseline, normalize, max_grad_norm", [(True, True, 0.5), (False, False, None), (True, False, 0.5)]
)
def test_two_updates_equal_the_textbook_formulas(baseline, normalize, max_grad_norm):
    env, env_params = make("CartPole-v1", max_episode_steps=6, theta_threshold_radians=0.06)
    config = reinforce.Config(
        total_timesteps=UPDATES * E * T, num_envs=E, num_steps=T, learning_rate=LR, adam_eps=EPS, gamma=GAMMA,
        ent_coef=ENT, vf_coef=VF, baseline=baseline, normalize_returns=normalize, max_grad_norm=max_grad_norm,
        hidden_sizes=(16, 16),
    )
    learn_inputs = []

    def recording_lift(fn):
        lifted = one_seed_lift(fn)
        if fn.__name__ != "learn":
            return lifted

        def run(params, opt_state, obs, hp, traj):
            learn_inputs.append((obs, traj))
            return lifted(params, opt_state, obs, hp, traj)

        return run

    algo = reinforce.make_algorithm(config, env, env_params, lift=recording_lift)
    assert algo.num_updates == UPDATES
    state = algo.init(jr.key(2))
    actor = module(state.params["actor"], "tanh")
    critic = module(state.params["critic"], "tanh") if baseline else None
    modules = [actor] + ([critic] if baseline else [])
    parameters = [p for m in modules for p in m.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=LR, eps=EPS)
    ends_seen = {"terminated": 0, "truncated": 0}
    for u in range(UPDATES):
        state, metrics = algo.update(state)
        last_obs, traj = learn_inputs[u]  # traj: [T, E, ...]
        obs = traj.obs.reshape(T * E, -1)
        ends = traj.episode_done  # the LogWrapper's record: terminated | truncated
        ends_seen["truncated"] += int((ends & (traj.episode_length == 6)).sum())
        ends_seen["terminated"] += int((ends & (traj.episode_length < 6)).sum())

        with torch.no_grad():
            tail = critic(last_obs).squeeze(-1) if baseline else torch.zeros(E)
        g = _returns(traj.reward, ends, tail).reshape(-1)
        dist = torch.distributions.Categorical(logits=actor(obs))
        log_prob, entropy = dist.log_prob(traj.action.reshape(-1)), dist.entropy().mean()
        if baseline:
            v = critic(obs).squeeze(-1)
            weight = g - v.detach()
            v_loss = 0.5 * ((v - g) ** 2).mean()
        else:
            weight, v_loss = g, torch.zeros(())
        if normalize:
            weight = (weight - weight.mean()) / (weight.std() + 1e-8)
        pg_loss = -(log_prob * weight).mean()
        loss = pg_loss - ENT * entropy + VF * v_loss
        optimizer.zero_grad()
        loss.backward()
        if max_grad_norm is not None:
            assert torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm) > max_grad_norm  # active
        for group in optimizer.param_groups:
            group["lr"] = LR * (1.0 - u / UPDATES)  # anneal_lr: linear to 0 over the run
        optimizer.step()

        for name, value in (("pg_loss", pg_loss), ("v_loss", v_loss), ("entropy", entropy), ("return_mean", g.mean())):
            torch.testing.assert_close(metrics[name], value.detach(), rtol=1e-5, atol=1e-6, msg=f"{name}, update {u}")
        nets = {"actor": actor, **({"critic": critic} if baseline else {})}
        expected = {name: as_funrl(net) for name, net in nets.items()}
        torch.testing.assert_close(state.params, expected, rtol=1e-5, atol=1e-6, msg=lambda m: f"update {u}: {m}")
        # Adam's first steps move each weight by about lr * sign(gradient): its moments show the gradients' sizes
        moments = {name: adam_moments(optimizer, net) for name, net in nets.items()}
        expected = {k: {name: moments[name][k] for name in nets} for k in ("mu", "nu")}
        torch.testing.assert_close(funrl_adam_moments(state.opt_state), expected, rtol=1e-5, atol=1e-9,
                                   msg=lambda m: f"update {u}: {m}")
    assert ends_seen["terminated"] > 0 and ends_seen["truncated"] > 0, ends_seen
