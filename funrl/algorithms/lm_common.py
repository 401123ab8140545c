"""What the language-model algorithms share: config fields, state, policy, sampling, pretraining.

``grpo.py``, ``rloo.py``, ``ppo_lm.py`` and ``sft.py`` train a small
transformer (:func:`funrl.nn.transformer`) on a task from
:mod:`funrl.lm.tasks`.  A run "from scratch" has two phases in one pure
``train(key)``:

1. **pretraining** (``pretrain_steps`` gradient steps, ``pretrain_steps_per_update``
   per update): supervised next-token cross-entropy on the task's
   demonstrations (every real token weighs the same);
2. **RL fine-tuning** (the rest): sample ``group_size`` completions for each of
   ``num_prompts`` prompts, score them with the task's reward, and take a
   gradient step on the algorithm's loss, with a KL penalty to the *reference*:
   the params at the end of pretraining.

Full fine-tuning keeps the reference as a copy (``ref_params``).  With
``lora_rank > 0`` RL trains LoRA adapters only (:func:`funrl.nn.lora.with_adapters`);
the base params are frozen and, with the adapters off, are the reference, so
no second copy exists (``ref_params`` is empty).

One "env step" of these algorithms is one completion sampled from the
policy: every update, in both phases, samples ``num_prompts * group_size``
of them (in pretraining only to report the reward).
The metrics of both phases have the same names: ``episode_return`` is the
mean reward of completions sampled from the current policy (so the summary,
plots and ``funrl eval`` read it as for every other algorithm),
``episode_length`` the mean completion length in tokens, ``kl`` the mean
per-token k3 estimate of KL(policy || reference) in nats, ``entropy`` the mean
per-token entropy, ``clip_frac`` the fraction of clipped tokens,
``zero_std_frac`` the fraction of groups whose rewards are all equal (no
learning signal), ``sft_loss`` the pretraining loss and ``phase`` 0 in
pretraining, 1 in RL.  What a phase does not compute is reported as 0.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import torch

from funrl import nn, optim, tree
from funrl import random as jr
from funrl.algorithms.common import Algorithm, check_config, hyperparams_from_config, lift_pieces
from funrl.lm import tasks as lm_tasks
from funrl.lm.sampling import completion_logits, group, sample, score
from funrl.losses.sequence import (
    kl_divergence_estimate,
    masked_aggregate,
    masked_entropy,
    masked_mean,
    sequence_log_probs,
    token_clip_fraction,
    token_clipped_surrogate_loss,
)

__all__ = [
    "LMConfig",
    "PolicyConfig",
    "AGGREGATIONS",
    "LMState",
    "Batch",
    "LMAlgorithmParts",
    "make_env",
    "make_parts",
    "METRIC_NAMES",
    "COMPILE",
    "evaluate",
    "check_metrics",
    "check_reward_shape",
    "token_stats",
    "policy_logits",
    "make_policy_update",
    "check_choices",
    "check_nonnegative",
    "lm_algorithm",
]

#: Whether ``funrl.run`` compiles these algorithms' pieces: no.  Measured (torch 2.13 CPU, 2 cores):
#: Inductor compiling GRPO's vmapped pieces (9 unrolled KV-cache decoding steps, two scoring passes
#: and a gradient of a 2-layer transformer) ran 10 minutes and then gcc crashed on the generated C++;
#: eager ``vmap`` over 8 seeds runs an update in about 0.5 s.  ``funrl.lm.sample`` alone compiles.
COMPILE = False

#: every LM algorithm reports these metrics in both phases
METRIC_NAMES = ("episode_return", "episode_length", "episodes", "kl", "entropy", "clip_frac",
                "zero_std_frac", "loss", "sft_loss", "phase", "reward_out_of_range")


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """Fields every LM algorithm has: model, pretraining, sampling, LoRA (defaults for random-walks)."""

    total_timesteps: int = 9_600  #: completions sampled in RL per seed (RL updates x num_prompts x group_size)
    num_prompts: int = 8  #: prompts per update
    group_size: int = 8  #: completions sampled per prompt (GRPO's G)
    pretrain_steps: int = 400  #: supervised gradient steps on the task's demonstrations before RL (0: none)
    pretrain_steps_per_update: int = 4  #: supervised steps per pretraining update (each update also samples once)
    pretrain_learning_rate: float = 1e-3  #: Adam step size of pretraining
    learning_rate: float = 3e-4  #: Adam step size of RL (batchable; 0 runs RL without moving the params)
    max_grad_norm: float = 1.0  #: global gradient-norm clip in both phases
    temperature: float = 1.0  #: sampling temperature (log-probs are scored at the same temperature)
    d_model: int = 64  #: transformer width
    n_heads: int = 4  #: attention heads
    n_layers: int = 2  #: transformer blocks
    lora_rank: int = 0  #: > 0: RL trains LoRA adapters of this rank only (reference = base, no copy)
    lora_alpha: float = 8.0  #: LoRA alpha (scale alpha / rank)
    lora_targets: str = r"(q_proj|v_proj|up_proj|down_proj)\.weight$"  #: regex over weight paths LoRA adapts

    def _check_lm(self):
        check_config(
            self,
            positive=("pretrain_learning_rate", "max_grad_norm", "temperature", "lora_alpha"),
            ints=("num_prompts", "d_model", "n_heads", "n_layers", "pretrain_steps_per_update"),
        )
        if self.pretrain_steps % self.pretrain_steps_per_update:
            raise ValueError(f"config.pretrain_steps: expected a multiple of pretrain_steps_per_update "
                             f"({self.pretrain_steps_per_update}), got {self.pretrain_steps}")
        # learning_rate 0 is allowed: the field's sanity check (ratio exactly 1, KL exactly 0 throughout)
        check_nonnegative(self, "learning_rate")
        for name in ("total_timesteps", "pretrain_steps", "lora_rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"config.{name}: expected an int >= 0, got {v!r}")
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 2:
            raise ValueError(f"config.group_size: expected an int >= 2 (advantages compare completions of one prompt), "
                             f"got {self.group_size!r}")
        if 0 < self.total_timesteps < self.batch_size:
            raise ValueError(f"config.total_timesteps: expected 0 or at least one update's completions "
                             f"(num_prompts * group_size = {self.batch_size}), got {self.total_timesteps}")
        if self.num_updates < 1:
            raise ValueError("config.total_timesteps / pretrain_steps: expected at least one update in all, got 0 and 0")
        if self.d_model % self.n_heads:
            raise ValueError(f"config.d_model: expected a multiple of n_heads ({self.n_heads}), got {self.d_model}")

    @property
    def batch_size(self) -> int:
        """Sequences per update: ``num_prompts * group_size``."""
        return self.num_prompts * self.group_size

    @property
    def rl_updates(self) -> int:
        return self.total_timesteps // self.batch_size

    @property
    def pretrain_updates(self) -> int:
        return self.pretrain_steps // self.pretrain_steps_per_update

    @property
    def num_updates(self) -> int:
        return self.pretrain_updates + self.rl_updates


def check_choices(config, **choices) -> None:
    """Raise unless each named str field is one of its choices."""
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise ValueError(f"config.{name}: expected one of {', '.join(allowed)}, got {getattr(config, name)!r}")


def check_nonnegative(config, *names) -> None:
    """Raise unless each named field is a number >= 0."""
    for name in names:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"config.{name}: expected a number >= 0, got {v!r}")


AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


@dataclasses.dataclass(frozen=True)
class PolicyConfig(LMConfig):
    """LMConfig plus the fields of a clipped token-level policy update (GRPO, RLOO, token-level PPO)."""

    beta: float = 0.02  #: KL-to-reference coefficient (batchable); where the KL goes is the algorithm's choice
    epsilon: float = 0.2  #: lower clip range of the importance ratio
    epsilon_high: float = 0.2  #: upper clip range (DAPO's clip-higher uses e.g. 0.28)
    update_epochs: int = 1  #: gradient steps per batch of completions (GRPO's mu)
    aggregation: str = "token_mean"  #: token_mean | sequence_mean | constant (Dr. GRPO); see losses.masked_aggregate

    def _check_policy(self):
        self._check_lm()
        check_choices(self, aggregation=AGGREGATIONS)
        check_nonnegative(self, "beta", "epsilon", "epsilon_high")
        if isinstance(self.update_epochs, bool) or not isinstance(self.update_epochs, int) or self.update_epochs < 1:
            raise ValueError(f"config.update_epochs: expected an int >= 1, got {self.update_epochs!r}")


class LMState(NamedTuple):
    """One seed's training state (a pytree)."""

    params: dict  #: the transformer's params (with LoRA: the base, frozen in RL and the reference)
    adapters: Any  #: LoRA adapters trained in RL ({} without LoRA)
    ref_params: dict  #: full fine-tuning: the reference model (params at the end of pretraining); {} with LoRA
    value_head: dict  #: ppo_lm's value head on the transformer's features ({} for the others)
    opt_state: Any  #: RL optimizer state
    pretrain_opt_state: Any  #: pretraining optimizer state
    key: torch.Tensor  #: (2,)
    update_step: torch.Tensor  #: int64 ()
    hparams: dict  #: name -> float tensor ()


