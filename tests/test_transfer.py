"""Warm starts (``funrl.run(init=...)`` / ``funrl train --init``) and frozen params (``Config.freeze``), on tiny eager runs."""

import json
import os
import re
import shutil

import pytest
import torch

import funrl
from funrl import checkpoint as ckpt
from funrl import random as jr
from funrl import transfer, tree
from funrl.algorithms import DEFAULT_ENVS, get
from funrl.algorithms import resolve_config
from funrl.algorithms.common import Driver, param_paths, seed_keys
from helpers import TINY, TINY_PPO_ARGS

TINY_KW = dict(total_timesteps=64, num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, hidden_sizes=(8, 8))
QUIET = dict(compile=False, progress=False, plot=False)


def _source(tmp_path, algo="ppo", seeds=2, name="src", **kw):
    """A finished tiny run of ``algo``; returns its result dict."""
    config = dict(TINY_KW if algo == "ppo" else TINY[algo])
    config.update(kw)
    return funrl.run(algo, seeds=seeds, out=str(tmp_path / name), **QUIET, **config)


def _fresh_state(algo, seeds, seed=7, **kw):
    module, env_id, config = resolve_config(algo, None, None, {**(TINY_KW if algo == "ppo" else TINY[algo]), **kw})
    env, env_params = getattr(module, "make_env", funrl.envs.make)(env_id)  # LM algorithms: a task
    driver = Driver(module.make_algorithm, config, env, env_params, compile=False)
    return module, driver.init(seed_keys(seed, seeds))


@pytest.mark.parametrize("algo", list(DEFAULT_ENVS))
def test_warm_start_copies_the_final_params_and_targets_bit_for_bit_and_nothing_else(tmp_path, algo):
    # a tiny tabular run sees no reward; a different initial Q-table tells its params from a fresh one
    src = _source(tmp_path, algo, **({"initial_q": 0.5} if algo == "tabular" else {}))
    module, fresh = _fresh_state(algo, 2)
    state, info = transfer.warm_start(module, fresh, str(tmp_path / "src"))
    assert info["algo"] == algo and info["seeds"] == 2
    assert info["update"] == src["metrics"]["episode_return"].shape[1]  # the final checkpoint ([seeds, updates])
    final = transfer.params_of(module, src["state"])
    loaded = transfer.params_of(module, state)
    assert tree.equal(loaded, final)
    assert not tree.equal(transfer.params_of(module, fresh), final)  # the init really changed something
    for target, source in module.TARGETS.items():
        assert tree.equal(transfer.get_path(state, target), transfer.get_path(state, source))
    # everything that is not params or targets is the fresh state's (optimizer state, env, keys, counters)
    skip = {module.PARAMS, *module.TARGETS}

    def rest(s):
        out = s
        for path in skip:
            out = transfer.set_path(out, path, None)
        return out

    assert tree.equal(rest(state), rest(fresh))
    # no storage shared with the checkpoint's tensors: training cannot write into them
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(tree.leaves(loaded), tree.leaves(final)))


def test_init_seed_broadcasts_one_source_seed_to_every_seed(tmp_path):
    src = _source(tmp_path, seeds=3)
    module, fresh = _fresh_state("ppo", 5)
    state, _ = transfer.warm_start(module, fresh, str(tmp_path / "src"), init_seed=1)
    for x, y in zip(tree.leaves(state.params), tree.leaves(src["state"].params)):
        assert x.shape[0] == 5
        assert all(torch.equal(x[i], y[1]) for i in range(5))
    assert not torch.equal(src["state"].params["actor"]["linear_0"]["weight"][0],
                           src["state"].params["actor"]["linear_0"]["weight"][1])


def test_seed_count_mismatch_and_bad_init_seed_are_clear_errors(tmp_path):
    _source(tmp_path, seeds=3)
    module, fresh = _fresh_state("ppo", 2)
    with pytest.raises(ValueError, match=r"source run has 3 seeds, this run has 2.*--init-seed"):
        transfer.warm_start(module, fresh, str(tmp_path / "src"))
    with pytest.raises(ValueError, match=r"init_seed: expected an int in \[0, 3\).*got 3"):
        transfer.warm_start(module, fresh, str(tmp_path / "src"), init_seed=3)
    with pytest.raises(ValueError, match="init_seed: given"):
        funrl.run("ppo", seeds=2, out=str(tmp_path / "x"), init_seed=0, **QUIET, **TINY_KW)


