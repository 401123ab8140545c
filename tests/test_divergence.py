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
