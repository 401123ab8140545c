"""funrl/algorithms/networks.py: the default networks, a user's own network in every algorithm (Config.network,
funrl train --network), torch's initialisation re-drawn from keys, and the FrameStack wrapper it is used with."""

import json
import math
import os
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import funrl
from funrl import nn, tree
from funrl import random as jr
from funrl.algorithms import a2c, ddpg, dqn, networks, ppo, reinforce, sac, td3
from funrl.cli import main as cli_main
from funrl.envs.wrappers import FrameStack

HERE = __name__  # the factories below are named by import path, as a user's would be


# ------------------------------------------------------------------ factories a user would write
def wide_mlp(role, in_shape, out_dim):
    """A 32-wide relu MLP for every role (funrl's default is 64-64 tanh)."""
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(math.prod(in_shape), 32), torch.nn.ReLU(), torch.nn.Linear(32, out_dim)
    )


def layer_norm_net(role, in_shape, out_dim):
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(math.prod(in_shape), 16), torch.nn.LayerNorm(16), torch.nn.Tanh(),
        torch.nn.Linear(16, out_dim),
    )


class FrameTransformer(torch.nn.Module):
    """Each stacked frame is a token: embed, one encoder layer, mean-pool, head."""

    def __init__(self, in_shape, out_dim, d=8):
        super().__init__()
        self.embed = torch.nn.Linear(in_shape[-1], d)
        layer = torch.nn.TransformerEncoderLayer(d, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = torch.nn.Linear(d, out_dim)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(-2))


def frame_transformer(role, in_shape, out_dim):
    return FrameTransformer(in_shape, out_dim)


def actor_only(role, in_shape, out_dim):
    """A custom actor, funrl's default critic (None)."""
    return wide_mlp(role, in_shape, out_dim) if role == "actor" else None


def wrong_width(role, in_shape, out_dim):
    return torch.nn.Linear(math.prod(in_shape), out_dim + 1)


def funrl_model(role, in_shape, out_dim):
    return nn.mlp([math.prod(in_shape), 12, out_dim], activation="relu")