def test_mismatched_params_name_the_first_differing_path_and_shapes(tmp_path):
    _source(tmp_path, seeds=2)
    with pytest.raises(ValueError, match=r"'actor.linear_0.weight' has shape \(8, 4\) in the loaded params, expected \(16, 4\)"):
        funrl.run("ppo", seeds=2, out=str(tmp_path / "wide"), init=str(tmp_path / "src"),
                  **QUIET, **{**TINY_KW, "hidden_sizes": (16, 8)})
    module, fresh = _fresh_state("ppo", 2, hidden_sizes=(8, 8, 8))
    with pytest.raises(ValueError, match=r"'actor.linear_2.weight' has shape \(2, 8\) in the loaded params, expected \(8, 8\)"):
        transfer.warm_start(module, fresh, str(tmp_path / "src"))
    # a different structure: DQN's Q-network has no "actor"
    module, fresh = _fresh_state("dqn", 2)
    with pytest.raises(ValueError, match=r"the loaded params have no 'linear_0.weight'"):
        transfer.warm_start(module, fresh, str(tmp_path / "src"))
    with pytest.raises(FileNotFoundError, match="not a funrl results folder"):
        transfer.warm_start(module, fresh, str(tmp_path / "nowhere"))


def test_a2c_starts_from_ppo_params_of_the_same_shape(tmp_path):
    src = _source(tmp_path, seeds=2, hidden_sizes=(8,))
    module, fresh = _fresh_state("a2c", 2)
    state, info = transfer.warm_start(module, fresh, str(tmp_path / "src"))
    assert info["algo"] == "ppo"
    assert tree.equal(state.params, src["state"].params)


def test_sac_with_a_fixed_temperature_keeps_its_own_alpha(tmp_path):
    src = _source(tmp_path, "sac", autotune=False, alpha=0.2)
    module, fresh = _fresh_state("sac", 2, autotune=False, alpha=0.05)
    config = resolve_config("sac", None, None, {**TINY["sac"], "autotune": False, "alpha": 0.05})[2]
    state, _ = transfer.warm_start(module, fresh, str(tmp_path / "src"), config=config)
    assert torch.equal(state.params["log_alpha"], fresh.params["log_alpha"])  # log(0.05), not the source's log(0.2)
    assert tree.equal(state.params["actor"], src["state"].params["actor"])
    # with autotune on, the temperature is learnt and comes from the source
    module, fresh = _fresh_state("sac", 2)
    auto = resolve_config("sac", None, None, TINY["sac"])[2]
    state, _ = transfer.warm_start(module, fresh, str(tmp_path / "src"), config=auto)
    assert torch.equal(state.params["log_alpha"], src["state"].params["log_alpha"])


# --------------------------------------------------------------------------- freeze
FREEZE = {
    "ppo": r"^critic\.", "a2c": r"^actor\.linear_0\.", "reinforce": r"\.bias$", "dqn": r"^linear_0\.",
    "ddpg": r"^critic\.", "td3": r"^actor\.", "sac": r"^critic\.q1\.|^log_alpha$",
}


@pytest.mark.parametrize("algo", list(FREEZE))
def test_frozen_params_stay_bit_identical_while_the_others_learn(algo):
    module = get(algo)
    env, env_params = funrl.envs.make(DEFAULT_ENVS[algo])
    config = module.Config(**{**TINY[algo], "freeze": FREEZE[algo]})
    start = transfer.params_of(module, module.make_algorithm(config, env, env_params).init(jr.key(0)))
    state, _ = module.make_train(config, env, env_params)(jr.key(0))
    end = transfer.params_of(module, state)
    frozen = [re.search(FREEZE[algo], p) is not None for p in param_paths(start)]
    same = [torch.equal(a, b) for a, b in zip(tree.leaves(start), tree.leaves(end))]
    assert any(frozen) and not all(frozen)
    for path, f, s in zip(param_paths(start), frozen, same):
        if f:
            assert s, f"{algo}: frozen {path} changed"
    assert not all(s for f, s in zip(frozen, same) if not f), f"{algo}: nothing that is not frozen learnt"


def test_freeze_errors_name_the_available_paths(tmp_path):
    env, env_params = funrl.envs.make("CartPole-v1")
    ppo = get("ppo")
    with pytest.raises(ValueError, match=r"config.freeze: 'policy' matches no parameter path; paths: actor.linear_0.weight, "):
        ppo.make_algorithm(ppo.Config(**{**TINY["ppo"], "freeze": "policy"}), env, env_params)
    with pytest.raises(ValueError, match=r"config.freeze: expected a valid regular expression, got '\('"):
        ppo.Config(freeze="(")
    with pytest.raises(ValueError, match="freeze: tabular has no network layers to freeze"):
        funrl.run("tabular", seeds=1, freeze="q", out=str(tmp_path / "tab"), **QUIET, **TINY["tabular"])
    assert not (tmp_path / "tab").exists()


