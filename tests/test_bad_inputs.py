"""Bad input raises a clear error naming the argument (issue 15, item 4).

Where a value cannot be checked (tensors under ``vmap``), the documented
behaviour is tested instead.
"""

import pytest
import torch

import funrl
from funrl import random as fr


# 1. uniform with minval > maxval
def test_uniform_minval_above_maxval_raises():
    key = fr.key(0)
    with pytest.raises(ValueError, match="minval"):
        fr.uniform(key, (4,), minval=1, maxval=0)
    # equal bounds are allowed and give minval
    assert torch.all(fr.uniform(key, (4,), minval=2.0, maxval=2.0) == 2.0)


def test_uniform_tensor_bounds_reversed_give_minval():
    # documented: tensor bounds are not checked by value; minval >= maxval gives minval
    out = fr.uniform(fr.key(0), (8,), minval=torch.tensor(1.0), maxval=torch.tensor(0.0))
    assert torch.all(out == 1.0)


# 2. categorical with an all -inf row
def test_categorical_all_neg_inf_row_returns_zero():
    logits = torch.tensor([[0.0, 1.0, 2.0], [-float("inf")] * 3])
    out = fr.categorical(fr.key(1), logits)
    assert out.dtype == torch.int64
    assert out[1].item() == 0
    # also under vmap
    keys = fr.split(fr.key(2), 2)
    vm = torch.func.vmap(lambda k, l: fr.categorical(k, l))(keys, logits)
    assert vm[1].item() == 0


# 3. value learning: action-count mismatch and out-of-range actions
def _transition(A=3, A_t=4):
    return torch.zeros(A), torch.tensor(0), torch.tensor(1.0), torch.tensor(0.9), torch.zeros(A_t)


def test_q_learning_action_count_mismatch_names_q_t():
    from funrl.losses import value_learning as vl

    q_tm1, a, r, d, q_t = _transition()
    with pytest.raises(ValueError, match="q_t"):
        vl.q_learning(q_tm1, a, r, d, q_t)
    with pytest.raises(ValueError, match="q_t"):
        vl.sarsa(q_tm1, a, r, d, q_t, torch.tensor(0))
    with pytest.raises(ValueError, match="q_t"):
        vl.expected_sarsa(q_tm1, a, r, d, q_t, torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="q_t_value"):
        vl.double_q_learning(q_tm1, a, r, d, q_t, q_t)
    with pytest.raises(ValueError, match="q_t"):
        vl.persistent_q_learning(q_tm1, a, r, d, q_t, 0.5)
    T = 2
    seq = (torch.zeros(T, 3), torch.zeros(T, dtype=torch.long), torch.ones(T), torch.ones(T), torch.zeros(T, 4))
    with pytest.raises(ValueError, match="q_t"):
        vl.q_lambda(*seq, 0.5)
    with pytest.raises(ValueError, match="q_t"):
        vl.sarsa_lambda(*seq, torch.zeros(T, dtype=torch.long), 0.5)


def test_q_learning_out_of_range_action_is_not_silent():
    # documented: actions are not checked by value; torch.gather raises eagerly (and under vmap on CPU)
    from funrl.losses import value_learning as vl

    q = torch.zeros(3)
    with pytest.raises(RuntimeError, match="out of bounds"):
        vl.q_learning(q, torch.tensor(3), torch.tensor(1.0), torch.tensor(0.9), q)
    with pytest.raises(RuntimeError, match="out of bounds"):
        torch.func.vmap(vl.q_learning)(q[None], torch.tensor([-1]), torch.ones(1), torch.ones(1), q[None])


# 4. tree.stack with different leaf shapes names the leaf path
def test_tree_stack_shape_mismatch_names_leaf_path():
    from funrl import tree

    a = {"obs": {"x": torch.zeros(2), "y": torch.zeros(1)}}
    b = {"obs": {"x": torch.zeros(3), "y": torch.zeros(1)}}
    with pytest.raises(ValueError, match=r"obs\.x.*\(3,\).*\(2,\)"):
        tree.stack([a, b])
    with pytest.raises(ValueError, match=r"obs\.x"):
        tree.concatenate([{"obs": {"x": torch.zeros(2, 2)}}, {"obs": {"x": torch.zeros(2, 3)}}])
    # concatenating along the mismatched axis is fine
    assert tree.concatenate([{"x": torch.zeros(2)}, {"x": torch.zeros(3)}])["x"].shape == (5,)