class Scale(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.s = torch.nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.s


TINY_PPO = dict(total_timesteps=16, num_envs=2, num_steps=4, update_epochs=1, num_minibatches=2)


# ------------------------------------------------------------------ the defaults are CleanRL's networks
def test_default_networks_equal_the_hand_built_cleanrl_mlps():
    key = jr.key(5)
    obs = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    actor, critic = networks.actor_critic((4,), 2, (16, 16), "tanh")
    want = nn.mlp([4, 16, 16, 2], activation="tanh", w_init=nn.orthogonal(math.sqrt(2)), b_init=nn.zeros,
                  final_w_init=nn.orthogonal(0.01))
    assert tree.equal(actor.init(key), want.init(key))
    assert torch.equal(actor.apply(want.init(key), obs), want.apply(want.init(key), obs))
    want_c = nn.mlp([4, 16, 16, 1], activation="tanh", w_init=nn.orthogonal(math.sqrt(2)), b_init=nn.zeros,
                    final_w_init=nn.orthogonal(1.0))
    assert tree.equal(critic.init(key), want_c.init(key))
    q = networks.discrete_q_network((4,), 2, (8,), "relu")
    want_q = nn.mlp([4, 8, 2], activation="relu")
    assert tree.equal(q.init(key), want_q.init(key))
    assert torch.equal(q.apply(want_q.init(key), obs.reshape(3, 2, 2)), want_q.apply(want_q.init(key), obs))


def test_continuous_defaults_squash_into_the_box(pendulum):
    env, params = pendulum
    spec = ddpg.box_spec(env, params)
    assert spec.obs_shape == (3,)
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(5, 3, generator=g) * 10
    actor = networks.deterministic_actor(spec, (8,))
    p = actor.init(jr.key(0))
    mlp = nn.mlp([3, 8, 1], activation="relu")
    assert tree.equal(p, mlp.init(jr.key(0)))
    torch.testing.assert_close(actor.apply(p, obs), torch.tanh(mlp.apply(p, obs)) * 2.0, rtol=0, atol=1e-6)
    critic = networks.continuous_q_network(spec, (8,))
    qp = critic.init(jr.key(1))
    a = torch.rand(5, 1, generator=g) * 4 - 2
    torch.testing.assert_close(critic.apply(qp, obs, a), nn.mlp([4, 8, 1], activation="relu").apply(
        qp, torch.cat([obs, a], -1)).squeeze(-1))
    init, dist, sample = networks.squashed_gaussian_actor(spec, (8,))
    action, logp = sample(init(jr.key(2)), jr.key(3), obs)
    assert action.shape == (5, 1) and logp.shape == (5,) and bool((action.abs() <= 2.0).all())  # tanh may round to 1
    # the names ddpg and sac exported before networks.py still work
    assert ddpg.q_network is networks.continuous_q_network and sac.squashed_gaussian_policy is networks.squashed_gaussian_actor


# ------------------------------------------------------------------ torch's init, from keys
def _torch_draws(make, name, n):
    """``n`` draws of parameter ``name`` by torch's own reset_parameters."""
    torch.manual_seed(0)
    return torch.stack([dict(make().named_parameters())[name].detach().clone() for _ in range(n)])


@pytest.mark.parametrize("make, bound", [
    (lambda: torch.nn.Linear(37, 50), 1 / math.sqrt(37)),
    (lambda: torch.nn.Conv2d(3, 8, 3), 1 / math.sqrt(27)),
    (lambda: torch.nn.ConvTranspose1d(4, 6, 5), 1 / math.sqrt(30)),
])
def test_linear_and_conv_init_have_torchs_bounds_and_std(make, bound):
    n = 640  # >= 5000 draws of every parameter: the std within 1% (one standard error)
    ours = torch.func.vmap(networks.torch_init(make()))(jr.split(jr.key(0), n))
    for name in ("weight", "bias"):
        mine, theirs = ours[name], _torch_draws(make, name, n)
        assert mine.shape == theirs.shape
        assert float(mine.abs().max()) <= bound and float(mine.abs().max()) > 0.97 * bound
        # U(-b, b) has std b/sqrt(3); a fan-in off by the out/in ratio would miss by >= 10%
        for draws in (mine, theirs):
            assert float(draws.std()) == pytest.approx(bound / math.sqrt(3), rel=0.04)


def test_norm_embedding_and_attention_init_match_torch():
    module = torch.nn.ModuleDict({
        "ln": torch.nn.LayerNorm(6), "bn": torch.nn.BatchNorm1d(6), "emb": torch.nn.Embedding(50, 40, padding_idx=3),
        "mha": torch.nn.MultiheadAttention(16, 2), "gru": torch.nn.GRU(5, 9),
    })
    n = 32
    ours = torch.func.vmap(networks.torch_init(module))(jr.split(jr.key(1), n))
    # norm gains one, biases zero (a zero gain would kill every gradient through the layer)
    for name in ("ln.weight", "bn.weight"):
        assert torch.equal(ours[name], torch.ones(n, 6))
    for name in ("ln.bias", "bn.bias", "mha.in_proj_bias", "mha.out_proj.bias"):
        assert not bool(ours[name].any()), name
    assert torch.equal(ours["bn.running_var"], torch.ones(n, 6)) and not bool(ours["bn.running_mean"].any())
    theirs = module.state_dict()
    for name in ("ln.weight", "ln.bias", "mha.in_proj_bias", "mha.out_proj.bias", "bn.running_var"):
        assert torch.equal(ours[name][0], theirs[name]), name
    emb = ours["emb.weight"]
    assert not bool(emb[:, 3].any()) and float(emb.std()) == pytest.approx(1.0, rel=0.03)
    # xavier-uniform in_proj: bound sqrt(6 / (16 + 48)); out_proj keeps Linear's 1/sqrt(16)
    b_in = math.sqrt(6 / 64)
    assert float(ours["mha.in_proj_weight"].std()) == pytest.approx(b_in / math.sqrt(3), rel=0.04)
    assert float(ours["mha.in_proj_weight"].abs().max()) <= b_in
    assert float(ours["mha.out_proj.weight"].std()) == pytest.approx(0.25 / math.sqrt(3), rel=0.04)
    assert float(ours["gru.weight_hh_l0"].abs().max()) <= 1 / 3
    assert float(ours["gru.weight_hh_l0"].std()) == pytest.approx(1 / 3 / math.sqrt(3), rel=0.04)
    assert list(ours) == list(nn.from_module(module)[0])


def test_init_is_per_key_under_vmap_and_repeatable():
    init = networks.torch_init(FrameTransformer((4, 4), 2))
    k = jr.key(7)
    same = torch.func.vmap(init)(torch.stack([k, k, jr.key(8)]))
    for name, v in same.items():
        assert torch.equal(v[0], v[1]), name
        if "norm" not in name and "bias" not in name:
            assert not torch.equal(v[0], v[2]), name
    assert tree.equal(init(k), init(k))


def test_unknown_module_type_names_the_parameter_and_an_explicit_init_works():
    module = torch.nn.Sequential(torch.nn.Linear(3, 3), Scale())
    with pytest.raises(ValueError, match=r"'1\.s' \(Scale\).*init="):
        networks.torch_init(module)

    def init(key):
        k1, k2 = jr.split(key)
        return {"0.weight": nn.orthogonal()(k1, (3, 3)), "0.bias": nn.zeros(k2, (3,)), "1.s": nn.ones(k2, (3,))}

    model = networks.module_model(module, init=init)
    p = model.init(jr.key(0))
    x = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.apply(p, x), x @ p["0.weight"].T)


