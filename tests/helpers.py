"""Helpers shared by the algorithm tests (import with ``from helpers import ...``; pytest puts tests/ on sys.path)."""

import torch
import torch.utils._pytree as _pytree

from funrl.algorithms import common


#: Tolerance of "equal up to floating-point reassociation", in units of the
#: dtype's machine epsilon times the compared leaf's largest magnitude: a batched
#: kernel (``bmm``, a vectorised reduction, Inductor's fused loops) may add the
#: same terms in another order, which moves a result by a few ulps of the
#: largest term per reduction -- never by more.  A wrong formula moves it by
#: orders of magnitude more.
REASSOC_ULPS = 64


def assert_match(actual, expected, exact=True, ulps=REASSOC_ULPS):
    """funrl's reproducibility contract as one assertion (README, "Reproducibility").

    Args:
      actual, expected: pytrees of tensors (and Python scalars).
      exact: ``True`` for what the contract says is bit for bit (keys and
        integer-derived draws, element-wise arithmetic, whole training runs:
        row *i* of a seed batch vs the run of seed *i* alone, the same run
        twice); ``False`` for what it says is equal up to reassociation (a
        function with matrix products or reductions called unbatched vs under
        ``vmap``, compiled vs eager, one thread vs two).
      ulps: the reassociation tolerance, see :data:`REASSOC_ULPS`.

    Structure, shapes and dtypes must match; integer and bool leaves must
    always be equal (NaNs count as equal to NaNs at the same places); with ``exact=False`` a float leaf may differ by at most
    ``ulps * eps(dtype) * max(|expected|)`` per element (NaNs at the same places).
    """
    fa, spec_a = _pytree.tree_flatten_with_path(actual)
    fb, spec_b = _pytree.tree_flatten_with_path(expected)
    assert spec_a == spec_b, f"structures differ:\n{spec_a}\n{spec_b}"
    for (path, x), (_, y) in zip(fa, fb):
        where = _pytree.keystr(path) or "<root>"
        if not isinstance(x, torch.Tensor):
            assert x == y, f"{where}: {x!r} != {y!r}"
            continue
        assert x.shape == y.shape and x.dtype == y.dtype, f"{where}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}"
        if exact or not x.is_floating_point():
            same = torch.equal(x, y) or (x.is_floating_point() and torch.equal(x.nan_to_num(0.0), y.nan_to_num(0.0))
                                         and torch.equal(x.isnan(), y.isnan()))  # NaN is NaN
            if not same:
                diff = (x.double() - y.double()).abs().nan_to_num(float("inf")).max().item() if x.is_floating_point() else "-"
                raise AssertionError(f"{where}: not bit for bit equal (max |diff| {diff}; dtype {x.dtype})")
            continue
        if x.numel() == 0:
            continue
        assert torch.equal(x.isnan(), y.isnan()), f"{where}: NaNs at different places"
        finite = y[~y.isnan()]
        scale = finite.abs().max().item() if finite.numel() else 0.0
        tol = ulps * torch.finfo(x.dtype).eps * scale
        diff = (x - y).abs().nan_to_num(0.0).max().item()
        assert diff <= tol, f"{where}: max |diff| {diff:.3g} > {ulps} ulps x max|value| {scale:.3g} = {tol:.3g}"


def q_grid(critic_apply, critic_params, s_values, num_actions=5):
    """Q(s, a) on a grid: ``[len(s_values), num_actions]`` for actions evenly spaced in [-1, 1]."""
    a = torch.linspace(-1.0, 1.0, num_actions)[:, None]
    return torch.stack(
        [critic_apply(critic_params, torch.full((num_actions, 1), float(s)), a) for s in s_values]
    ).detach()


def assert_driver_matches_vmap_train(algo, config, env, params, keys, chunk_size):
    """The eager ``common.Driver`` over seeds equals ``vmap(algo.make_train)``, bit for bit.

    Args:
      algo: an algorithm module (``make_train``, ``make_algorithm``).
      config, env, params: as for ``algo.make_train``.
      keys: one key per seed, ``(S, 2)``.
      chunk_size: updates per driver chunk (callback call).

    Returns:
      The ``env_steps`` the driver's callback reported after each chunk.
    """
    states, metrics = torch.func.vmap(algo.make_train(config, env, params))(keys)
    driver = common.Driver(algo.make_algorithm, config, env, params, compile=False)
    seen = []
    r_state, r_metrics = driver.run(
        driver.init(keys), callback=lambda s, info: seen.append(info.env_steps), chunk_size=chunk_size
    )
    assert_match(r_metrics, metrics)  # both [seeds, updates]
    assert_match(r_state, states)
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
# the language-model algorithms: a one-layer width-16 transformer, 2 pretraining and 2 RL updates of 8 completions
_TINY_LM = dict(d_model=16, n_heads=2, n_layers=1, num_prompts=2, group_size=4, pretrain_steps=4,
                pretrain_steps_per_update=2, total_timesteps=16)
TINY.update({name: dict(_TINY_LM) for name in ("grpo", "rloo", "ppo_lm")})
TINY["sft"] = {**_TINY_LM, "total_timesteps": 0}


#: ``funrl train ppo`` flags for a run of a few seconds (tiny network, short rollouts, one epoch)
TINY_PPO_ARGS = [
    "--set", "num_envs=2",
    "--set", "num_steps=16",
    "--set", "num_minibatches=2",
    "--set", "update_epochs=1",
    "--set", "hidden_sizes=8,8",
]