# 5. mlp / Linear apply with an input dtype different from the params'
@pytest.mark.parametrize("out", [2, 8])  # the multiply-sum path (<= 4 outputs) and the matmul path
def test_mlp_apply_dtype_mismatch_names_x_and_both_dtypes(out):
    model = funrl.nn.mlp([4, 8, out])
    params = model.init(fr.key(0))
    with pytest.raises(TypeError, match=r"x: expected dtype torch.float32.*got torch.float64"):
        model.apply(params, torch.zeros(4, dtype=torch.float64))
    lin = funrl.nn.Linear(4, out)
    with pytest.raises(TypeError, match=r"x: expected dtype torch.float32.*got torch.float64"):
        lin.apply(lin.init(fr.key(0)), torch.zeros(4, dtype=torch.float64))


# 6. per-seed hparams outside the Config's valid range
def _tiny_ppo():
    from funrl.algorithms import ppo

    env, env_params = funrl.envs.make("CartPole-v1")
    config = ppo.Config(total_timesteps=8, num_envs=2, num_steps=4, update_epochs=1, num_minibatches=2, hidden_sizes=(8,))
    return ppo, config, env, env_params


def test_hparams_negative_learning_rate_raises_in_driver_init():
    from funrl.algorithms.common import Driver

    ppo, config, env, env_params = _tiny_ppo()
    driver = Driver(ppo.make_algorithm, config, env, env_params, compile=False)
    keys = fr.split(fr.key(0), 2)
    with pytest.raises(ValueError, match=r"hparams\['learning_rate'\].*-0\.1"):
        driver.init(keys, {"learning_rate": torch.tensor([1e-3, -0.1])})
    with pytest.raises(ValueError, match=r"hparams\['gamma'\]"):
        driver.init(keys, {"gamma": [0.9, 1.5]})
    with pytest.raises(ValueError, match=r"hparams\['learning_rate'\]"):
        driver.init(keys, {"learning_rate": [0.0, 1e-3]})


def test_hparams_negative_learning_rate_raises_in_train():
    ppo, config, env, env_params = _tiny_ppo()
    train = ppo.make_train(config, env, env_params)
    with pytest.raises(ValueError, match=r"hparams\['learning_rate'\]"):
        train(fr.key(0), {"learning_rate": -1e-3})


def test_hparams_checked_in_runner_run(tmp_path):
    from funrl import runner

    with pytest.raises(ValueError, match=r"hparams\['learning_rate'\]"):
        runner.run("ppo", "CartPole-v1", seeds=2, total_steps=8, out=str(tmp_path / "r"), compile=False,
                   progress=False, plot=False, hparams={"learning_rate": [1e-3, -1e-3]},
                   num_envs=2, num_steps=4, update_epochs=1, num_minibatches=2, hidden_sizes=(8,))
    assert not (tmp_path / "r").exists()


# 7. hidden_sizes must be a tuple of positive ints in every Config
@pytest.mark.parametrize("algo", ["ppo", "a2c", "reinforce", "dqn", "ddpg", "td3", "sac"])
@pytest.mark.parametrize("bad", [(0,), (64, -1), 64, (8.0,), (True,)])
def test_config_hidden_sizes_must_be_positive_ints(algo, bad):
    import importlib

    module = importlib.import_module(f"funrl.algorithms.{algo}")
    with pytest.raises(ValueError, match="hidden_sizes"):
        module.Config(hidden_sizes=bad)
    assert module.Config(hidden_sizes=(8, 8)).hidden_sizes == (8, 8)