# ------------------------------------------------------------------ a network as a choice, in every algorithm
def test_config_network_accepts_a_path_or_an_importable_function_and_refuses_junk():
    assert ppo.Config(network=wide_mlp).network == f"{HERE}:wide_mlp"
    assert networks.resolve_network(f"{HERE}:wide_mlp") is wide_mlp
    local = ppo.Config(network=lambda role, s, n: None).network
    assert callable(local)  # kept as is: make_train can use it, funrl.run cannot record it
    with pytest.raises(ValueError, match="config.network: expected"):
        ppo.Config(network="no_colon")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        networks.resolve_network("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="has no 'nothing'"):
        networks.resolve_network(f"{HERE}:nothing")
    with pytest.raises(ValueError, match="cannot be rebuilt from config.json"):
        funrl.run("ppo", seeds=1, compile=False, progress=False, network=lambda role, s, n: None, **TINY_PPO)


def test_a_factory_in_the_current_directory_is_found(tmp_path, monkeypatch):
    (tmp_path / "netmod_in_cwd.py").write_text("def f(role, in_shape, out_dim):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    assert networks.resolve_network("netmod_in_cwd:f").__module__ == "netmod_in_cwd"
    assert sys.path == before  # the path is restored
    with pytest.raises(ValueError, match="cannot import module 'netmod_missing'"):
        networks.resolve_network("netmod_missing:f")


def test_output_shape_is_checked_against_the_env(cartpole):
    env, params = cartpole
    with pytest.raises(ValueError, match=r"actor network of .*wrong_width must map \[N, 4\] to \[N, 2\]; .* \(2, 3\)"):
        ppo.make_train(ppo.Config(network=wrong_width, **TINY_PPO), env, params)
    with pytest.raises(ValueError, match="returned a str"):
        ppo.make_train(ppo.Config(network=lambda r, s, n: "mlp", **TINY_PPO), env, params)


@pytest.mark.parametrize("module, config, factory, shapes", [
    (ppo, TINY_PPO, wide_mlp, {("actor", "1.weight"): (32, 4), ("actor", "3.weight"): (2, 32),
                               ("critic", "3.weight"): (1, 32)}),
    (a2c, dict(total_timesteps=16, num_envs=2, num_steps=4), actor_only,
     {("actor", "1.weight"): (32, 4), ("critic", "linear_0", "weight"): (64, 4)}),  # funrl's default critic
    (reinforce, dict(total_timesteps=16, num_envs=2, num_steps=4), funrl_model, {("actor", "linear_0", "weight"): (12, 4)}),
    (dqn, dict(total_timesteps=16, num_envs=2, learning_starts=4, train_frequency=2, target_network_frequency=4,
               batch_size=4, buffer_size=16), layer_norm_net, {("2.weight",): (16,), ("4.weight",): (2, 16)}),
])
def test_discrete_algorithms_train_with_a_custom_network(cartpole, module, config, factory, shapes):
    env, params = cartpole
    train = module.make_train(module.Config(network=factory, **config), env, params)
    states, metrics = torch.func.vmap(train)(jr.split(jr.key(0), 2))
    for path, shape in shapes.items():
        got = states.params
        for part in path:
            got = got[part]
        assert tuple(got.shape) == (2, *shape), path
    assert all(bool(torch.isfinite(v).all()) for v in metrics.values() if v.is_floating_point())
    act = module.evaluation_policy(module.Config(network=factory, **config), env, params)
    one = tree.map(lambda x: x[0], states)
    a = act(one, jr.key(1), torch.zeros(3, 4))
    assert a.shape == (3,) and a.dtype == torch.int64


def test_layer_norm_gains_start_at_one_in_every_seed(cartpole):
    env, params = cartpole
    alg = dqn.make_algorithm(dqn.Config(network=layer_norm_net), env, params)
    states = torch.func.vmap(alg.init)(jr.split(jr.key(0), 3))
    assert torch.equal(states.params["2.weight"], torch.ones(3, 16))
    assert not bool(states.params["2.bias"].any())
    w = states.params["1.weight"]
    assert not torch.equal(w[0], w[1]) and float(w.abs().max()) <= 1 / 2  # fan-in 4


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # torch has no vmap rule for CPU flash attention
def test_transformer_over_stacked_frames_trains_with_ppo(cartpole):
    env, params = cartpole
    stacked = FrameStack(env, 4)
    config = ppo.Config(network=frame_transformer, **TINY_PPO)
    train = ppo.make_train(config, stacked, params)
    states, metrics = torch.func.vmap(train)(jr.split(jr.key(0), 2))
    p = states.params["actor"]
    assert p["encoder.layers.0.self_attn.in_proj_weight"].shape == (2, 24, 8)
    assert states.params["critic"]["encoder.layers.0.norm1.weight"].shape == (2, 8)
    assert not torch.equal(p["embed.weight"][0], p["embed.weight"][1])
    assert bool(torch.isfinite(metrics["pg_loss"]).all())


@pytest.mark.parametrize("module, config", [
    (ddpg, dict(total_timesteps=8, learning_starts=4, batch_size=4, buffer_size=8)),
    (td3, dict(total_timesteps=8, learning_starts=4, batch_size=4, buffer_size=8)),
    (sac, dict(total_timesteps=8, learning_starts=4, batch_size=4, buffer_size=8)),
])
def test_continuous_algorithms_take_a_custom_actor_and_q_critic(pendulum, module, config):
    env, params = pendulum
    train = module.make_train(module.Config(network=wide_mlp, **config), env, params)
    state, metrics = train(jr.key(0))
    p = state.params
    out = 2 if module is sac else 1  # SAC's actor gives mean and log-std
    assert p["actor"]["1.weight"].shape == (32, 3) and p["actor"]["3.weight"].shape == (out, 32)
    critic = p["critic"]["q1"] if module is not ddpg else p["critic"]
    assert critic["1.weight"].shape == (32, 4)  # Q(s, a) sees [obs, action]
    act = module.evaluation_policy(module.Config(network=wide_mlp, **config), env, params)
    a = act(state, jr.key(1), torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))
    assert a.shape == (5, 1) and bool((a.abs() <= 2.0).all())


# ------------------------------------------------------------------ the command line: train, eval, export, resume
def test_cli_network_train_eval_export_and_resume(tmp_path, capsys):
    flags = ["train", "ppo", "--network", f"{HERE}:wide_mlp", "--seeds", "2", "--total-steps", "64",
             "--no-compile", "--checkpoint-every", "2", "--no-progress", "--no-plot",
             "--set", "num_envs=2", "--set", "num_steps=8", "--set", "num_minibatches=2", "--set", "update_epochs=1"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli_main([*flags, "--out", str(full)]) == 0
    assert json.loads((full / "config.json").read_text())["config"]["network"] == f"{HERE}:wide_mlp"
    # the same run interrupted after update 3 (a checkpoint at 2), then resumed from the command line
    os.environ["FUNRL_TEST_FAIL_RANK"] = "0:3"
    try:
        with pytest.raises(RuntimeError, match="testing hook"):
            funrl.run("ppo", seeds=2, total_steps=64, compile=False, progress=False, plot=False, checkpoint_every=2,
                      chunk_size=1, out=str(part), network=wide_mlp, num_envs=2, num_steps=8, num_minibatches=2,
                      update_epochs=1)
    finally:
        del os.environ["FUNRL_TEST_FAIL_RANK"]
    assert not (part / "summary.json").exists()
    assert cli_main(["train", "--resume", str(part), "--no-progress", "--no-plot"]) == 0
    from funrl import checkpoint as ckpt

    step_a, a, _ = ckpt.CheckpointManager(full / "checkpoints").load()
    step_b, b, _ = ckpt.CheckpointManager(part / "checkpoints").load()
    assert step_a == step_b == 4 and tree.equal(a["state"], b["state"])
    capsys.readouterr()
    assert cli_main(["eval", str(full), "--episodes", "1"]) == 0
    assert "seed" in capsys.readouterr().out
    assert cli_main(["export", str(full), "--format", "torchscript", "--out", str(tmp_path / "p.pt")]) == 0
    with pytest.warns(DeprecationWarning):  # torch >= 2.13 deprecates torch.jit; it still works
        policy = torch.jit.load(str(tmp_path / "p.pt"))
    obs = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    seed0 = tree.map(lambda x: x[0], a["state"])
    want = ppo.evaluation_policy(ppo.Config(network=wide_mlp), *funrl.envs.make("CartPole-v1"))(seed0, jr.key(0), obs)
    assert torch.equal(policy(obs), want)
    assert cli_main(["export", str(full), "--format", "state_dict", "--out", str(tmp_path / "s.pt")]) != 0
    assert "uses its own network" in capsys.readouterr().err


# ------------------------------------------------------------------ FrameStack against gymnasium
class _Replay(gym.Env):
    """A gymnasium env replaying a recorded stream (funrl's raw CartPole observations)."""

    def __init__(self, resets, steps):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.resets, self.steps = list(resets), list(steps)

    def reset(self, *, seed=None, options=None):
        return self.resets.pop(0), {}

    def step(self, action):
        return (*self.steps.pop(0), {})


@pytest.mark.parametrize("padding", ["reset", "zero"])
def test_frame_stack_matches_gymnasium_on_cartpole(cartpole, padding):
    env, params = cartpole
    w = FrameStack(env, 3, padding=padding)
    assert w.observation_space(params).shape == (3, 4)
    obs, state = w.reset(jr.key(0), params)
    raw_obs, raw_state = env.reset(jr.key(0), params)
    resets, records, ours = [raw_obs.numpy()], [], []
    for t in range(40):
        action = torch.tensor(t % 2 if t < 20 else 1)  # a few episodes end inside 40 steps
        k = jr.fold_in(jr.key(1), t)
        o, raw_state, r, te, tr, info = env.step(k, raw_state, action, params)
        records.append((info["final_obs"].numpy(), float(r), bool(te), bool(tr)))
        if bool(te | tr):
            resets.append(o.numpy())
        ours.append(w.step(k, state, action, params))
        state = ours[-1][1]
    assert sum(rec[2] or rec[3] for rec in records) >= 1
    g = gym.wrappers.FrameStackObservation(_Replay(resets, records), 3, padding_type=padding)
    g_obs, _ = g.reset()
    np.testing.assert_array_equal(obs.numpy(), g_obs)
    for o, _, _, te, tr, info in ours:
        g_final, _, g_te, g_tr, _ = g.step(0)
        np.testing.assert_array_equal(info["final_obs"].numpy(), g_final)
        if g_te or g_tr:
            g_final, _ = g.reset()
        np.testing.assert_array_equal(o.numpy(), g_final)


def test_frame_stack_vmaps_and_refuses_bad_arguments(cartpole):
    env, params = cartpole
    w = FrameStack(env, 2)
    obs, state = torch.func.vmap(w.reset, in_dims=(0, None))(jr.split(jr.key(0), 3), params)
    out = torch.func.vmap(w.step, in_dims=(0, 0, 0, None))(jr.split(jr.key(1), 3), state, torch.ones(3, dtype=torch.int64), params)
    assert out[0].shape == (3, 2, 4) and torch.equal(out[0][:, 0], obs[:, 1])
    with pytest.raises(ValueError, match="num_stack: expected an int >= 1, got 0"):
        FrameStack(env, 0)
    with pytest.raises(ValueError, match="padding: expected 'reset' or 'zero'"):
        FrameStack(env, 2, padding="same")
    with pytest.raises(TypeError, match="FrameStack needs a Box observation space"):
        FrameStack(funrl.envs.make("FrozenLake-v1")[0], 2)