class Batch(NamedTuple):
    """Completions sampled in one update (leaves ``[N, ...]``, ``N = num_prompts * group_size``, grouped by prompt)."""

    prompts: torch.Tensor  #: int64 [N, P]
    prompt_mask: torch.Tensor  #: bool [N, P]
    tokens: torch.Tensor  #: int64 [N, L]
    mask: torch.Tensor  #: bool [N, L]
    rewards: torch.Tensor  #: float32 [N] in the task's reward range
    old_logp: torch.Tensor  #: float32 [N, L] log-probs under the sampling policy (scored, detached)
    ref_logp: torch.Tensor  #: float32 [N, L] log-probs under the reference (detached)


def make_env(task_id: str, **kwargs):
    """``(task, None)``: the runner's ``make_env`` for LM algorithms (``--task`` / ``--env`` names a task)."""
    return lm_tasks.make(task_id, **kwargs), None


class LMAlgorithmParts(NamedTuple):
    """The shared pieces an LM algorithm file composes (all per seed, pure)."""

    model: Any  #: the base funrl Transformer
    policy_model: Any  #: what is sampled from (the base, or the base with adapters)
    init: Callable  #: init(key, hparams=None) -> LMState
    policy_params: Callable  #: state -> params of policy_model
    reference_params: Callable  #: state -> params of model (the reference)
    rl_params: Callable  #: state -> what RL differentiates: {"policy": params or adapters[, "value_head"]}
    policy_from: Callable  #: (state, rl_params) -> params of policy_model
    with_rl_params: Callable  #: (state, new) -> state
    generate: Callable  #: (state) -> (state, Batch)
    pretrain: Callable  #: (state) -> (state, metrics)
    rl_step: Callable  #: (state, loss_fn) -> (state, aux): grad + clip + Adam on what RL trains
    metrics: Callable  #: (batch, **rl_values) -> metrics dict with METRIC_NAMES


