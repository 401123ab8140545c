"""The LM algorithms (sft, grpo, rloo, ppo_lm): purity, vmap == loop, the field's sanity checks, a probe task."""

import json
import os

import pytest
import torch

import funrl
from funrl import random as jr
from funrl import tree
from funrl.algorithms import get, grpo, lm_common, ppo_lm, rloo, sft
from funrl.algorithms.common import Driver, vmap_lift
from funrl.lm import tasks
from helpers import assert_match

TINY = dict(d_model=16, n_heads=2, n_layers=1, num_prompts=2, group_size=4, pretrain_steps=4,
            pretrain_steps_per_update=2, total_timesteps=8 * 3)
ALGOS = {"grpo": grpo, "rloo": rloo, "ppo_lm": ppo_lm}


@pytest.fixture(scope="module")
def walks():
    return tasks.make("random-walks")


def _probe_task(good: int = 2) -> tasks.Task:
    """One prompt token, one completion token; reward 1 for token ``good``, else 0. Optimal policy known."""
    V = 4

    def prompts(key, n):
        return torch.zeros((n, 1), dtype=torch.int64) + 0 * key[0], torch.ones((n, 1), dtype=torch.bool)

    def demonstrations(key, n):
        p, m = prompts(key, n)
        # uniform over the vocabulary: pretraining teaches nothing about the reward
        c = jr.randint(key, (n, 1), 0, V)
        return p, m, c, torch.ones_like(m)

    def reward(prompt, prompt_mask, completion, completion_mask):
        return ((completion[0] == good) & completion_mask[0]).to(torch.float32)

    return tasks.Task("probe", tuple("abcd"), 1, 1, pad_id=3, eos_id=1, prompts=prompts, reward=reward,
                      demonstrations=demonstrations)


@pytest.mark.parametrize("name", ["grpo", "rloo", "ppo_lm"])
def test_probe_task_is_learned_in_a_few_updates(name):
    module = ALGOS[name]
    cfg = module.Config(d_model=16, n_heads=2, n_layers=1, num_prompts=4, group_size=8, pretrain_steps=0,
                        total_timesteps=32 * 30, learning_rate=1e-2, beta=0.0)
    _, metrics = module.make_train(cfg, _probe_task())(jr.key(0))
    r = metrics["episode_return"]
    assert r[:3].mean() < 0.5, r  # starts near 1/4 (uniform over 4 tokens)
    assert r[-5:].mean() > 0.95, r


def _first_rl_update_state(module, task, **overrides):
    cfg = module.Config(**{**TINY, "pretrain_steps": 0, **overrides})
    parts = lm_common.make_parts(cfg, task, module.HYPERPARAMS,
                                 extra_rl_params=ppo_lm._value_head(cfg) if module is ppo_lm else None)
    state = parts.init(jr.key(1), None)
    return cfg, parts, state


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_ratio_is_exactly_one_and_kl_exactly_zero_before_the_first_step(walks, lora_rank):
    """Old log-probs come from the loss's own scoring pass, and the reference equals the policy at the start."""
    cfg, parts, state = _first_rl_update_state(grpo, walks, lora_rank=lora_rank)
    state, batch = parts.generate(state)
    _, logp = lm_common.policy_logits(parts, parts.policy_params(state), batch, cfg.temperature)
    assert torch.equal(logp, batch.old_logp)  # ratio exp(0) = 1 exactly
    assert torch.equal(batch.ref_logp, batch.old_logp)  # every KL estimator is exactly 0
    for name, module in ALGOS.items():
        algo = module.make_algorithm(module.Config(**{**TINY, "pretrain_steps": 0, "lora_rank": lora_rank}), walks,
                                     lift=vmap_lift)
        states = torch.func.vmap(lambda k: algo.init(k, None))(jr.split(jr.key(2), 2))
        _, metrics = algo.update(states)
        assert torch.equal(metrics["kl"], torch.zeros(2)), name
        assert torch.equal(metrics["clip_frac"], torch.zeros(2)), name