# 8. env param overrides out of range
@pytest.mark.parametrize(
    "env_id, override",
    [
        ("CartPole-v1", {"length": -1}),
        ("CartPole-v1", {"max_episode_steps": 0}),
        ("CartPole-v1", {"masspole": torch.tensor([0.1, 0.0])}),  # one value per env: every value is checked
        ("Pendulum-v1", {"dt": 0.0}),
        ("MountainCar-v0", {"force": -0.001}),
        ("MountainCarContinuous-v0", {"power": 0}),
        ("Acrobot-v1", {"torque_noise_max": -0.1}),
    ],
)
def test_env_make_rejects_out_of_range_params(env_id, override):
    (name,) = override
    with pytest.raises(ValueError, match=name):
        funrl.envs.make(env_id, **override)


def test_env_make_accepts_in_range_params():
    _, params = funrl.envs.make("CartPole-v1", length=torch.linspace(0.25, 1.0, 3), max_episode_steps=10)
    assert params.length.shape == (3,)


# 9. total_timesteps smaller than one update's env steps
@pytest.mark.parametrize(
    "algo, kwargs, per_update",
    [
        ("ppo", {"total_timesteps": 100}, "num_envs \\(4\\) \\* num_steps \\(128\\) = 512"),
        ("a2c", {"total_timesteps": 39}, "num_envs \\(8\\) \\* num_steps \\(5\\) = 40"),
        ("reinforce", {"total_timesteps": 100}, "= 1024"),
        ("tabular", {"total_timesteps": 100}, "= 1000"),
        ("dqn", {"total_timesteps": 9}, "num_envs \\(1\\) \\* train_frequency \\(10\\) = 10"),
        ("ddpg", {"total_timesteps": 3, "num_envs": 4}, "= 4"),
        ("td3", {"total_timesteps": 3, "num_envs": 4}, "= 4"),
        ("sac", {"total_timesteps": 3, "num_envs": 4}, "= 4"),
    ],
)
def test_total_timesteps_below_one_update_raises(algo, kwargs, per_update):
    import importlib

    module = importlib.import_module(f"funrl.algorithms.{algo}")
    with pytest.raises(ValueError, match=f"total_timesteps.*{per_update}.*got {kwargs['total_timesteps']}"):
        module.Config(**kwargs)


def test_total_timesteps_of_exactly_one_update_is_fine():
    from funrl.algorithms import ppo

    assert ppo.Config(total_timesteps=512).num_updates == 1


# 10. replay batch larger than the buffer
@pytest.mark.parametrize("algo", ["dqn", "ddpg", "td3", "sac"])
def test_batch_size_above_buffer_size_raises(algo):
    import importlib

    module = importlib.import_module(f"funrl.algorithms.{algo}")
    with pytest.raises(ValueError, match=r"buffer_size \(16\).*batch_size=64"):
        module.Config(batch_size=64, buffer_size=16)
    module.Config(batch_size=16, buffer_size=16)


# 11. a config.json with a missing key
def _write_config_json(directory, **drop):
    import json

    directory.mkdir(parents=True, exist_ok=True)
    cfg = {"algo": "ppo", "env": "CartPole-v1", "seeds": 1, "seed": 0, "config": {}}
    for k in drop:
        del cfg[k]
    (directory / "config.json").write_text(json.dumps(cfg))
    return directory


def test_resume_config_json_missing_key_names_file_and_key(tmp_path):
    from funrl import runner

    run_dir = _write_config_json(tmp_path / "run", algo=None)
    with pytest.raises(ValueError, match=r"config\.json: missing key\(s\) 'algo'"):
        runner.run(resume=str(run_dir), progress=False, plot=False)


def test_evaluate_run_config_json_missing_key(tmp_path):
    from funrl import evaluation

    run_dir = _write_config_json(tmp_path / "run", seeds=None)
    with pytest.raises(ValueError, match=r"config\.json: missing key\(s\) 'seeds'"):
        evaluation.evaluate_run(str(run_dir))


def test_warm_start_config_json_missing_key(tmp_path):
    from funrl import transfer

    run_dir = _write_config_json(tmp_path / "run", env=None)
    with pytest.raises(ValueError, match=r"config\.json: missing key\(s\) 'env'"):
        transfer.load_params(str(run_dir))
