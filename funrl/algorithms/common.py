"""What every funrl algorithm shares: the lift/driver pattern, the train loop, the chunked :class:`Driver`.

An algorithm file (``ppo.py``, ``dqn.py``, ...) writes its learning step as a few
*pure per-seed pieces* (``rollout_step``, ``prepare``, ``minibatch_update``, ...)
and a little Python glue that calls them in order.  Every piece goes through a
``lift``, which decides how it runs:

* :func:`one_seed_lift` — one seed, eager, as a batch of one (``vmap`` over a
  seed axis of size 1).  ``make_train`` uses it, so ``train(key)`` is a pure
  function and ``torch.func.vmap(train)(keys)`` trains many seeds; seed *i* of
  the vmapped run equals ``train(keys[i])`` bit for bit, because both run the
  same batched kernels (:func:`identity_lift` runs a piece unbatched, for
  debugging);
* :func:`vmap_lift` — many seeds, eager (``torch.func.vmap`` of the piece);
* :func:`compiled_lift` — many seeds, ``funrl.jit(vmap(piece))``: the fast path.

Every lift takes one argument, the piece: ``lift(piece)``.  A piece's batch
axes are declared where it is written, not where it is lifted: every argument
and output carries the seed axis, except the arguments named by
:func:`shared` (``@shared("index")``: a step index all seeds share), which
:func:`in_dims_of` turns into ``vmap``'s ``in_dims``.  An algorithm lifts all
of its pieces in one place, ``a_l, b_l = lift_pieces(lift, a, b)``.  Strides are
handled by the lifts alone: every lifted piece returns contiguous tensors laid
out seed axis first, so no algorithm body copies a key or a buffer to keep a
compiled piece from recompiling.  ``lift(stack_steps)`` stacks a list of
per-step outputs at the lift's step axis (:func:`stack_steps`).

Why pieces and a Python loop instead of one compiled ``train``: on this CPU an
unrolled loop over time or over minibatches takes minutes to compile (compile
time grows with the number of unrolled steps), ``vmap(torch.compile(f))``
silently runs eager, and ``compile(vmap(scan))`` fails.  Compiling each
vmapped piece once and looping in Python is fast to compile and fast to run
(see ``shared/torch-func-notes.md``), and both paths run the same code.

The glue may only do batch-agnostic things between pieces: keep Python lists,
loop over Python ranges, ``torch.stack(..., 0)`` per-update metrics and reduce
them over axis 0, put pieces' outputs back into the state (``_replace``).
Everything that touches per-seed data lives in a piece.

Pieces are thin: a piece takes what it reads and returns what it changes (the
rollout step reads the params and returns a transition, never the optimizer
state), so a compiled piece moves few tensors per call.  The rollout and the
env step are shared: :mod:`funrl.algorithms.on_policy` (PPO, A2C, REINFORCE)
and :mod:`funrl.algorithms.off_policy` (DQN, DDPG, TD3, SAC).  Optimizers are
built inside pieces from the seed's hyper-parameter tensors
(:func:`step_size`), so every seed may have its own learning rate.

To add an algorithm, copy the closest file (``reinforce.py`` is the shortest
on-policy one): a ``Config`` dataclass, ``HYPERPARAMS``, a state NamedTuple,
``make_algorithm(config, env, env_params, lift)`` returning an
:class:`Algorithm`, ``make_train`` and ``evaluation_policy``; register it in
``funrl/algorithms/__init__.py``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import time
from typing import Any, Callable, NamedTuple

import torch
import torch.utils._pytree as _pytree

from funrl import optim, tree
from funrl import random as jr
from funrl.compile import jit

__all__ = [
    "shared",
    "in_dims_of",
    "lift_pieces",
    "identity_lift",
    "one_seed_lift",
    "vmap_lift",
    "compiled_lift",
    "Algorithm",
    "make_train_from",
    "Driver",
    "ChunkInfo",
    "seed_keys",
    "hyperparams_from_config",
    "check_config",
    "check_hparams",
    "check_hidden_sizes",
    "check_skip_nonfinite",
    "check_total_timesteps",
    "check_batch_fits_buffer",
    "masked_mean",
    "episode_metrics",
    "param_paths",
    "check_freeze",
    "freeze_mask",
    "with_finite_guard",
    "with_frozen",
    "step_size",
    "stack_steps",
]

Lift = Callable[..., Callable]


def shared(*names: str) -> Callable:
    """Declare the arguments of a per-seed piece that all seeds share (no seed axis).

    ``@shared("index")`` on ``def minibatch_update(params, opt_state, hp, minibatches, index)``
    makes every lift call ``vmap(minibatch_update, in_dims=(0, 0, 0, 0, None))``: the
    declaration sits with the piece, so a lift needs nothing but the piece.

    Args:
      *names: argument names of the decorated function.

    Returns:
      A decorator that records ``names`` on the function (``fn.shared_args``) and returns it.

    Raises:
      ValueError: a name that is not an argument of the function.
    """

    def declare(fn: Callable) -> Callable:
        params = list(inspect.signature(fn).parameters)
        unknown = [n for n in names if n not in params]
        if unknown:
            raise ValueError(f"shared: {unknown} are not arguments of {fn.__name__}{tuple(params)}")
        fn.shared_args = tuple(names)
        return fn

    return declare


def in_dims_of(fn: Callable) -> Any:
    """The ``vmap`` ``in_dims`` of a piece: 0 for every argument, ``None`` for those :func:`shared` names.

    Returns:
      ``0`` when no argument is shared, else a tuple with one entry per positional argument.
    """
    names = getattr(fn, "shared_args", ())
    if not names:
        return 0
    return tuple(None if p in names else 0 for p in inspect.signature(fn).parameters)


def lift_pieces(lift: Lift, *pieces: Callable) -> tuple:
    """Every per-seed piece of an algorithm through ``lift``, in order: ``a_l, b_l = lift_pieces(lift, a, b)``.

    The one place an algorithm lifts its pieces; batch axes come from each
    piece's declaration (:func:`shared`), strides are the lift's business.
    """
    return tuple(lift(p) for p in pieces)


def identity_lift(fn: Callable) -> Callable:
    """Run a per-seed piece as it is (one seed, eager; no batch axis anywhere).

    Not what ``make_train`` uses (see :func:`one_seed_lift`): a piece run this
    way calls unbatched kernels (``mm`` where a seed batch calls ``bmm``), which
    round differently, so its numbers match a batched run only up to float
    reassociation.  Kept for debugging a piece without ``vmap`` in the way.
    """
    return _stacked(0) if fn is stack_steps else fn


def stack_steps(steps: list) -> Any:
    """Per-step outputs of a piece (a list of T same-structure trees) as one tree with a leading ``[T]`` axis.

    A piece every lift knows: passed to a lift (``lift(stack_steps)``), it is
    not vmapped but stacked where the lift keeps the seed axis -- after it
    (``dim=1``) for :func:`vmap_lift` and :func:`compiled_lift`, whose outputs
    are ``[S, ...]``, and at ``dim=0`` for :func:`one_seed_lift`.  A copy, so
    exact; under ``vmap`` a stack of T inputs costs ~10 ms of batching per
    update where the direct stack costs ~0.4 ms (T = 128, 8 seeds).
    """
    return tree.stack(steps)


def _stacked(dim: int) -> Callable:
    def run(steps):
        return _contiguous(tree.stack(steps, dim=dim))

    run.__name__ = "stack_steps"
    return run


def _add_seed_axis(args: tuple, in_dims: Any) -> tuple:
    dims = in_dims if isinstance(in_dims, tuple) else (in_dims,) * len(args)
    if len(dims) != len(args):
        raise ValueError(f"in_dims: expected one entry per argument ({len(args)}), got {len(dims)}")
    return tuple(a if d is None else tree.map(lambda x: x.unsqueeze(0), a) for a, d in zip(args, dims))


def one_seed_lift(fn: Callable) -> Callable:
    """Run a per-seed piece for one seed *as a batch of one*: ``vmap(fn)`` on a seed axis of size 1.

    This is what makes funrl's reproducibility contract hold: ``train(key)``
    (built with this lift) and row *i* of a seed batch run the same batched
    kernels through the same ``vmap`` batching rules, so row *i* of
    ``torch.func.vmap(train)(keys)`` or of the :class:`Driver` equals ``train(keys[i])``
    bit for bit.  An unbatched piece would call other kernels (a matrix-vector
    product where the batch calls a batched matrix product, a scalar tail loop
    where the batch is vectorised) and drift apart by an ulp that training
    then amplifies.
    """
    if fn is stack_steps:
        return _stacked(0)
    in_dims = in_dims_of(fn)
    batched = torch.func.vmap(fn, in_dims=in_dims)

    def run(*args):
        out = batched(*_add_seed_axis(args, in_dims))
        # contiguous: under an outer vmap (``vmap(train)``) this lays every output out seed axis
        # first, as the Driver's lifts do, so that the next piece's reductions sum in the same order
        return tree.map(lambda x: x.squeeze(0).contiguous() if isinstance(x, torch.Tensor) else x, out)

    run.__name__ = getattr(fn, "__name__", "piece")
    return run


def _contiguous(tree_):
    return tree.map(lambda x: x.contiguous() if isinstance(x, torch.Tensor) else x, tree_)


def vmap_lift(fn: Callable) -> Callable:
    """Run a per-seed piece over a leading seed axis with ``torch.func.vmap`` (eager).

    Outputs are made contiguous, as :func:`one_seed_lift`'s are: a reduction's
    summation order depends on the memory layout of its input, so the pieces
    must hand each other tensors laid out the same way on every path (here:
    seed axis first, contiguous) for the :class:`Driver` to equal ``vmap(train)``.
    """
    if fn is stack_steps:
        return _stacked(1)
    batched = torch.func.vmap(fn, in_dims=in_dims_of(fn))

    def run(*args):
        return _contiguous(batched(*args))

    run.__name__ = getattr(fn, "__name__", "piece")
    return run


def compiled_lift(fn: Callable) -> Callable:
    """Run a per-seed piece over a leading seed axis, compiled: ``funrl.jit(vmap(fn))``.

    Outputs are made contiguous inside the graph: a vmapped piece can return
    strided views (one row of ``split(key)``) or stride-0 broadcasts (a tensor
    created under ``vmap`` without a seed axis), and feeding those back in on
    the next call would make torch.compile recompile for the new strides.
    :func:`stack_steps` is not compiled (it only moves data: a graph with one
    input per step and leaf, and no arithmetic to fuse).
    """
    if fn is stack_steps:
        return _stacked(1)
    batched = torch.func.vmap(fn, in_dims=in_dims_of(fn))

    def contiguous_outputs(*args):
        return _contiguous(batched(*args))

    contiguous_outputs.__name__ = getattr(fn, "__name__", "piece")
    return jit(contiguous_outputs)


class Algorithm(NamedTuple):
    """A training algorithm as two pure functions and its sizes.

    Attributes:
      init: ``init(key, hparams=None) -> state`` for one seed (lifted with
        ``vmap`` by the :class:`Driver` for many seeds).
      update: ``update(state) -> (state, metrics)``: one rollout and its
        learning step; ``metrics`` is a dict of scalar tensors (one value per
        seed when batched).  Built from lifted pieces, so it works on one seed
        or on a seed batch depending on the lift it was made with.
      num_updates: updates that ``train`` runs (``pretrain_updates`` included).
      steps_per_update: env steps per seed in one update.
      pretrain: optional ``pretrain(state) -> (state, metrics)`` run instead of
        ``update`` for the first ``pretrain_updates`` updates (the supervised
        phase of the language-model algorithms); its metrics have the same keys.
      pretrain_updates: how many of the ``num_updates`` updates are ``pretrain``.
    """

    init: Callable
    update: Callable
    num_updates: int
    steps_per_update: int
    pretrain: Callable | None = None
    pretrain_updates: int = 0

    def update_at(self, index: int) -> Callable:
        """The update function of update number ``index`` (0-based): ``pretrain`` or ``update``."""
        return self.pretrain if index < self.pretrain_updates else self.update


def hyperparams_from_config(config, names: tuple[str, ...], hparams: dict | None, device, dtype=torch.float32) -> dict:
    """The batchable float hyper-parameters as tensors.

    Args:
      config: the algorithm's Config dataclass (defaults).
      names: the Config fields that may be swept per seed.
      hparams: optional overrides, tensors of shape ``()`` (one seed; a batch
        of them under ``vmap``) or floats.
      device, dtype: where the tensors live.

    Returns:
      dict name -> tensor ``()``.
    """
    hparams = dict(hparams or {})
    unknown = sorted(set(hparams) - set(names))
    if unknown:
        raise ValueError(f"hparams: unknown hyper-parameter(s) {unknown}; batchable ones are {list(names)}")
    # Python numbers only: tensors here are usually batched (vmap) or traced (compile)
    check_hparams(config, {k: v for k, v in hparams.items() if isinstance(v, (int, float))})
    out = {}
    for n in names:
        v = hparams.get(n, getattr(config, n))
        out[n] = torch.as_tensor(v, dtype=dtype, device=device)
        if out[n].ndim != 0:
            raise ValueError(f"hparams[{n!r}]: expected a scalar per seed (batch with vmap), got shape {tuple(out[n].shape)}")
    return out


def _concrete_values(v) -> list:
    """The values of ``v`` worth checking: a Python number, or the extremes of a concrete list/tensor.

    Tensors being transformed or traced (under ``vmap``, ``grad`` or ``torch.compile``) give ``[]``:
    their values cannot be read there.
    """
    if isinstance(v, (bool, int, float)):
        return [v]
    if isinstance(v, torch.Tensor):
        if torch.compiler.is_compiling() or torch._C._functorch.is_functorch_wrapped_tensor(v):
            return []
    elif not isinstance(v, (list, tuple)):
        return [v]  # let the Config's own check name the type
    t = torch.as_tensor(v, dtype=torch.float64, device="cpu")
    if t.numel() == 0:
        return []
    if torch.isnan(t).any():
        return [float("nan")]
    # every Config range is an interval, so its extremes decide
    return sorted({float(t.min()), float(t.max())})


def check_hparams(config, hparams: dict | None, name: str = "hparams") -> None:
    """Check concrete per-seed hyper-parameter values against the Config's own valid ranges.

    Each value (a Python number, or a list/tensor with one value per seed) is checked by
    re-running the Config's validation with it (``dataclasses.replace``), so a sweep value
    is held to the same range as the field (e.g. ``learning_rate > 0``, ``gamma`` in
    ``[0, 1]``).  Values under ``vmap``/``grad``/``torch.compile`` cannot be read and are
    not checked; the :class:`Driver` and ``train`` check them before lifting.  Unknown names are
    left to :func:`hyperparams_from_config`.

    Raises:
      ValueError: naming ``hparams[<name>]``, the bad value and the valid range.
    """
    field_names = {f.name for f in dataclasses.fields(config)}
    for key, v in (hparams or {}).items():
        if key not in field_names:
            continue
        for x in _concrete_values(v):
            try:
                dataclasses.replace(config, **{key: x})
            except (ValueError, TypeError) as e:
                raise ValueError(f"{name}[{key!r}]: got {x!r}, outside the valid range ({e})") from None


def check_hidden_sizes(config, name: str = "hidden_sizes") -> None:
    """Require ``config.<name>`` to be a tuple (or list) of ints >= 1; errors name the field."""
    v = getattr(config, name)
    if (
        isinstance(v, (str, bytes))
        or not isinstance(v, (tuple, list))
        or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in v)
    ):
        raise ValueError(f"config.{name}: expected a tuple of positive ints (e.g. (64, 64)), got {v!r}")


def check_total_timesteps(config, factors: tuple[str, ...]) -> None:
    """Require ``total_timesteps`` >= one update's env steps per seed, the product of the ``factors`` fields.

    Below that, ``num_updates = max(1, total_timesteps // steps_per_update)`` would
    silently run one whole update, more env steps than asked for.
    """
    per_update = math.prod(getattr(config, f) for f in factors)
    if config.total_timesteps < per_update:
        how = " * ".join(f"{f} ({getattr(config, f)})" for f in factors)
        raise ValueError(
            f"config.total_timesteps: expected at least one update's env steps per seed, "
            f"{how} = {per_update}, got {config.total_timesteps}; raise total_timesteps or make updates smaller"
        )


def check_batch_fits_buffer(config) -> None:
    """Require a replay ``batch_size`` of at most ``buffer_size`` transitions."""
    if config.batch_size > config.buffer_size:
        raise ValueError(
            f"config.batch_size: expected at most config.buffer_size ({config.buffer_size}) transitions, "
            f"got batch_size={config.batch_size}; a batch cannot be larger than the replay buffer"
        )


def check_config(config, positive: tuple[str, ...] = (), unit: tuple[str, ...] = (), ints: tuple[str, ...] = ()) -> None:
    """Validate Config fields; errors name the field, what was expected and what was given."""
    for name in ints:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"config.{name}: expected an int >= 1, got {v!r}")
    for name in positive:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"config.{name}: expected a number > 0, got {v!r}")
    for name in unit:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise ValueError(f"config.{name}: expected a number in [0, 1], got {v!r}")


def param_paths(params) -> list[str]:
    """The path of every leaf of a params pytree, keys joined with ``"."`` (``"actor.linear_0.weight"``).

    These are the names ``Config.freeze`` patterns and warm-start errors use.
    """
    return [_path_name(path) for path, _ in _pytree.tree_flatten_with_path(params)[0]]


def _path_name(path) -> str:
    parts = []
    for k in path:
        if isinstance(k, _pytree.MappingKey):
            parts.append(str(k.key))
        elif isinstance(k, _pytree.SequenceKey):
            parts.append(str(k.idx))
        elif isinstance(k, _pytree.GetAttrKey):
            parts.append(k.name)
        else:
            parts.append(str(k))
    return ".".join(parts)


def check_freeze(config) -> None:
    """Validate ``config.freeze``: a str holding a valid regular expression ("" freezes nothing)."""
    pattern = config.freeze
    if not isinstance(pattern, str):
        raise ValueError(f"config.freeze: expected a str (a regular expression), got {pattern!r}")
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"config.freeze: expected a valid regular expression, got {pattern!r} ({e})") from None


def freeze_mask(pattern: str, example_params: Callable[[], Any]):
    """Which params ``pattern`` freezes: a pytree of Python bools shaped like the params, or None.

    A leaf is frozen when ``re.search(pattern, path)`` matches its path (see
    :func:`param_paths`), e.g. ``"^actor\\.linear_0\\."`` freezes the actor's first layer.

    Args:
      pattern: ``Config.freeze``; ``""`` freezes nothing (returns None).
      example_params: called (only if ``pattern`` is set) for one seed's params;
        only their structure is used.

    Raises:
      ValueError: ``pattern`` matches no path (the message lists the paths).
    """
    if not pattern:
        return None
    params = example_params()
    paths = param_paths(params)
    flags = [re.search(pattern, p) is not None for p in paths]
    if not any(flags):
        raise ValueError(f"config.freeze: {pattern!r} matches no parameter path; paths: {', '.join(paths)}")
    return tree.unflatten(tree.structure(params), flags)


def with_frozen(tx: optim.GradientTransformation, mask) -> optim.GradientTransformation:
    """``tx`` with the leaves where ``mask`` is True kept fixed (``mask`` None: ``tx`` itself).

    Their gradients are zeroed before ``tx`` (gradient clipping and Adam's
    moments ignore them, as for ``requires_grad=False`` in torch) and their
    updates after it (nothing, weight decay or learning rate included, moves
    them), so with ``params + update`` a frozen leaf stays bit for bit the same.
    """
    if mask is None:
        return tx
    return optim.chain(optim.freeze(mask), tx, optim.freeze(mask))


def step_size(learning_rate, anneal_updates: int = 0, steps_per_update: int = 1):
    """The step size an algorithm hands to :func:`funrl.optim.scale_by_learning_rate`.

    The optimizer is built from the seed's own hyper-parameters inside each
    piece (as PureJaxRL builds optax's inside ``train``), so a vmapped seed
    batch can hold one learning rate per seed; this gives that rate, constant
    or annealed linearly to 0 by :func:`funrl.optim.linear_schedule`.

    Args:
      learning_rate: the seed's rate: float tensor ``()`` (batched under vmap) or a number.
      anneal_updates: 0: constant; ``N > 0``: the rate at update ``u`` is
        ``learning_rate * (1 - u / N)`` (CleanRL's ``anneal_lr``: ``u`` counts
        updates from 0, constant within an update).
      steps_per_update: optimizer steps per update (PPO: epochs x minibatches),
        since the schedule sees the optimizer's step count.

    Returns:
      ``learning_rate`` itself, or a schedule ``count -> float32 tensor ()``.
    """
    if not anneal_updates:
        return learning_rate
    frac = optim.linear_schedule(1.0, 0.0, anneal_updates)
    return lambda count: learning_rate * frac(torch.div(count, steps_per_update, rounding_mode="floor"))


def check_skip_nonfinite(config) -> None:
    """``config.skip_nonfinite`` must be an int >= 0 (0: every step is applied)."""
    v = getattr(config, "skip_nonfinite", 0)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"config.skip_nonfinite: expected an int >= 0 (optimizer steps with non-finite "
                         f"gradients skipped in a row; 0: off), got {v!r}")


def with_finite_guard(tx: optim.GradientTransformation, skip_nonfinite: int) -> optim.GradientTransformation:
    """``tx`` behind :func:`funrl.optim.apply_if_finite` when ``skip_nonfinite > 0`` (else ``tx`` itself).

    A step whose gradients hold NaN or inf becomes a zero update and leaves the
    optimizer state as it was, up to ``skip_nonfinite`` steps in a row; the next
    one is applied, so a lasting failure still surfaces (the runner then stops
    on non-finite params).  Off by default, as in CleanRL and SB3: a skipped step
    hides a bug as often as it rides out a rare bad batch.
    """
    if not skip_nonfinite:
        return tx
    return optim.apply_if_finite(tx, skip_nonfinite)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is true; 0 if the mask is empty (branch-free).

    Args:
      x: float tensor of any shape; mask: bool tensor of the same shape.

    Returns:
      A scalar tensor.
    """
    m = mask.to(x.dtype)
    return (x * m).sum() / torch.clamp(m.sum(), min=1.0)


def episode_metrics(info_returns: torch.Tensor, info_lengths: torch.Tensor, info_done: torch.Tensor) -> dict:
    """Small aggregates of the episodes completed in one update.

    Args:
      info_returns, info_lengths: float ``[T, N]`` returns/lengths reported by
        ``funrl.envs.wrappers.LogWrapper`` (valid where ``info_done``).
      info_done: bool ``[T, N]``: an episode ended at that step.

    Returns:
      dict with ``episode_return`` (mean over completed episodes, 0 if none),
      ``episode_length`` and ``episodes`` (count) — scalars, never per-step stacks.
    """
    return {
        "episode_return": masked_mean(info_returns.float(), info_done),
        "episode_length": masked_mean(info_lengths.float(), info_done),
        "episodes": info_done.float().sum(),
    }


def make_train_from(make_algorithm: Callable, config, env, env_params) -> Callable:
    """Build ``train(key, hparams=None) -> (state, metrics)`` from an algorithm factory.

    ``train`` runs ``init`` and then ``num_updates`` calls of ``update`` for one
    seed, eagerly; metrics are stacked over updates (leaves ``[num_updates]``).
    It is pure, so ``torch.func.vmap(train)(keys)`` trains one seed per key
    (metrics ``[seeds, updates]``, as :meth:`Driver.run` and :func:`funrl.run` give them),
    and ``torch.func.vmap(train)(keys, hparams)`` sweeps hyper-parameters.

    Every piece, ``init`` included, runs as a batch of one seed
    (:func:`one_seed_lift`), so row *i* of a vmapped ``train`` equals
    ``train(keys[i])`` bit for bit (funrl's reproducibility contract).
    """
    algo = make_algorithm(config, env, env_params, lift=one_seed_lift)
    init_one = one_seed_lift(algo.init)
    init_default = one_seed_lift(lambda k: algo.init(k, None))

    def train(key: torch.Tensor, hparams: dict | None = None):
        if hparams is None:
            state = init_default(key)
        else:
            check_hparams(config, hparams)  # concrete values only: under vmap(train) they cannot be read
            # floats become tensors here so that they can take the batch-of-one axis
            hparams = {k: torch.as_tensor(v, dtype=torch.float32, device=key.device) for k, v in hparams.items()}
            state = init_one(key, hparams)
        history = []
        for i in range(algo.num_updates):
            state, metrics = algo.update_at(i)(state)
            history.append(metrics)
        return state, tree.stack(history) if history else {}

    train.algorithm = algo  # type: ignore[attr-defined]
    return train


@dataclasses.dataclass
class ChunkInfo:
    """What a :class:`Driver` callback sees between chunks (host-side, after a sync)."""

    update: int
    num_updates: int
    env_steps: int
    wall_time: float
    sps: float
    metrics: dict  # name -> tensor [S] for the last update of the chunk
    chunk_metrics: dict | None = None  # name -> tensor [S, C] (seeds, updates) for every update of the chunk


def _materialize(state):
    """Fresh, contiguous, unaliased copies of every tensor leaf.

    ``vmap`` outputs can have stride-0 (expanded) leaves and two fields can be
    the same tensor; compiled pieces return ordinary tensors, so without this the
    second call of every compiled piece would recompile for the new strides.
    """
    return tree.map(lambda x: x.clone(memory_format=torch.contiguous_format) if isinstance(x, torch.Tensor) else x, state)


class Driver:
    """Trains many seeds at once: the algorithm's pieces compiled (or vmapped), called in a Python loop in chunks.

    This is the engine under :func:`funrl.run` (which adds the results folder,
    checkpoints and progress) and the fast counterpart of ``make_train``'s
    eager ``vmap(train)``: both give metrics ``[seeds, updates]``.

    Args:
      make_algorithm: the algorithm factory ``make_algorithm(config, env, env_params, lift)``.
      config, env, env_params: as for ``make_train``.
      compile: use :func:`compiled_lift` (default) or :func:`vmap_lift` (eager, for debugging;
        gives the same numbers up to float rounding).

    ``init(keys, hparams=None)`` makes the batched state for ``S = keys.shape[0]``
    seeds; ``run(state, num_updates, callback, chunk_size)`` performs updates and
    calls ``callback(state, ChunkInfo)`` every ``chunk_size`` updates (progress,
    logging, checkpoints) — the callback sees the state between chunks and cannot
    change what a chunk computes.
    """

    def __init__(self, make_algorithm: Callable, config, env, env_params, compile: bool = True):
        self.config = config
        self.compile = compile
        lift = compiled_lift if compile else vmap_lift
        self.algorithm: Algorithm = make_algorithm(config, env, env_params, lift=lift)
        # init runs once: eager vmap is cheap and saves a compile
        self._init = torch.func.vmap(self.algorithm.init, in_dims=(0, 0), randomness="error")

    @property
    def num_updates(self) -> int:
        return self.algorithm.num_updates

    @property
    def steps_per_update(self) -> int:
        return self.algorithm.steps_per_update

    def init(self, keys: torch.Tensor, hparams: dict | None = None):
        """Batched initial state for one seed per row of ``keys`` ``(S, 2)``.

        ``hparams``: optional dict name -> tensor ``(S,)`` (a sweep), else the config's values.
        """
        if not isinstance(keys, torch.Tensor) or keys.dtype != torch.int64 or keys.ndim != 2 or keys.shape[1] != 2:
            got = (keys.dtype, tuple(keys.shape)) if isinstance(keys, torch.Tensor) else type(keys).__name__
            raise ValueError(f"keys: expected an int64 tensor of shape (S, 2) (funrl.random.split(key, S)), got {got}")
        S = keys.shape[0]
        check_hparams(self.config, hparams)
        if hparams is None:
            return _materialize(torch.func.vmap(lambda k: self.algorithm.init(k, None))(keys))
        hp = {}
        for name, v in hparams.items():
            v = torch.as_tensor(v, dtype=torch.float32, device=keys.device)
            if v.shape != (S,):
                raise ValueError(f"hparams[{name!r}]: expected shape ({S},) (one value per seed), got {tuple(v.shape)}")
            hp[name] = v
        return _materialize(self._init(keys, hp))

    def run(
        self,
        state,
        num_updates: int | None = None,
        callback: Callable[[Any, ChunkInfo], None] | None = None,
        chunk_size: int = 10,
        start_update: int = 0,
    ):
        """Run ``num_updates`` updates (default: the rest of the algorithm's budget).

        Args:
          state: the batched state (leaves ``[S, ...]``).
          num_updates: the update count to stop at (default: the algorithm's ``num_updates``).
          callback: ``callback(state, ChunkInfo)`` after every chunk.
          chunk_size: updates per chunk.
          start_update: the update count ``state`` has reached (a resumed run).

        Returns:
          ``(state, metrics)``: metrics of the updates run, leaves ``[S, U]`` (seeds, updates:
          the order of ``vmap(train)``).
        """
        total = self.num_updates if num_updates is None else num_updates
        if chunk_size < 1:
            raise ValueError(f"chunk_size: expected an int >= 1, got {chunk_size}")
        history = []
        t0 = time.perf_counter()
        S = tree.leaves(state)[0].shape[0]
        done = 0
        while done < total - start_update:
            n = min(chunk_size, total - start_update - done)
            for i in range(n):
                state, metrics = self.algorithm.update_at(start_update + done + i)(state)
                history.append(metrics)
            done += n
            if callback is not None:
                last = tree.map(lambda x: x.detach(), history[-1])
                wall = time.perf_counter() - t0
                steps = done * self.steps_per_update * S
                callback(
                    state,
                    ChunkInfo(
                        update=start_update + done,
                        num_updates=total,
                        env_steps=(start_update + done) * self.steps_per_update * S,
                        wall_time=wall,
                        sps=steps / max(wall, 1e-9),
                        metrics=last,
                        chunk_metrics=tree.map(lambda x: x.detach(), tree.stack(history[-n:], dim=1)),
                    ),
                )
        return state, (tree.stack(history, dim=1) if history else {})


def seed_keys(seed: int, num_seeds: int, device="cpu", first: int = 0) -> torch.Tensor:
    """Keys ``(num_seeds, 2)`` for :meth:`Driver.init`: row i is ``fold_in(key(seed), first + i)``.

    Row i does not depend on ``num_seeds``, so runs with different seed counts
    (or seeds split across processes, ``first`` > 0) agree seed by seed.
    """
    base = jr.key(seed, device=device)
    return torch.stack([jr.fold_in(base, first + i) for i in range(num_seeds)])