def _adam(learning_rate, config: LMConfig):
    """Adam with its step size in the state (per-seed learning rates) after a global-norm clip."""
    return optim.chain(
        optim.clip_by_global_norm(config.max_grad_norm),
        optim.inject_hyperparams(optim.adam)(learning_rate=learning_rate),
    )


def make_parts(config: LMConfig, task, hyperparams: tuple[str, ...], extra_rl_params: Callable | None = None) -> LMAlgorithmParts:
    """Build the shared pieces for ``task`` (a :class:`funrl.lm.tasks.Task`).

    ``extra_rl_params(key, params) -> dict`` (ppo_lm's value head) adds params
    that RL trains next to the policy's.
    """
    if not isinstance(task, lm_tasks.Task):
        raise TypeError(f"task: expected a funrl.lm.tasks.Task (funrl.lm.tasks.make(name)), got {type(task).__name__}")
    P, L = task.prompt_len, task.max_new_tokens
    model = nn.transformer(vocab_size=task.vocab_size, max_len=P + L, d_model=config.d_model,
                           n_heads=config.n_heads, n_layers=config.n_layers)
    lora = config.lora_rank > 0
    policy_model = (nn.lora.with_adapters(model, config.lora_rank, config.lora_alpha, config.lora_targets)
                    if lora else model)
    N, G = config.batch_size, config.group_size
    pre_tx = _adam(config.pretrain_learning_rate, config)
    rl_tx = _adam(config.learning_rate, config)  # the step size used is the one in the state
    reward_fn = torch.func.vmap(task.reward)

    def policy_params(state: LMState):
        return {"base": state.params, "adapters": state.adapters} if lora else state.params

    def reference_params(state: LMState):
        return state.params if lora else state.ref_params

    def rl_params(state: LMState):
        policy = state.adapters if lora else state.params
        return {"policy": policy, **({"value_head": state.value_head} if extra_rl_params else {})}

    def policy_from(state: LMState, trained: dict):
        return {"base": state.params, "adapters": trained["policy"]} if lora else trained["policy"]

    def with_rl_params(state: LMState, new: dict) -> LMState:
        state = state._replace(adapters=new["policy"]) if lora else state._replace(params=new["policy"])
        return state._replace(value_head=new["value_head"]) if extra_rl_params else state

    def init(key, hparams=None) -> LMState:
        k_model, k_value, k_next = jr.split(key, 3)
        full = policy_model.init(k_model)
        params = full["base"] if lora else full
        adapters = full["adapters"] if lora else {}
        value_head = extra_rl_params(k_value, params) if extra_rl_params else {}
        hp = hyperparams_from_config(config, hyperparams, hparams, key.device)
        state = LMState(
            params=params,
            adapters=adapters,
            ref_params={} if lora else _copy(params),
            value_head=value_head,
            opt_state=None,
            pretrain_opt_state=pre_tx.init(params),
            key=k_next,
            update_step=torch.zeros((), dtype=torch.int64, device=key.device),
            hparams=hp,
        )
        return state._replace(opt_state=_adam(hp["learning_rate"], config).init(rl_params(state)))

    def generate(state: LMState):
        key, k_prompts, k_sample = jr.split(state.key, 3)
        prompts, prompt_mask = task.prompts(k_prompts, config.num_prompts)
        # each prompt G times in a row: rows [g * G, (g + 1) * G) are one group
        prompts = prompts.repeat_interleave(G, 0)
        prompt_mask = prompt_mask.repeat_interleave(G, 0)
        pol = _detached(policy_params(state))
        out = sample(k_sample, policy_model, pol, prompts, prompt_mask, L, config.temperature, task.eos_id, task.pad_id)
        rewards = reward_fn(prompts, prompt_mask, out.tokens, out.mask).to(torch.float32)
        check_reward_shape(rewards, N)
        # old log-probs from the scoring pass, not the sampling pass: the same function as the loss's,
        # so the importance ratio is exactly 1 before the first step
        old_logp = score(policy_model.apply, pol, prompts, prompt_mask, out.tokens, out.mask, config.temperature)
        ref_logp = score(model.apply, _detached(reference_params(state)), prompts, prompt_mask, out.tokens, out.mask,
                         config.temperature)
        batch = Batch(prompts, prompt_mask, out.tokens, out.mask, rewards, old_logp.detach(), ref_logp.detach())
        return state._replace(key=key), batch

    def metrics(batch: Batch, **values) -> dict:
        groups = group(batch.rewards, G)
        zero_std = (groups.max(-1).values == groups.min(-1).values).to(torch.float32).mean()
        zero = torch.zeros_like(batch.rewards[0])
        low, high = task.reward_range
        outside = (batch.rewards < low) | (batch.rewards > high) | torch.isnan(batch.rewards)
        out = {
            "reward_out_of_range": outside.to(torch.float32).mean(),
            "episode_return": batch.rewards.mean(),
            "episode_length": batch.mask.to(torch.float32).sum(-1).mean(),
            "episodes": torch.full_like(zero, float(batch.rewards.shape[0])),
            "zero_std_frac": zero_std,
        }
        out.update({name: v.detach() for name, v in values.items()})
        unknown = set(out) - set(METRIC_NAMES)
        assert not unknown, f"metrics outside METRIC_NAMES: {unknown}"  # a programming error, not user input
        return {name: out.get(name, zero) for name in METRIC_NAMES}

    def sft_loss(params, demos):
        """Mean next-token cross-entropy over the real completion tokens of a batch of demonstrations."""
        prompts, prompt_mask, tokens, mask = demos
        return -masked_mean(score(model.apply, params, prompts, prompt_mask, tokens, mask), mask)

    def pretrain(state: LMState):
        key, k_demo, k_gen = jr.split(state.key, 3)
        params, opt_state, losses = state.params, state.pretrain_opt_state, []
        for i in range(config.pretrain_steps_per_update):
            demos = task.demonstrations(jr.fold_in(k_demo, i), N)
            grads, loss = torch.func.grad_and_value(sft_loss)(params, demos)
            updates, opt_state = pre_tx.update(grads, opt_state, params)
            params = optim.apply_updates(params, updates)
            losses.append(loss.detach())
        # the reference follows pretraining, so RL starts with reference = the pretrained params
        state = state._replace(params=params, pretrain_opt_state=opt_state, ref_params={} if lora else _copy(params),
                               key=k_gen, update_step=state.update_step + 1)
        # sampled after the steps, so the last pretraining update reports the pretrained model's reward
        state, batch = generate(state)
        loss = torch.stack(losses).mean()
        return state._replace(key=key), metrics(batch, sft_loss=loss, phase=torch.zeros_like(loss))

    def rl_step(state: LMState, loss_fn: Callable):
        """One clipped Adam step of ``loss_fn(rl_params) -> (loss, aux)`` with the state's step size."""
        trained = rl_params(state)
        grads, (loss, aux) = torch.func.grad_and_value(loss_fn, has_aux=True)(trained)
        updates, opt_state = rl_tx.update(grads, state.opt_state, trained)
        state = with_rl_params(state, optim.apply_updates(trained, updates))._replace(opt_state=opt_state)
        return state, {**aux, "loss": loss.detach()}

    return LMAlgorithmParts(model, policy_model, init, policy_params, reference_params, rl_params, policy_from,
                            with_rl_params, generate, pretrain, rl_step, metrics)