def test_learning_rate_zero_leaves_params_and_kl_unchanged(walks):
    cfg = grpo.Config(**{**TINY, "pretrain_steps": 0})
    train = grpo.make_train(cfg, walks)
    state0 = lm_common.make_parts(cfg, walks, grpo.HYPERPARAMS).init(jr.key(3), None)
    state, metrics = train(jr.key(3), {"learning_rate": 0.0, "beta": 0.02})
    assert_match(state.params, state0.params)
    assert torch.equal(metrics["kl"], torch.zeros(3)) and torch.equal(metrics["clip_frac"], torch.zeros(3))


@pytest.mark.exactness  # the reproducibility contract: CI reruns it on torch's baseline kernels
@pytest.mark.parametrize("name", ["sft", "grpo", "rloo", "ppo_lm"])
def test_vmap_of_train_equals_each_seed_alone(walks, name):
    module = get(name)
    kw = {**TINY, "total_timesteps": 0} if name == "sft" else TINY
    train = module.make_train(module.Config(**kw), walks)
    keys = jr.split(jr.key(4), 3)
    states, metrics = torch.func.vmap(train)(keys)
    for i in (0, 2):
        state_i, metrics_i = train(keys[i])
        assert_match(tree.map(lambda x: x[i], (states, metrics)), (state_i, metrics_i))


def test_same_key_twice_identical_runs_and_driver_equals_vmap_train(walks):
    cfg = grpo.Config(**TINY)
    train = grpo.make_train(cfg, walks)
    a = train(jr.key(5))
    b = train(jr.key(5))
    assert_match(a, b)
    keys = jr.split(jr.key(6), 2)
    driver = Driver(grpo.make_algorithm, cfg, walks, None, compile=False)
    state, metrics = driver.run(driver.init(keys))
    v_state, v_metrics = torch.func.vmap(train)(keys)
    assert_match((state, metrics), (v_state, v_metrics))  # metrics: both [seeds, updates]


def test_pretraining_then_rl_phases_and_reference(walks):
    cfg = grpo.Config(**TINY)
    state, metrics = grpo.make_train(cfg, walks)(jr.key(7))
    assert metrics["phase"].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    assert (metrics["sft_loss"][:2] > 0).all() and (metrics["sft_loss"][2:] == 0).all()
    assert (metrics["episodes"] == 8).all()
    # the reference is the params at the end of pretraining: after RL the policy moved away from it
    assert not torch.equal(state.params["embed_tokens"]["weight"], state.ref_params["embed_tokens"]["weight"])
    pre_state, _ = grpo.make_train(grpo.Config(**{**TINY, "total_timesteps": 0}), walks)(jr.key(7))
    assert_match(state.ref_params, pre_state.params)


def test_lora_trains_only_the_adapters_and_keeps_no_reference_copy():
    kw = dict(d_model=16, n_heads=2, n_layers=1, num_prompts=4, group_size=8, pretrain_steps=4,
              pretrain_steps_per_update=2, learning_rate=3e-2, lora_rank=2,
              # the tiny model's tied head (init std 0.02) must move for the output to change
              lora_targets=r"(v_proj|up_proj|embed_tokens)\.weight$")
    probe = _probe_task()
    state, metrics = grpo.make_train(grpo.Config(**kw, total_timesteps=32 * 30), probe)(jr.key(8))
    pre_state, _ = grpo.make_train(grpo.Config(**kw, total_timesteps=0), probe)(jr.key(8))
    assert state.ref_params == {}
    assert_match(state.params, pre_state.params)  # the base is frozen in RL (and is the reference)
    for moved, fresh in zip(tree.leaves(state.adapters), tree.leaves(pre_state.adapters)):
        assert not torch.equal(moved, fresh)
    assert metrics["episode_return"][-5:].mean() > 0.95  # learned through the adapters alone
    assert metrics["kl"][-1] > 0.1  # and moved away from the reference (the base)
    n_base = sum(x.numel() for x in tree.leaves(state.params))
    n_adapters = sum(x.numel() for x in tree.leaves(state.adapters))
    assert 0 < n_adapters < 0.25 * n_base


