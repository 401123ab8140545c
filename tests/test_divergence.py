"""A run whose rewards or params become NaN stops at the next chunk with an error naming seeds and update."""

import os

import pytest
import torch

import funrl
from funrl import checkpoint as ckpt
from funrl import tree
from funrl.envs.cartpole import CartPole
from funrl.runner import Diverged, check_finite

TINY = dict(num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, hidden_sizes=(8, 8))


class NaNAfterEpisodeStep(CartPole):
    """CartPole whose reward is NaN once an episode is past step 5 (so the NaN appears in the first updates)."""

    def step_env(self, key, state, action, params):
        obs, state, reward, terminated, info = super().step_env(key, state, action, params)
        return obs, state, torch.where(state.time > 5, torch.full_like(reward, float("nan")), reward), terminated, info


def test_nan_reward_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    funrl.run("ppo", seeds=2, total_steps=32 * 8, out=out, compile=False, progress=False, plot=False,
              chunk_size=2, checkpoint_every=2, **TINY)
    manager = ckpt.CheckpointManager(os.path.join(out, "checkpoints"))
    os.remove(manager.path(8))
    os.remove(os.path.join(out, "summary.json"))
    real_make = funrl.envs.make

    def make(env_id, **kw):  # from now on the reward is NaN past step 5 of an episode
        env, params = real_make(env_id, **kw)
        return NaNAfterEpisodeStep(), params

    monkeypatch.setattr(funrl.envs, "make", make)
    with pytest.raises(Diverged, match=r"training diverged: .*not finite for seed\(s\) \[0, 1\] by update 7 "):
        funrl.run(resume=out, progress=False, plot=False)
    # nothing was checkpointed after the NaN: the newest checkpoint is the finite one it resumed from
    step, saved, _ = manager.load()
    assert step == 6
    assert all(x.isfinite().all() for x in tree.leaves(saved["state"]) if x.is_floating_point())
    assert not os.path.exists(os.path.join(out, "summary.json"))


def test_check_finite_names_the_param_and_the_seed():
    from funrl.algorithms import ppo

    params = {"actor": {"w": torch.zeros(3, 2)}}
    params["actor"]["w"][2, 1] = float("inf")
    state = ppo.PPOState(*([None] * len(ppo.PPOState._fields)))._replace(params=params)
    metrics = {"loss": torch.zeros(3, 4)}  # [S=3, C=4]
    with pytest.raises(Diverged, match=r"param 'actor.w' not finite for seed\(s\) \[7\]"):
        check_finite(ppo, state, metrics, last_update=12, first_seed=5)
    metrics["loss"][0, 1] = float("nan")  # seed 0 at the chunk's second update
    with pytest.raises(Diverged, match=r"metric 'loss', param 'actor.w' not finite for seed\(s\) \[5, 7\] by update 10"):
        check_finite(ppo, state, metrics, last_update=12, first_seed=5)
    params["actor"]["w"][2, 1] = 0.0
    metrics["loss"][0, 1] = 0.0
    check_finite(ppo, state, metrics, last_update=12)  # finite: no error
    assert tree.leaves(params)[0].isfinite().all()


def _nan_reward_make(monkeypatch):
    real_make = funrl.envs.make

    def make(env_id, **kw):
        env, params = real_make(env_id, **kw)
        return NaNAfterEpisodeStep(), params

    monkeypatch.setattr(funrl.envs, "make", make)


def test_skip_nonfinite_skips_every_nan_step(tmp_path, monkeypatch):
    """skip_nonfinite (optim.apply_if_finite): NaN losses are skipped steps; params stay the initial ones."""
    from funrl.algorithms import ppo
    from funrl.optim import ApplyIfFiniteState

    config = ppo.Config(**TINY, total_timesteps=32 * 3, skip_nonfinite=10**6)
    env, params = funrl.envs.make("CartPole-v1")
    algorithm = ppo.make_algorithm(config, NaNAfterEpisodeStep(), params)
    key = funrl.random.key(0)
    state, metrics = ppo.make_train(config, NaNAfterEpisodeStep(), params)(key)
    assert isinstance(state.opt_state, ApplyIfFiniteState)
    # every optimizer step of the 3 updates (1 epoch x 2 minibatches each) had NaN gradients and was skipped
    assert int(state.opt_state.total_notfinite) == 6
    assert torch.isnan(metrics["episode_return"]).any()
    assert tree.equal(state.params, algorithm.init(key).params)  # zero updates: still init's params
    # the runner does not stop at the NaN losses, but will not summarise NaN returns
    _nan_reward_make(monkeypatch)
    with pytest.raises(Diverged, match=r"training finished, but seed\(s\) \[0, 1\] end with non-finite returns "
                                       r"\(skip_nonfinite=1000000 skipped their NaN steps\)"):
        funrl.run("ppo", seeds=2, total_steps=32 * 3, out=str(tmp_path / "skip"), compile=False, progress=False,
                  plot=False, chunk_size=1, skip_nonfinite=10**6, **TINY)
    assert os.path.exists(tmp_path / "skip" / "metrics.csv")
    assert not os.path.exists(tmp_path / "skip" / "summary.json")


def test_skip_nonfinite_applies_after_the_limit_so_the_run_still_stops(tmp_path, monkeypatch):
    _nan_reward_make(monkeypatch)
    # after 2 skipped steps in a row the third NaN step is applied: NaN params, stopped at the first chunk
    with pytest.raises(Diverged, match=r"training diverged: param 'actor.linear_0.weight'.* not finite for seed\(s\) \[0, 1\] by update 2 "):
        funrl.run("ppo", seeds=2, total_steps=32 * 4, out=str(tmp_path / "limit"), compile=False, progress=False,
                  plot=False, chunk_size=2, skip_nonfinite=2, **TINY)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "reinforce", "dqn", "ddpg", "td3", "sac"])
def test_skip_nonfinite_wraps_every_optimizer_and_is_checked(algo):
    from funrl.algorithms import get
    from funrl.optim import ApplyIfFiniteState

    module = get(algo)
    env, params = funrl.envs.make("Pendulum-v1" if algo in ("ddpg", "td3", "sac") else "CartPole-v1")
    state = module.make_algorithm(module.Config(skip_nonfinite=3), env, params).init(funrl.random.key(0))
    opt_states = [v for k, v in state._asdict().items() if k.endswith("opt_state")]
    if not opt_states:  # DQN keeps its optimizer state with the learner
        opt_states = [state.learner.opt_state]
    assert opt_states and all(isinstance(o, ApplyIfFiniteState) for o in opt_states)
    plain = module.make_algorithm(module.Config(), env, params).init(funrl.random.key(0))
    assert not any(isinstance(v, ApplyIfFiniteState) for v in tree.leaves(plain, is_leaf=lambda x: isinstance(x, ApplyIfFiniteState)))
    with pytest.raises(ValueError, match=r"config.skip_nonfinite: expected an int >= 0 .* got -1"):
        module.Config(skip_nonfinite=-1)