def _copy(params):
    return tree.map(lambda x: x.clone(), params)


def _detached(params):
    return tree.map(lambda x: x.detach() if isinstance(x, torch.Tensor) else x, params)


def token_stats(logits: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> dict:
    """Mean per-token entropy and k3 KL to the reference over the real tokens (no gradient)."""
    return {
        "entropy": masked_mean(masked_entropy(logits.detach(), mask), mask),
        "kl": masked_mean(kl_divergence_estimate(logp.detach(), ref_logp, "k3", mask), mask),
    }


def policy_logits(parts: LMAlgorithmParts, params, batch: Batch, temperature) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits / temperature, logp)`` of the batch's completions under policy ``params`` (differentiable)."""
    logits = completion_logits(parts.policy_model.apply, params, batch.prompts, batch.prompt_mask, batch.tokens, batch.mask)
    logits = logits / temperature
    return logits, sequence_log_probs(logits, batch.tokens, batch.mask)


def check_reward_shape(rewards: torch.Tensor, n: int) -> None:
    """The task's reward must be one float per completion (checked on shapes: free under vmap)."""
    if tuple(rewards.shape) != (n,):
        raise ValueError(f"task.reward: expected one scalar per completion (vmapped: shape ({n},)), "
                         f"got shape {tuple(rewards.shape)}")