def test_ppo_lm_targets_by_hand(walks):
    """GAE over completion tokens with the KL in the reward, checked against a plain Python loop."""
    cfg, parts, state = _first_rl_update_state(ppo_lm, walks, whiten_advantages=False)
    state, batch = parts.generate(state)
    beta, gamma, lam = 0.05, cfg.gamma, cfg.gae_lambda
    feats = lm_common.completion_logits(lambda p, t, m: parts.policy_model.apply(p, t, m, hidden=True),
                                        parts.policy_params(state), batch.prompts, batch.prompt_mask,
                                        batch.tokens, batch.mask)
    values = (feats @ state.value_head["weight"][0] + state.value_head["bias"][0]).detach()
    algo_adv = _ppo_targets(cfg, walks, state, batch)
    for b in range(batch.tokens.shape[0]):
        n = int(batch.mask[b].sum())
        r = [-beta * (batch.old_logp[b, t] - batch.ref_logp[b, t]).item() for t in range(n)]
        r[n - 1] += batch.rewards[b].item()
        adv, next_adv, next_v = [0.0] * n, 0.0, 0.0
        for t in reversed(range(n)):
            delta = r[t] + gamma * next_v - values[b, t].item()
            next_adv = delta + gamma * lam * next_adv
            adv[t], next_v = next_adv, values[b, t].item()
        assert torch.allclose(algo_adv[b, :n].double(), torch.tensor(adv, dtype=torch.float64), atol=1e-5)
        assert (algo_adv[b, n:] == 0).all()


def _ppo_targets(cfg, task, state, batch):
    """Advantages as ppo_lm computes them (through its update's internals, recomputed with the public pieces)."""
    from funrl.losses import kl_penalized_rewards, truncated_generalized_advantage_estimation

    parts = lm_common.make_parts(cfg, task, ppo_lm.HYPERPARAMS, extra_rl_params=ppo_lm._value_head(cfg))
    feats = lm_common.completion_logits(lambda p, t, m: parts.policy_model.apply(p, t, m, hidden=True),
                                        parts.policy_params(state), batch.prompts, batch.prompt_mask,
                                        batch.tokens, batch.mask)
    v = torch.where(batch.mask, feats @ state.value_head["weight"][0] + state.value_head["bias"][0], 0.0).detach()
    rewards = kl_penalized_rewards(batch.rewards, batch.old_logp, batch.ref_logp, batch.mask, 0.05, "k1")
    nxt = torch.cat([batch.mask[:, 1:], torch.zeros_like(batch.mask[:, :1])], 1).float() * cfg.gamma
    gae = torch.func.vmap(truncated_generalized_advantage_estimation, in_dims=(0, 0, None, 0))
    return gae(rewards, nxt, cfg.gae_lambda, torch.cat([v, torch.zeros_like(v[:, :1])], 1))


def test_grpo_update_matches_a_hand_written_step():
    """One GRPO step recomputed in plain torch (TRL's formulas) from the sampled batch: same new params."""
    sort = tasks.make("sort")  # partial credit: rewards differ within groups even for an untrained model
    cfg, parts, state = _first_rl_update_state(grpo, sort, beta=0.1)
    algo = grpo.make_algorithm(cfg, sort)
    new_state, _ = algo.update(state)
    _, batch = parts.generate(state)
    assert batch.rewards.view(2, 4).std(1).min() > 0, "fixture: every group needs a reward spread"
    params = tree.map(lambda x: x.detach().clone().requires_grad_(True), state.params)
    logits = lm_common.completion_logits(parts.model.apply, params, batch.prompts, batch.prompt_mask,
                                         batch.tokens, batch.mask)
    logp = torch.log_softmax(logits, -1).gather(-1, batch.tokens[..., None])[..., 0]
    r = batch.rewards.view(2, 4)
    adv = ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1, 1)
    ratio = torch.exp(logp - batch.old_logp)
    per_token = -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
    kl = torch.exp(batch.ref_logp - logp) - (batch.ref_logp - logp) - 1
    m = batch.mask.float()
    loss = ((per_token + 0.1 * kl) * m).sum() / m.sum()
    leaves = tree.leaves(params)
    grads = torch.autograd.grad(loss, leaves)
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    grads = [g * torch.clamp(cfg.max_grad_norm / (norm + 1e-6), max=1.0) for g in grads]
    opt = torch.optim.Adam([x.detach().clone() for x in leaves], lr=cfg.learning_rate)
    for p, g in zip(opt.param_groups[0]["params"], grads):
        p.grad = g
    opt.step()
    for expected, got in zip(opt.param_groups[0]["params"], tree.leaves(new_state.params)):
        assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(tree.leaves(new_state.params)[0], tree.leaves(state.params)[0])


