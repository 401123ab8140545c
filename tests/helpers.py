"""Helpers shared by the algorithm tests (import with ``from helpers import ...``; pytest puts tests/ on sys.path)."""

import torch

from funrl import tree
from funrl.algorithms import common


def assert_same_run(a, b, rtol=1e-5, atol=1e-6):
    """Two runs of one seed agree: integer/bool leaves exactly, float leaves to rounding.

    Compares pytree structure, then each leaf's shape and dtype; integer and
    bool leaves (actions, counters, dones, buffer slots, keys) must be equal,
    float leaves ``allclose(rtol, atol)``.

    Why not bit for bit: on CPU, under ``vmap`` ``F.linear`` runs torch's
    ``bmm`` where one seed runs ``addmm``/``mm``, and for small matrices the
    kernels can round differently (measured: a 1-ulp difference in a tiny
    MLP's forward, ~1e-9 absolute on weight gradients); reductions over a
    batch (bias and weight gradients) too.  The random draws depend only on
    the integer keys, so the trajectories stay identical and the learnt
    numbers agree to float32 rounding -- after a few dozen off-policy updates
    only to ~1e-5, hence the looser tolerances the DDPG-family tests pass.
    """
    la, lb = tree.leaves(a), tree.leaves(b)
    assert tree.structure(a) == tree.structure(b) and len(la) == len(lb)
    for x, y in zip(la, lb):
        assert x.shape == y.shape and x.dtype == y.dtype, (x.shape, y.shape, x.dtype, y.dtype)
        if x.is_floating_point():
            assert torch.allclose(x, y, rtol=rtol, atol=atol), (x - y).abs().max()
        else:
            assert torch.equal(x, y), (x, y)


def q_grid(critic_apply, critic_params, s_values, num_actions=5):
    """Q(s, a) on a grid: ``[len(s_values), num_actions]`` for actions evenly spaced in [-1, 1]."""
    a = torch.linspace(-1.0, 1.0, num_actions)[:, None]
    return torch.stack(
        [critic_apply(critic_params, torch.full((num_actions, 1), float(s)), a) for s in s_values]
    ).detach()


def assert_runner_matches_vmap_train(algo, config, env, params, keys, chunk_size):
    """The eager ``common.Runner`` over seeds equals ``vmap(algo.make_train)``, bit for bit.

    Args:
      algo: an algorithm module (``make_train``, ``make_algorithm``).
      config, env, params: as for ``algo.make_train``.
      keys: one key per seed, ``(S, 2)``.
      chunk_size: updates per runner chunk (callback call).

    Returns:
      The ``env_steps`` the runner's callback reported after each chunk.
    """
    states, metrics = torch.func.vmap(algo.make_train(config, env, params))(keys)
    runner = common.Runner(algo.make_algorithm, config, env, params, compile=False)
    seen = []
    r_state, r_metrics = runner.run(
        runner.init(keys), callback=lambda s, info: seen.append(info.env_steps), chunk_size=chunk_size
    )
    # the runner stacks metrics [updates, seeds]; vmap(train) gives [seeds, updates]
    assert tree.equal(tree.map(lambda x: x.T, r_metrics), metrics)
    assert tree.equal(r_state, states)
    return seen


def assert_buffer_stores_final_obs_and_termination(algo, config):
    """One update of an off-policy algorithm on the continuous probes fills its buffer correctly.

    ``config`` must collect 3 transitions per update (``train_frequency=3``,
    one env) and not learn yet.  On ``Alternating`` (obs 0, 1, 0, truncated
    after 3 steps, reward ``1 - obs``) the third transition's ``next_obs`` is
    the episode's ``final_obs`` (1), not the auto-reset observation (0), and
    nothing counts as terminated; on ``TwoStep`` the second step terminates.

    Args:
      algo: an algorithm module with ``make_algorithm`` and a ``state.buffer``.
      config: its Config, as above.

    Returns:
      The state after the update on ``Alternating``.
    """
    from funrl import random as jr
    from funrl.envs.probes import Alternating, TwoStep

    states = []
    for env, terminated in ((Alternating(continuous=True), [False, False, False]),
                            (TwoStep(continuous=True), [False, True, False])):
        algorithm = algo.make_algorithm(config, env, env.default_params())
        state, _ = algorithm.update(algorithm.init(jr.key(0)))
        assert state.buffer.data["terminated"][:3].tolist() == terminated, type(env).__name__
        states.append(state)
    data = states[0].buffer.data
    assert data["obs"][:3, 0].tolist() == [0.0, 1.0, 0.0]
    assert data["next_obs"][:3, 0].tolist() == [1.0, 0.0, 1.0]  # the last is final_obs, not the reset's 0
    assert data["reward"][:3].tolist() == [1.0, 0.0, 1.0]
    assert states[0].obs[:, 0].tolist() == [0.0]  # the auto-reset observation
    assert int(states[0].buffer.size) == 3 and int(states[0].global_step) == 3
    return states[0]


#: per algorithm, the smallest Config overrides that still run every branch of an update
#: (learning, target updates, the delayed actor) in a few updates, on the algorithm's default env
TINY = {
    "ppo": dict(total_timesteps=2 * 2 * 4, num_envs=2, num_steps=4, update_epochs=2, num_minibatches=2, hidden_sizes=(8,)),
    "a2c": dict(total_timesteps=2 * 2 * 4, num_envs=2, num_steps=4, hidden_sizes=(8,)),
    "reinforce": dict(total_timesteps=2 * 2 * 4, num_envs=2, num_steps=4, hidden_sizes=(8,)),
    "dqn": dict(total_timesteps=16, num_envs=2, learning_starts=4, train_frequency=2, target_network_frequency=4,
                batch_size=4, buffer_size=16, hidden_sizes=(8,)),
    "tabular": dict(total_timesteps=2 * 2 * 4, num_envs=2, num_steps=4),
    "ddpg": dict(total_timesteps=16, num_envs=2, learning_starts=4, batch_size=4, buffer_size=16, policy_frequency=2,
                 hidden_sizes=(8,)),
    "td3": dict(total_timesteps=16, num_envs=2, learning_starts=4, batch_size=4, buffer_size=16, policy_frequency=2,
                hidden_sizes=(8,)),
    "sac": dict(total_timesteps=16, num_envs=2, learning_starts=4, batch_size=4, buffer_size=16, policy_frequency=2,
                target_network_frequency=2, hidden_sizes=(8,)),
}


#: ``funrl train ppo`` flags for a run of a few seconds (tiny network, short rollouts, one epoch)
TINY_PPO_ARGS = [
    "--set", "num_envs=2",
    "--set", "num_steps=16",
    "--set", "num_minibatches=2",
    "--set", "update_epochs=1",
    "--set", "hidden_sizes=8,8",
]