def check_metrics(config, task, metrics: dict, last_update: int) -> None:
    """Stop a run whose task returned rewards outside its declared ``reward_range`` (the runner calls
    this between chunks: inside the vmapped pieces values cannot raise).

    Args:
      metrics: name -> ``[S, C]`` for the chunk's updates; ``last_update`` the number of the last one.

    Raises:
      ValueError: naming the task, its range, the updates and seeds where rewards fell outside.
    """
    bad = metrics["reward_out_of_range"] > 0
    if bool(bad.any()):
        C = bad.shape[1]
        updates = [last_update - C + 1 + int(i) for i in torch.nonzero(bad.any(0)).flatten()]
        seeds = [int(i) for i in torch.nonzero(bad.any(1)).flatten()]
        low, high = task.reward_range
        raise ValueError(f"task.reward: the {task.name!r} task declares rewards in [{low}, {high}], but some were "
                         f"outside it (or NaN) at update(s) {updates} for seed(s) {seeds}; fix the reward function "
                         f"or its reward_range")


def evaluate(config: LMConfig, task, env_params, states: LMState, episodes: int, key: torch.Tensor) -> torch.Tensor:
    """Rewards of greedy completions for ``episodes`` prompts per seed (what ``funrl eval`` reports).

    Args:
      states: batched states (leaves ``[S, ...]``).
      episodes: K, prompts per seed.
      key: a key ``(2,)``; every seed gets the same K prompts.

    Returns:
      float64 ``[S, K]`` rewards.
    """
    parts = make_parts(config, task, ())
    k_prompts, k_sample = jr.split(key)
    prompts, prompt_mask = task.prompts(k_prompts, episodes)
    reward_fn = torch.func.vmap(task.reward)

    def one(state):
        out = sample(k_sample, parts.policy_model, parts.policy_params(state), prompts, prompt_mask,
                     task.max_new_tokens, config.temperature, task.eos_id, task.pad_id, greedy=True)
        return reward_fn(prompts, prompt_mask, out.tokens, out.mask)

    with torch.no_grad():
        rewards = torch.func.vmap(one)(states).to(torch.float64)
    low, high = task.reward_range
    if bool(((rewards < low) | (rewards > high) | rewards.isnan()).any()):
        raise ValueError(f"task.reward: the {task.name!r} task declares rewards in [{low}, {high}], "
                         f"got values from {rewards.min().item()} to {rewards.max().item()}")
    return rewards