# --------------------------------------------------------------------------- the run: config.json and resume
def test_run_records_init_freeze_env_params_and_resume_keeps_them(tmp_path):
    src = _source(tmp_path, seeds=2)
    kw = dict(seeds=2, checkpoint_every=2, init=str(tmp_path / "src"), env_params={"length": 1.0, "masspole": 0.2},
              freeze=r"^actor\.linear_0\.", **QUIET, **{**TINY_KW, "total_timesteps": 128})
    full = funrl.run("ppo", out=str(tmp_path / "ft"), **kw)
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert cfg["init"]["dir"] == os.path.abspath(tmp_path / "src") and cfg["init"]["seed"] is None
    assert cfg["init"]["algo"] == "ppo" and cfg["init"]["update"] == 2
    assert cfg["env_params"] == {"length": 1.0, "masspole": 0.2}
    assert cfg["config"]["freeze"] == r"^actor\.linear_0\."
    frozen = full["state"].params["actor"]["linear_0"]
    assert tree.equal(frozen, src["state"].params["actor"]["linear_0"])
    assert not tree.equal(full["state"].params["critic"], src["state"].params["critic"])

    # the changed pole matters: the same warm start on the default pole ends elsewhere
    default_pole = funrl.run("ppo", out=str(tmp_path / "default"), **{**kw, "env_params": None})
    assert not tree.equal(default_pole["state"].params["critic"], full["state"].params["critic"])

    # drop the last checkpoint and resume: same final state, so freeze and the pole were kept
    ckpts = sorted(os.listdir(tmp_path / "ft" / "checkpoints"))
    assert ckpts == ["ckpt_000000000002.pt", "ckpt_000000000004.pt"]
    os.remove(tmp_path / "ft" / "checkpoints" / ckpts[-1])
    shutil.rmtree(tmp_path / "src")  # the checkpoint holds the warm-started params: resume needs no source
    resumed = funrl.run(resume=str(tmp_path / "ft"), progress=False, plot=False)
    assert resumed["summary"]["resumed_from_update"] == 2
    assert tree.equal(resumed["state"], full["state"])
    assert json.loads((tmp_path / "ft" / "config.json").read_text()) == cfg


def test_eval_uses_the_runs_env_params(tmp_path, monkeypatch):
    from funrl.evaluation import evaluate_run

    funrl.run("ppo", seeds=1, out=str(tmp_path / "run"), env_params={"length": 1.0}, **QUIET, **TINY_KW)
    made = []
    real_make = funrl.envs.make
    monkeypatch.setattr(funrl.envs, "make", lambda env_id, **kw: made.append(kw) or real_make(env_id, **kw))
    table = evaluate_run(str(tmp_path / "run"), episodes=1)
    assert made == [{"length": 1.0}] and len(table["per_seed"]) == 1


def test_cli_init_init_seed_freeze_and_env_set(tmp_path, capsys):
    from funrl.cli import main

    common = ["train", "ppo", "--total-steps", "64", "--no-compile", "--no-plot", "--no-progress", *TINY_PPO_ARGS]
    assert main([*common, "--seeds", "2", "--out", str(tmp_path / "src")]) == 0
    assert main([*common, "--seeds", "3", "--out", str(tmp_path / "ft"), "--init", str(tmp_path / "src"),
                 "--init-seed", "1", "--freeze", r"^critic\.", "--env-set", "length=1.0", "--env-set", "masspole=0.2"]) == 0
    cfg = json.loads((tmp_path / "ft" / "config.json").read_text())
    assert cfg["init"]["seed"] == 1 and cfg["env_params"] == {"length": 1.0, "masspole": 0.2}
    assert cfg["config"]["freeze"] == r"^critic\."
    _, src, _ = ckpt.CheckpointManager(str(tmp_path / "src" / "checkpoints")).load()
    _, ft, _ = ckpt.CheckpointManager(str(tmp_path / "ft" / "checkpoints")).load()
    for x, y in zip(tree.leaves(ft["state"].params["critic"]), tree.leaves(src["state"].params["critic"])):
        assert all(torch.equal(x[i], y[1]) for i in range(3))
    capsys.readouterr()

    for args, message in [
        (["--seeds", "3", "--init", str(tmp_path / "src")], "source run has 2 seeds, this run has 3"),
        (["--freeze", "nothing"], "'nothing' matches no parameter path; paths: actor.linear_0.weight"),
        (["--env-set", "lenght=1.0"], "did you mean 'length'"),
        (["--env-set", "length"], "--env-set: expected NAME=VALUE, got 'length'"),
        (["--init", str(tmp_path / "nowhere")], "not a funrl results folder"),
        (["--seeds", "2", "--init", str(tmp_path / "src"), "--set", "hidden_sizes=16"], "'actor.linear_0.weight' has shape (8, 4)"),
    ]:
        assert main([*common, "--out", str(tmp_path / "bad"), *args]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()  # a run that cannot start leaves no folder behind
    assert main(["train", "tabular", "--freeze", "q", "--out", str(tmp_path / "bad")]) == 2
    assert "freeze: tabular has no network layers to freeze" in capsys.readouterr().err


@pytest.mark.compile
def test_freeze_holds_in_the_compiled_driver_too():
    module = get("ppo")
    env, env_params = funrl.envs.make("CartPole-v1")
    config = module.Config(**{**TINY["ppo"], "freeze": r"^actor\.linear_0\."})
    driver = Driver(module.make_algorithm, config, env, env_params, compile=True)
    start = driver.init(seed_keys(0, 2))
    end, _ = driver.run(start)
    assert tree.equal(end.params["actor"]["linear_0"], start.params["actor"]["linear_0"])
    assert not tree.equal(end.params["actor"]["linear_1"], start.params["actor"]["linear_1"])