@pytest.mark.parametrize(
    "module, kwargs, match",
    [
        (grpo, dict(group_size=1), "group_size"),
        (grpo, dict(total_timesteps=10), "total_timesteps"),
        (grpo, dict(aggregation="mean"), "aggregation"),
        (grpo, dict(advantage_normalize="std"), "advantage_normalize"),
        (grpo, dict(pretrain_steps=5), "pretrain_steps"),
        (grpo, dict(d_model=15), "d_model"),
        (grpo, dict(beta=-1.0), "beta"),
        (rloo, dict(lora_rank=-1), "lora_rank"),
        (ppo_lm, dict(gae_lambda=1.5), "gae_lambda"),
        (sft, dict(total_timesteps=64), "total_timesteps"),
    ],
)
def test_bad_config_names_the_field(module, kwargs, match):
    with pytest.raises(ValueError, match=match):
        module.Config(**kwargs)


def test_bad_task_and_unknown_task(walks):
    with pytest.raises(TypeError, match="task"):
        grpo.make_algorithm(grpo.Config(**TINY), "random-walks")
    with pytest.raises(ValueError, match="random-walks"):
        grpo.make_env("random-walk")


def test_cli_train_eval_resume(tmp_path, walks):
    """funrl train grpo --task ...: results folder, summary, eval of greedy completions, bit-identical resume."""
    from funrl.cli import main

    sets = [f"--set={k}={v}" for k, v in TINY.items()]
    out = str(tmp_path / "run")
    assert main(["train", "grpo", "--task", "random-walks", "--seeds", "2", "--out", out, "--no-progress",
                 "--no-plot", "--checkpoint-every", "2", *sets]) == 0
    summary = json.load(open(os.path.join(out, "summary.json")))
    assert summary["algo"] == "grpo" and summary["env"] == "random-walks" and summary["seeds"] == 2
    from funrl.evaluation import evaluate_run

    assert main(["plot", out]) == 0  # the reward curve, as for every algorithm
    assert os.path.getsize(os.path.join(out, "learning_curve.png")) > 1000
    table = evaluate_run(out, episodes=6)
    assert table["returns"].shape == (2, 6) and table["update"] == 5
    assert ((table["returns"] >= 0) & (table["returns"] <= 1)).all()
    # resume from the checkpoint at update 4: same final state
    from funrl import checkpoint as ckpt

    manager = ckpt.CheckpointManager(os.path.join(out, "checkpoints"), keep=10)
    _, final, _ = manager.load()
    os.remove(os.path.join(out, "summary.json"))
    for step in manager.steps():
        if step > 4:
            os.remove(manager.path(step))
    assert main(["train", "--resume", out, "--no-progress", "--no-plot"]) == 0
    _, resumed, _ = ckpt.CheckpointManager(os.path.join(out, "checkpoints")).load()
    assert_match(resumed["state"], final["state"])


def _task_with_reward(reward_value):
    base = tasks.make("sort")
    return base._replace(name="bad", reward=lambda p, pm, c, cm: base.reward(p, pm, c, cm) * 0 + reward_value)


def test_reward_outside_the_declared_range_stops_the_run_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(tasks.TASKS, "bad", lambda: _task_with_reward(1.5))
    with pytest.raises(ValueError, match=r"task.reward: the 'bad' task declares rewards in \[0.0, 1.0\].*update\(s\) \[1, 2\]"):
        funrl.run("grpo", env="bad", seeds=2, out=str(tmp_path / "r"), progress=False, plot=False,
                  chunk_size=2, **TINY)
    # within range: runs
    monkeypatch.setitem(tasks.TASKS, "bad", lambda: _task_with_reward(0.5))
    result = funrl.run("grpo", env="bad", seeds=2, out=str(tmp_path / "ok"), progress=False, plot=False, **TINY)
    assert result["summary"]["iqm"] == pytest.approx(0.5)


def test_reward_of_the_wrong_shape_names_the_reward():
    base = tasks.make("sort")
    task = base._replace(reward=lambda p, pm, c, cm: torch.stack([base.reward(p, pm, c, cm)] * 2))
    with pytest.raises(ValueError, match="task.reward"):
        grpo.make_train(grpo.Config(**TINY), task)(jr.key(0))