def make_policy_update(parts: LMAlgorithmParts, config, advantages: Callable, kl_in_loss: bool) -> Callable:
    """The RL update of GRPO and RLOO: sample, ``advantages(state, batch) -> [N]``, ``update_epochs`` steps.

    Each step minimises the token-level clipped surrogate (``config.epsilon``,
    ``config.epsilon_high``, ``config.aggregation``) plus, when ``kl_in_loss``,
    ``beta * aggregate(k3)`` (GRPO); otherwise the KL is already in the
    rewards the advantages come from (RLOO).  Metrics (KL, entropy, clip
    fraction) are those of the batch's first step, before the params move.
    """
    def loss_fn(trained, state, batch, adv):
        logits, logp = policy_logits(parts, parts.policy_from(state, trained), batch, config.temperature)
        loss = token_clipped_surrogate_loss(logp, batch.old_logp, adv, batch.mask, config.epsilon,
                                            config.epsilon_high, config.aggregation, batch.mask.shape[-1])
        if kl_in_loss:
            k3 = kl_divergence_estimate(logp, batch.ref_logp, "k3", batch.mask)
            loss = loss + state.hparams["beta"] * masked_aggregate(k3, batch.mask, config.aggregation, batch.mask.shape[-1])
        aux = {"clip_frac": token_clip_fraction(logp, batch.old_logp, adv, batch.mask, config.epsilon,
                                                config.epsilon_high).detach(),
               **token_stats(logits, logp, batch.ref_logp, batch.mask)}
        return loss, aux

    def update(state: LMState):
        state, batch = parts.generate(state)
        adv = advantages(state, batch)
        aux = {}
        for epoch in range(config.update_epochs):
            state, step_aux = parts.rl_step(state, lambda p, s=state: loss_fn(p, s, batch, adv))
            aux = step_aux if epoch == 0 else aux
        state = state._replace(update_step=state.update_step + 1)
        return state, parts.metrics(batch, phase=torch.ones_like(batch.rewards[0]), **aux)

    return update


def lm_algorithm(parts: LMAlgorithmParts, config: LMConfig, update: Callable, lift: Callable) -> Algorithm:
    """The :class:`~funrl.algorithms.common.Algorithm` of an LM algorithm: pretraining updates, then ``update``."""
    update_l, pretrain_l = lift_pieces(lift, update, parts.pretrain)
    return Algorithm(
        init=parts.init,
        update=update_l,
        num_updates=config.num_updates,
        steps_per_update=config.batch_size,
        pretrain=pretrain_l,
        pretrain_updates=config.pretrain_updates,
    )
