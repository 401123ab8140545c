"""Optimizers as pure gradient transformations (optax's design, torch.optim's numerics).

A :class:`GradientTransformation` is a pair of pure functions::

    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    params = funrl.optim.apply_updates(params, updates)

``chain`` composes them; optimizers are chains (``adam`` = ``scale_by_adam``
then ``scale_by_learning_rate``).  States are NamedTuples of tensors (defined
at module level, so :mod:`funrl.checkpoint` can rebuild them), a step counter
is an int64 tensor, and nothing is updated in place, so ``init``/``update``
work under ``torch.func.vmap`` (one optimizer state per seed) and
``torch.compile``.  Nothing branches on tensor values: gradient clipping,
non-finite-step skipping and schedules use ``torch.where``/``clamp``.

Where optax and ``torch.optim`` differ, funrl follows ``torch.optim`` (so a
port of a PyTorch agent keeps its numbers); each difference is stated in the
docstring concerned.  Tests check ``adam``, ``adamw``, ``sgd`` (momentum,
Nesterov) and ``rmsprop`` (centered, momentum) against ``torch.optim``.

Hyper-parameters may be Python numbers (validated: a negative learning rate,
``b1`` outside ``[0, 1)`` or a non-positive ``eps`` raise ``ValueError``) or
tensors (not checked by value, since they may be vmapped); with
:func:`inject_hyperparams` they live in the state, so a vmapped batch of
states can hold a different learning rate per seed.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.utils._pytree as _pytree

from funrl import ops
from funrl import tree as _tree

__all__ = [
    "GradientTransformation",
    "EmptyState",
    "chain",
    "apply_updates",
    "identity",
    "set_to_zero",
    "scale",
    "scale_by_schedule",
    "scale_by_learning_rate",
    "ScaleByScheduleState",
    "scale_by_adam",
    "ScaleByAdamState",
    "scale_by_rms",
    "ScaleByRmsState",
    "scale_by_stddev",
    "ScaleByStddevState",
    "trace",
    "TraceState",
    "add_decayed_weights",
    "clip_by_global_norm",
    "clip",
    "masked",
    "MaskedState",
    "freeze",
    "trainable",
    "apply_if_finite",
    "ApplyIfFiniteState",
    "sgd",
    "adam",
    "adamw",
    "rmsprop",
    "inject_hyperparams",
    "InjectHyperparamsState",
    "constant_schedule",
    "linear_schedule",
    "cosine_decay_schedule",
    "warmup_cosine_decay_schedule",
    "exponential_decay",
    "piecewise_constant_schedule",
    "join_schedules",
    "incremental_update",
    "periodic_update",
]

#: A schedule: ``step (int or int64 tensor) -> value (float32 tensor)``.
Schedule = Callable[[Any], torch.Tensor]


class GradientTransformation(NamedTuple):
    """``init(params) -> state`` and ``update(updates, state, params=None) -> (updates, state)``.

    ``updates`` and ``params`` are pytrees of tensors with one structure;
    ``state`` is a pytree of tensors (NamedTuples here).  Both functions are
    pure.
    """

    init: Callable[[Any], Any]
    update: Callable[..., tuple[Any, Any]]


class EmptyState(NamedTuple):
    """State of a stateless transformation."""


# ----------------------------------------------------------------------------- helpers
def _leaves(t) -> list[torch.Tensor]:
    return [x for x in _pytree.tree_leaves(t) if isinstance(x, torch.Tensor)]


def _zero_count(params) -> torch.Tensor:
    """An int64 zero on the params' device; batched under vmap (``new_zeros`` has a batching rule)."""
    ls = _leaves(params)
    if ls:
        return ls[0].new_zeros((), dtype=torch.int64)
    return torch.zeros((), dtype=torch.int64)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_number(value, name: str, low=None, high=None, low_open=False, high_open=False, allow_tensor=True):
    """Validate a Python-number hyper-parameter; tensors pass unchecked (they may be vmapped)."""
    if isinstance(value, torch.Tensor) and allow_tensor:
        return value
    if not _is_number(value):
        kind = "a number or a tensor" if allow_tensor else "a number"
        raise TypeError(f"{name}: expected {kind}, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    bad_low = low is not None and (value < low or (low_open and value == low))
    bad_high = high is not None and (value > high or (high_open and value == high))
    if bad_low or bad_high:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}, "
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        if low is None:
            want = f"a number {'<' if high_open else '<='} {high}"
        elif high is None:
            want = f"a number {'>' if low_open else '>='} {low}"
        else:
            want = f"a number in {lo}{hi}"
        raise ValueError(f"{name}: expected {want}, got {value}")
    return value


def _check_learning_rate(lr, name: str = "learning_rate"):
    if callable(lr) and not isinstance(lr, torch.Tensor):
        return lr
    return _check_number(lr, name, low=0.0)


def _check_transform(t, name: str) -> GradientTransformation:
    if not isinstance(t, GradientTransformation):
        raise TypeError(f"{name}: expected a GradientTransformation, got {type(t).__name__}")
    return t


def _like(value, x: torch.Tensor):
    """``value`` as something that combines with ``x`` without promoting it."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=x.dtype)
    return value


def _addcmul(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, value) -> torch.Tensor:
    """``x + value * a * b``; with a Python ``value`` through ``torch.addcmul``, the
    kernel ``torch.optim`` uses, so the rounding (which matters where ``x - a b``
    cancels, as in centered RMSprop) is the same."""
    if isinstance(value, torch.Tensor):
        return x + value.to(x.dtype) * a * b
    return torch.addcmul(x, a, b, value=value)


def _check_same_structure(a, b, name_a: str, name_b: str):
    sa, sb = _pytree.tree_structure(a), _pytree.tree_structure(b)
    if sa != sb:
        raise ValueError(f"{name_b}: expected a pytree with the structure of {name_a} ({sa}), got {sb}")


# ----------------------------------------------------------------------------- combinators
def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply ``transforms`` in order; the state is the tuple of their states."""
    for i, t in enumerate(transforms):
        _check_transform(t, f"transforms[{i}]")

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(updates, state, params=None):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(f"state: expected a tuple of {len(transforms)} states (from chain.init), got {type(state).__name__}")
        new_states = []
        for t, s in zip(transforms, state):
            updates, s = t.update(updates, s, params)
            new_states.append(s)
        return updates, tuple(new_states)

    return GradientTransformation(init, update)


def apply_updates(params, updates):
    """``params + updates`` leaf-wise, cast back to each param's dtype; a new tree (never in place).

    Args:
      params, updates: pytrees of tensors with one structure and shapes.

    Returns:
      The new params pytree.
    """
    _check_same_structure(params, updates, "params", "updates")
    return _tree.map(lambda p, u: (p + u).to(p.dtype), params, updates)


def identity() -> GradientTransformation:
    """Pass updates through unchanged."""
    return GradientTransformation(lambda params: EmptyState(), lambda updates, state, params=None: (updates, state))


def set_to_zero() -> GradientTransformation:
    """Replace every update by zeros (used by :func:`freeze`)."""

    def update(updates, state, params=None):
        return _tree.map(torch.zeros_like, updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


# ----------------------------------------------------------------------------- scaling
def scale(step_size: float | torch.Tensor) -> GradientTransformation:
    """Multiply updates by ``step_size`` (a number or a scalar tensor)."""
    step_size = _check_number(step_size, "step_size")

    def update(updates, state, params=None):
        return _tree.map(lambda u: u * _like(step_size, u), updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


class ScaleByScheduleState(NamedTuple):
    """``count``: int64 ``()``, number of updates so far."""

    count: torch.Tensor


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiply updates by ``step_size_fn(count)``, ``count`` = updates so far (int64 tensor)."""
    if not callable(step_size_fn):
        raise TypeError(f"step_size_fn: expected a callable step -> value, got {type(step_size_fn).__name__}")

    def init(params):
        return ScaleByScheduleState(_zero_count(params))

    def update(updates, state, params=None):
        s = step_size_fn(state.count)
        updates = _tree.map(lambda u: u * _like(s, u), updates)
        return updates, ScaleByScheduleState(state.count + 1)

    return GradientTransformation(init, update)


def scale_by_learning_rate(learning_rate, flip_sign: bool = True) -> GradientTransformation:
    """Multiply updates by ``-learning_rate`` (``+`` if ``flip_sign=False``).

    Args:
      learning_rate: a number >= 0, a scalar tensor, or a schedule
        ``count -> value`` (then the state counts steps).
    """
    learning_rate = _check_learning_rate(learning_rate)
    sign = -1.0 if flip_sign else 1.0
    if callable(learning_rate) and not isinstance(learning_rate, torch.Tensor):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)


class ScaleByAdamState(NamedTuple):
    """``count`` int64 ``()``; ``mu``, ``nu``: first and second moments, like params."""

    count: torch.Tensor
    mu: Any
    nu: Any


def _bias_correction(decay, count: torch.Tensor) -> torch.Tensor:
    # torch.optim computes the corrections in Python double; float64 keeps
    # ``1 - b2**t`` accurate for small t (it is ~1e-3 at t = 1)
    t = count.to(torch.float64)
    d = decay.to(torch.float64) if isinstance(decay, torch.Tensor) else decay
    return 1.0 - ops.power(d, t)  # not torch.pow: see funrl.ops


def scale_by_adam(
    b1: float | torch.Tensor = 0.9,
    b2: float | torch.Tensor = 0.999,
    eps: float | torch.Tensor = 1e-8,
    eps_root: float | torch.Tensor = 0.0,
) -> GradientTransformation:
    """Adam's direction ``m_hat / (sqrt(v_hat + eps_root) + eps)`` (Kingma & Ba, 2015).

    ``m = lerp(m, g, 1 - b1)``, ``v = b2 v + (1 - b2) g^2``, ``m_hat = m / (1 -
    b1^t)``, ``v_hat = v / (1 - b2^t)``; ``eps`` is added after the square
    root, as ``torch.optim.Adam`` (the denominator is computed as
    ``sqrt(v) / sqrt(1 - b2^t) + eps``, torch's operation order).

    Args:
      b1: first-moment decay in ``[0, 1)``.
      b2: second-moment decay in ``[0, 1)``.
      eps: > 0, added to the denominator outside the root.
      eps_root: >= 0, added inside the root (optax's option; 0 = torch).
    """
    b1 = _check_number(b1, "b1", 0.0, 1.0, high_open=True)
    b2 = _check_number(b2, "b2", 0.0, 1.0, high_open=True)
    eps = _check_number(eps, "eps", low=0.0, low_open=True)
    eps_root = _check_number(eps_root, "eps_root", low=0.0)

    def init(params):
        return ScaleByAdamState(_zero_count(params), _tree.zeros_like(params), _tree.zeros_like(params))

    def update(updates, state, params=None):
        count = state.count + 1
        mu = _tree.map(lambda m, g: torch.lerp(m, g, _like(1.0 - b1, g)), state.mu, updates)
        nu = _tree.map(lambda v, g: _addcmul(v * _like(b2, g), g, g, 1.0 - b2), state.nu, updates)
        bc1 = _bias_correction(b1, count)
        bc2 = _bias_correction(b2, count)
        sqrt_bc2 = torch.sqrt(bc2)

        def direction(m, v):
            denom = torch.sqrt(v + _like(eps_root * bc2, v)) / sqrt_bc2.to(v.dtype) + _like(eps, v)
            return (m / bc1.to(m.dtype)) / denom

        return _tree.map(direction, mu, nu), ScaleByAdamState(count, mu, nu)

    return GradientTransformation(init, update)


class ScaleByRmsState(NamedTuple):
    """``nu``: running mean of squared updates, like params."""

    nu: Any


def scale_by_rms(
    decay: float | torch.Tensor = 0.99,
    eps: float | torch.Tensor = 1e-8,
    initial_scale: float = 0.0,
) -> GradientTransformation:
    """RMSprop's direction ``g / (sqrt(nu) + eps)``, ``nu = decay nu + (1 - decay) g^2``.

    Follows ``torch.optim.RMSprop`` (eps outside the square root, ``nu``
    starts at 0 by default), whereas optax puts eps inside the root.

    Args:
      decay: in ``[0, 1]`` (torch's ``alpha``).
      eps: > 0.
      initial_scale: initial ``nu`` (>= 0; torch starts at 0).
    """
    decay = _check_number(decay, "decay", 0.0, 1.0)
    eps = _check_number(eps, "eps", low=0.0, low_open=True)
    initial_scale = _check_number(initial_scale, "initial_scale", low=0.0)

    def init(params):
        return ScaleByRmsState(_tree.map(lambda x: torch.zeros_like(x) + _like(initial_scale, x), params))

    def update(updates, state, params=None):
        nu = _tree.map(lambda v, g: _addcmul(v * _like(decay, g), g, g, 1.0 - decay), state.nu, updates)
        out = _tree.map(lambda g, v: g / (torch.sqrt(v) + _like(eps, v)), updates, nu)
        return out, ScaleByRmsState(nu)

    return GradientTransformation(init, update)


class ScaleByStddevState(NamedTuple):
    """``mu``, ``nu``: running means of updates and squared updates."""

    mu: Any
    nu: Any


def scale_by_stddev(
    decay: float | torch.Tensor = 0.99,
    eps: float | torch.Tensor = 1e-8,
    initial_scale: float = 0.0,
) -> GradientTransformation:
    """Centered RMSprop's direction ``g / (sqrt(nu - mu^2) + eps)``.

    As ``torch.optim.RMSprop(centered=True)`` (eps outside the root), except
    that ``nu - mu^2`` is clamped at 0 so rounding cannot make the root NaN.
    """
    decay = _check_number(decay, "decay", 0.0, 1.0)
    eps = _check_number(eps, "eps", low=0.0, low_open=True)
    initial_scale = _check_number(initial_scale, "initial_scale", low=0.0)

    def init(params):
        return ScaleByStddevState(
            _tree.zeros_like(params), _tree.map(lambda x: torch.zeros_like(x) + _like(initial_scale, x), params)
        )

    def update(updates, state, params=None):
        mu = _tree.map(lambda m, g: torch.lerp(m, g, _like(1.0 - decay, g)), state.mu, updates)
        nu = _tree.map(lambda v, g: _addcmul(v * _like(decay, g), g, g, 1.0 - decay), state.nu, updates)
        out = _tree.map(
            lambda g, m, v: g / (torch.sqrt(torch.clamp(_addcmul(v, m, m, -1.0), min=0.0)) + _like(eps, v)), updates, mu, nu
        )
        return out, ScaleByStddevState(mu, nu)

    return GradientTransformation(init, update)


class TraceState(NamedTuple):
    """``trace``: the momentum buffer, like params."""

    trace: Any


def trace(decay: float | torch.Tensor = 0.9, nesterov: bool = False) -> GradientTransformation:
    """Momentum: ``t = decay t + g``; output ``t`` (or ``g + decay t`` with Nesterov).

    The buffer starts at zero, so the first output is ``g``, exactly
    ``torch.optim.SGD``'s first step (which initialises its buffer with the
    gradient); dampening is not supported (torch's default is 0).

    Args:
      decay: momentum >= 0.
      nesterov: use Nesterov momentum.
    """
    decay = _check_number(decay, "decay", low=0.0)
    if not isinstance(nesterov, bool):
        raise TypeError(f"nesterov: expected a bool, got {type(nesterov).__name__}")

    def init(params):
        return TraceState(_tree.zeros_like(params))

    def update(updates, state, params=None):
        t = _tree.map(lambda b, g: b * _like(decay, g) + g, state.trace, updates)
        if nesterov:
            out = _tree.map(lambda g, b: g + _like(decay, g) * b, updates, t)
        else:
            out = t
        return out, TraceState(t)

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: float | torch.Tensor = 0.0, mask=None) -> GradientTransformation:
    """``updates + weight_decay * params`` (needs ``params`` in ``update``).

    Args:
      weight_decay: >= 0.
      mask: optional bool pytree (or callable ``params -> bool pytree``);
        only ``True`` leaves are decayed (see :func:`masked`).
    """
    weight_decay = _check_number(weight_decay, "weight_decay", low=0.0)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("params: add_decayed_weights needs the params in update(updates, state, params)")
        _check_same_structure(updates, params, "updates", "params")
        return _tree.map(lambda u, p: u + _like(weight_decay, u) * p, updates, params), state

    tx = GradientTransformation(lambda params: EmptyState(), update)
    return masked(tx, mask) if mask is not None else tx


def clip_by_global_norm(max_norm: float | torch.Tensor) -> GradientTransformation:
    """Scale updates so their global L2 norm is at most ``max_norm``.

    The factor is ``min(1, max_norm / (norm + 1e-6))``, exactly
    ``torch.nn.utils.clip_grad_norm_`` (optax uses ``max_norm / norm`` without
    the ``1e-6``); branch-free, and a zero norm gives factor 1, not NaN.

    Args:
      max_norm: > 0.
    """
    max_norm = _check_number(max_norm, "max_norm", low=0.0, low_open=True)

    def update(updates, state, params=None):
        ls = _leaves(updates)
        if not ls:
            return updates, state
        norm = _tree.global_norm(updates)
        factor = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        return _tree.map(lambda u: u * factor.to(u.dtype), updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


def clip(max_delta: float | torch.Tensor) -> GradientTransformation:
    """Clamp every update element to ``[-max_delta, max_delta]`` (``max_delta`` >= 0)."""
    max_delta = _check_number(max_delta, "max_delta", low=0.0)

    def update(updates, state, params=None):
        def f(u):
            m = _like(max_delta, u)
            return torch.clamp(u, -m, m)

        return _tree.map(f, updates), state

    return GradientTransformation(lambda params: EmptyState(), update)


# ----------------------------------------------------------------------------- masks
class MaskedState(NamedTuple):
    """``inner_state``: state of the inner transformation over the masked leaves (a list)."""

    inner_state: Any


def _mask_flags(mask, tree_, what: str) -> tuple[list, Any, list[bool]]:
    m = mask(tree_) if callable(mask) else mask
    flat, spec = _pytree.tree_flatten(tree_)
    flags = _pytree._broadcast_to_and_flatten(m, spec)
    if flags is None:
        raise ValueError(
            f"mask: expected a bool pytree with the structure of {what} (or a prefix of it), "
            f"got {_pytree.tree_structure(m)} for {what} {spec}"
        )
    for i, f in enumerate(flags):
        if not isinstance(f, bool):
            raise TypeError(f"mask: leaf {i} must be a Python bool, got {type(f).__name__}")
    return flat, spec, flags


def masked(inner: GradientTransformation, mask) -> GradientTransformation:
    """Apply ``inner`` only to the leaves where ``mask`` is ``True``.

    Args:
      inner: the transformation for the masked leaves; it sees (and keeps
        state for) a list of just those leaves.
      mask: a pytree of Python bools with the structure of the params, or a
        prefix of it (``{"actor": True, "critic": False}`` covers whole
        subtrees), or a callable ``params -> such a pytree`` (called on the
        params in ``init`` and on the updates in ``update``).

    Returns:
      A transformation whose unmasked leaves pass through unchanged (the same
      tensors).
    """
    _check_transform(inner, "inner")
    if mask is None:
        raise TypeError("mask: expected a bool pytree or a callable, got None")

    def init(params):
        flat, _, flags = _mask_flags(mask, params, "params")
        return MaskedState(inner.init([x for x, f in zip(flat, flags) if f]))

    def update(updates, state, params=None):
        flat, spec, flags = _mask_flags(mask, updates, "updates")
        sel_u = [x for x, f in zip(flat, flags) if f]
        sel_p = None
        if params is not None:
            _check_same_structure(updates, params, "updates", "params")
            sel_p = [x for x, f in zip(_pytree.tree_leaves(params), flags) if f]
        new_u, inner_state = inner.update(sel_u, state.inner_state, sel_p)
        it = iter(new_u)
        out = [next(it) if f else x for x, f in zip(flat, flags)]
        return _pytree.tree_unflatten(out, spec), MaskedState(inner_state)

    return GradientTransformation(init, update)


def freeze(mask) -> GradientTransformation:
    """Zero the updates of the leaves where ``mask`` is ``True`` (same mask forms as :func:`masked`).

    It zeroes the updates that reach it, so it freezes only when it comes
    *last* in a chain: ``chain(freeze(mask), adamw(...))`` still moves the
    "frozen" weights through AdamW's weight decay (which reads the params, not
    the updates), as in optax.  To train a subset, prefer
    :func:`trainable` (the optimizer never sees the frozen leaves) or
    :func:`funrl.tree.split` (differentiate and optimize only the trainable
    tree).
    """
    return masked(set_to_zero(), mask)


def trainable(inner: GradientTransformation, mask) -> GradientTransformation:
    """Train only the leaves where ``mask`` is ``True``; the others get zero updates.

    ``inner`` (any optimizer: :func:`sgd`, :func:`adam`, :func:`adamw`,
    :func:`rmsprop`, chains with clipping ...) sees and keeps state for the
    trainable leaves alone, so weight decay, momentum and the global norm of
    clipping never touch the frozen ones, and ``apply_updates`` leaves them
    equal to what they were (``w + 0``; only a ``-0.0`` would turn into
    ``+0.0``).  The alternative that never even computes frozen gradients:
    ``trainable, frozen = funrl.tree.split(pred, params)`` and optimize
    ``trainable`` alone.

    Args:
      inner: the optimizer for the trainable leaves.
      mask: as :func:`masked` (bool pytree, a prefix of it, or a callable).

    Returns:
      A transformation over the whole params tree.
    """
    tx = masked(inner, mask)

    def update(updates, state, params=None):
        out, state = tx.update(updates, state, params)
        flat, spec, flags = _mask_flags(mask, out, "updates")
        return _pytree.tree_unflatten([x if f else torch.zeros_like(x) for x, f in zip(flat, flags)], spec), state

    return GradientTransformation(tx.init, update)


class ApplyIfFiniteState(NamedTuple):
    """``notfinite_count``: consecutive non-finite steps (int64); ``last_finite``: bool;
    ``total_notfinite``: all non-finite steps so far (int64); ``inner_state``."""

    notfinite_count: torch.Tensor
    last_finite: torch.Tensor
    total_notfinite: torch.Tensor
    inner_state: Any


def apply_if_finite(inner: GradientTransformation, max_consecutive_errors: int) -> GradientTransformation:
    """Skip steps whose incoming updates hold NaN or inf.

    A skipped step returns zero updates and leaves ``inner``'s state as it
    was.  After more than ``max_consecutive_errors`` non-finite steps in a
    row, the update is applied anyway so the failure surfaces (optax's
    semantics).  Branch-free: ``inner`` always runs and ``torch.where`` picks
    the result.

    Args:
      inner: the transformation to guard.
      max_consecutive_errors: int >= 0.
    """
    _check_transform(inner, "inner")
    if isinstance(max_consecutive_errors, bool) or not isinstance(max_consecutive_errors, int) or max_consecutive_errors < 0:
        raise ValueError(f"max_consecutive_errors: expected an int >= 0, got {max_consecutive_errors!r}")

    def init(params):
        zero = _zero_count(params)
        return ApplyIfFiniteState(zero, zero == 0, zero, inner.init(params))

    def update(updates, state, params=None):
        ls = _leaves(updates)
        if ls:
            isfinite = torch.stack([torch.isfinite(x).all() for x in ls]).all()
        else:
            isfinite = torch.ones_like(state.last_finite)
        new_u, new_inner = inner.update(updates, state.inner_state, params)
        notfinite_count = torch.where(isfinite, torch.zeros_like(state.notfinite_count), state.notfinite_count + 1)
        ok = isfinite | (notfinite_count > max_consecutive_errors)
        out = _tree.map(lambda u: torch.where(ok, u, torch.zeros_like(u)), new_u)
        inner_state = _tree.where(ok, new_inner, state.inner_state)
        total = state.total_notfinite + (~isfinite).to(state.total_notfinite.dtype)
        return out, ApplyIfFiniteState(notfinite_count, isfinite, total, inner_state)

    return GradientTransformation(init, update)


# ----------------------------------------------------------------------------- optimizers
def sgd(learning_rate, momentum: float | torch.Tensor | None = None, nesterov: bool = False) -> GradientTransformation:
    """Stochastic gradient descent, numerically ``torch.optim.SGD`` (dampening 0, no weight decay).

    ``p -= lr * d`` with ``d = g`` (no momentum), ``d = buf`` with ``buf = m
    buf + g`` (first step ``buf = g``), or ``d = g + m buf`` (Nesterov).

    Args:
      learning_rate: >= 0, a tensor or a schedule.
      momentum: ``None`` for plain SGD, else >= 0.
      nesterov: Nesterov momentum (needs ``momentum``).
    """
    if nesterov and momentum is None:
        raise ValueError("nesterov: Nesterov momentum needs momentum (got momentum=None)")
    parts = []
    if momentum is not None:
        parts.append(trace(_check_number(momentum, "momentum", low=0.0), nesterov))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0) -> GradientTransformation:
    """Adam, numerically ``torch.optim.Adam`` (eps added after ``sqrt(v_hat)``).

    Args:
      learning_rate: >= 0, a tensor or a schedule.
      b1, b2: in ``[0, 1)``.
      eps: > 0.
      eps_root: >= 0 inside the root (optax's; torch has none, keep 0 to match it).
    """
    return chain(scale_by_adam(b1, b2, eps, eps_root), scale_by_learning_rate(learning_rate))


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, weight_decay=1e-2, mask=None) -> GradientTransformation:
    """AdamW (decoupled weight decay), numerically ``torch.optim.AdamW``.

    ``p -= lr * (adam_direction + weight_decay * p)``, i.e. torch's
    ``p *= 1 - lr * weight_decay`` followed by the Adam step.  The default
    ``weight_decay=1e-2`` is torch's (optax's is 1e-4).  In float32 the two
    drift apart by ~1e-6 per 100 steps: torch multiplies by the rounded
    ``float32(1 - lr * wd)`` every step, a systematic error this form avoids
    (funrl's float32 run stays closer to the float64 one; tested).

    Args:
      learning_rate: >= 0, a tensor or a schedule.
      b1, b2: in ``[0, 1)``; eps: > 0; eps_root: >= 0.
      weight_decay: >= 0.
      mask: optional mask of the params to decay (see :func:`masked`).
    """
    return chain(
        scale_by_adam(b1, b2, eps, eps_root),
        add_decayed_weights(weight_decay, mask),
        scale_by_learning_rate(learning_rate),
    )


def rmsprop(
    learning_rate,
    decay=0.99,
    eps=1e-8,
    initial_scale: float = 0.0,
    centered: bool = False,
    momentum: float | torch.Tensor | None = None,
) -> GradientTransformation:
    """RMSprop, numerically ``torch.optim.RMSprop`` (``decay`` is torch's ``alpha``).

    Differs from optax: eps is added outside the square root, and momentum
    is applied before the learning rate (``buf = m buf + g / denom; p -= lr
    buf``, as torch), which matters only for a scheduled learning rate.

    Args:
      learning_rate: >= 0, a tensor or a schedule.
      decay: in ``[0, 1]``; eps: > 0; initial_scale: initial second moment.
      centered: divide by the estimated standard deviation instead.
      momentum: ``None`` or >= 0.
    """
    parts = [scale_by_stddev(decay, eps, initial_scale) if centered else scale_by_rms(decay, eps, initial_scale)]
    if momentum is not None:
        parts.append(trace(_check_number(momentum, "momentum", low=0.0)))
    parts.append(scale_by_learning_rate(learning_rate))
    return chain(*parts)


# ----------------------------------------------------------------------------- injected hyper-parameters
class InjectHyperparamsState(NamedTuple):
    """``count`` int64 ``()``; ``hyperparams``: dict name -> float tensor ``()``; ``inner_state``."""

    count: torch.Tensor
    hyperparams: dict
    inner_state: Any


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Sequence[str] = (),
    hyperparam_dtype: torch.dtype = torch.float32,
) -> Callable[..., GradientTransformation]:
    """Make an optimizer factory keep its numeric hyper-parameters in its state.

    ``inject_hyperparams(adam)(learning_rate=1e-3)`` is Adam whose state has
    ``state.hyperparams["learning_rate"]`` (and ``b1``, ``b2``, ``eps``, ...) as
    float tensors of shape ``()``.  Every ``update`` rebuilds the inner
    transformation from the tensors in the state, so a vmapped batch of
    states may hold a different learning rate per seed, and a hyper-parameter
    can be changed between steps with ``state._replace(hyperparams=...)``.

    Args:
      inner_factory: e.g. :func:`adam`; called with tensor hyper-parameters,
        so it must not branch on their values.
      static_args: names passed through unchanged (Python ints that must stay
        ints, masks given as callables, ...).
      hyperparam_dtype: dtype of the stored hyper-parameters.

    Returns:
      A factory with ``inner_factory``'s signature.  Numbers and tensors become
      state tensors; callables (not in ``static_args``) are schedules, evaluated
      at the step count each update and stored; anything else (``None``,
      bools, masks) is passed through.
    """
    if not callable(inner_factory):
        raise TypeError(f"inner_factory: expected a callable returning a GradientTransformation, got {type(inner_factory).__name__}")
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    sig = inspect.signature(inner_factory)

    def factory(*args, **kwargs) -> GradientTransformation:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        numeric, schedules, other = {}, {}, {}
        for name, v in bound.arguments.items():
            if name in static:
                other[name] = v
            elif isinstance(v, torch.Tensor) or _is_number(v):
                numeric[name] = v
            elif callable(v):
                schedules[name] = v
            else:
                other[name] = v
        # build once eagerly so invalid Python-number hyper-parameters fail here
        inner_factory(**bound.arguments)

        def to_tensor(v, ref: torch.Tensor) -> torch.Tensor:
            if isinstance(v, torch.Tensor):
                return v.to(device=ref.device, dtype=hyperparam_dtype)
            return ref.new_full((), float(v), dtype=hyperparam_dtype)

        def init(params):
            count = _zero_count(params)
            hps = {n: to_tensor(v, count) for n, v in numeric.items()}
            hps.update({n: to_tensor(torch.as_tensor(f(count)), count) for n, f in schedules.items()})
            inner = inner_factory(**other, **hps)
            return InjectHyperparamsState(count, hps, inner.init(params))

        def update(updates, state, params=None):
            hps = dict(state.hyperparams)
            for n, f in schedules.items():
                hps[n] = to_tensor(torch.as_tensor(f(state.count)), state.count)
            inner = inner_factory(**other, **hps)
            updates, inner_state = inner.update(updates, state.inner_state, params)
            return updates, InjectHyperparamsState(state.count + 1, hps, inner_state)

        return GradientTransformation(init, update)

    factory.__doc__ = f"{getattr(inner_factory, '__name__', 'optimizer')} with hyper-parameters in its state.\n\n{inner_factory.__doc__ or ''}"
    factory.__signature__ = sig
    return factory


# ----------------------------------------------------------------------------- schedules
def _step(count, name: str = "count") -> torch.Tensor:
    """The step as a float64 tensor (float64 keeps large step counts exact)."""
    if isinstance(count, torch.Tensor):
        return count.to(torch.float64)
    if _is_number(count):
        return torch.tensor(float(count), dtype=torch.float64)
    raise TypeError(f"{name}: expected an int or a tensor step, got {type(count).__name__}")


def _out(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32)


def _check_steps(n, name: str, positive: bool = True) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < (1 if positive else 0):
        raise ValueError(f"{name}: expected an int {'> 0' if positive else '>= 0'}, got {n!r}")
    return n


def constant_schedule(value: float) -> Schedule:
    """``count -> value`` (a float32 tensor on the count's device)."""
    value = _check_number(value, "value")

    def schedule(count):
        return _out(torch.zeros_like(_step(count)) + value)

    return schedule


def linear_schedule(init_value: float, end_value: float, transition_steps: int, transition_begin: int = 0) -> Schedule:
    """Linear from ``init_value`` (until ``transition_begin``) to ``end_value`` (from ``transition_begin + transition_steps``).

    ``value(c) = (init - end) (1 - k / transition_steps) + end`` with ``k =
    clamp(c - transition_begin, 0, transition_steps)``; float32 tensor.
    """
    init_value = _check_number(init_value, "init_value")
    end_value = _check_number(end_value, "end_value")
    transition_steps = _check_steps(transition_steps, "transition_steps")
    transition_begin = _check_steps(transition_begin, "transition_begin", positive=False)

    def schedule(count):
        k = torch.clamp(_step(count) - transition_begin, 0.0, float(transition_steps))
        return _out((init_value - end_value) * (1.0 - k / transition_steps) + end_value)

    return schedule


def cosine_decay_schedule(init_value: float, decay_steps: int, alpha: float = 0.0, exponent: float = 1.0) -> Schedule:
    """Cosine decay (Loshchilov & Hutter, 2017) from ``init_value`` to ``alpha * init_value``.

    ``value(c) = init ((1 - alpha) (0.5 (1 + cos(pi k / decay_steps)))^exponent + alpha)``,
    ``k = clamp(c, 0, decay_steps)``.
    """
    init_value = _check_number(init_value, "init_value")
    decay_steps = _check_steps(decay_steps, "decay_steps")
    alpha = _check_number(alpha, "alpha", 0.0, 1.0)
    exponent = _check_number(exponent, "exponent", low=0.0, low_open=True)

    def schedule(count):
        k = torch.clamp(_step(count), 0.0, float(decay_steps))
        cosine = 0.5 * (1.0 + torch.cos(math.pi * k / decay_steps))
        return _out(init_value * ((1.0 - alpha) * ops.power(cosine, exponent) + alpha))

    return schedule


def warmup_cosine_decay_schedule(
    init_value: float, peak_value: float, warmup_steps: int, decay_steps: int, end_value: float = 0.0, exponent: float = 1.0
) -> Schedule:
    """Linear warm-up from ``init_value`` to ``peak_value`` over ``warmup_steps``, then cosine decay to ``end_value``.

    ``decay_steps`` counts the warm-up too (optax's convention): the value
    reaches ``end_value`` at step ``decay_steps`` and stays there.
    """
    init_value = _check_number(init_value, "init_value")
    peak_value = _check_number(peak_value, "peak_value")
    end_value = _check_number(end_value, "end_value")
    warmup_steps = _check_steps(warmup_steps, "warmup_steps", positive=False)
    decay_steps = _check_steps(decay_steps, "decay_steps")
    exponent = _check_number(exponent, "exponent", low=0.0, low_open=True)
    if decay_steps <= warmup_steps:
        raise ValueError(f"decay_steps: expected an int > warmup_steps ({warmup_steps}), got {decay_steps}")
    span = decay_steps - warmup_steps

    def schedule(count):
        c = _step(count)
        k = torch.clamp(c - warmup_steps, 0.0, float(span))
        cosine = 0.5 * (1.0 + torch.cos(math.pi * k / span))
        decayed = (peak_value - end_value) * ops.power(cosine, exponent) + end_value
        if warmup_steps == 0:
            return _out(decayed)
        warm = init_value + (peak_value - init_value) * torch.clamp(c, 0.0, float(warmup_steps)) / warmup_steps
        return _out(torch.where(c < warmup_steps, warm, decayed))

    return schedule


def exponential_decay(
    init_value: float,
    transition_steps: int,
    decay_rate: float,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: float | None = None,
) -> Schedule:
    """``init_value * decay_rate ** ((c - transition_begin) / transition_steps)`` (floored if ``staircase``).

    Constant ``init_value`` before ``transition_begin``; bounded by
    ``end_value`` (a floor when decaying, a ceiling when growing) if given.
    """
    init_value = _check_number(init_value, "init_value")
    transition_steps = _check_steps(transition_steps, "transition_steps")
    decay_rate = _check_number(decay_rate, "decay_rate", low=0.0, low_open=True)
    transition_begin = _check_steps(transition_begin, "transition_begin", positive=False)
    if end_value is not None:
        end_value = _check_number(end_value, "end_value")

    def schedule(count):
        p = torch.clamp(_step(count) - transition_begin, min=0.0) / transition_steps
        if staircase:
            p = torch.floor(p)
        v = init_value * ops.power(torch.as_tensor(decay_rate, dtype=torch.float64, device=p.device), p)
        if end_value is not None:
            v = torch.clamp(v, min=end_value) if decay_rate < 1 else torch.clamp(v, max=end_value)
        return _out(v)

    return schedule


def piecewise_constant_schedule(init_value: float, boundaries_and_scales: dict[int, float] | None = None) -> Schedule:
    """``init_value`` times the product of ``scale`` over every ``boundary <= count``.

    Args:
      boundaries_and_scales: ``{step: factor}``, e.g. ``{1000: 0.1, 2000: 0.1}``.
    """
    init_value = _check_number(init_value, "init_value")
    items = sorted((boundaries_and_scales or {}).items())
    for b, s in items:
        _check_steps(b, "boundaries_and_scales (boundary)", positive=False)
        _check_number(s, f"boundaries_and_scales[{b}]", allow_tensor=False)

    def schedule(count):
        c = _step(count)
        v = torch.zeros_like(c) + init_value
        for b, s in items:
            v = torch.where(c >= b, v * s, v)
        return _out(v)

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[i]`` from ``boundaries[i - 1]`` on, with its count restarted at 0.

    Args:
      schedules: ``n`` schedules.
      boundaries: ``n - 1`` increasing step numbers.
    """
    schedules = list(schedules)
    boundaries = list(boundaries)
    if not schedules or not all(callable(s) for s in schedules):
        raise TypeError("schedules: expected a non-empty sequence of callables step -> value")
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(f"boundaries: expected {len(schedules) - 1} boundaries (one fewer than schedules), got {len(boundaries)}")
    for b in boundaries:
        _check_steps(b, "boundaries", positive=False)
    if any(b2 < b1 for b1, b2 in zip(boundaries, boundaries[1:])):
        raise ValueError(f"boundaries: expected non-decreasing steps, got {boundaries}")

    def schedule(count):
        c = count if isinstance(count, torch.Tensor) else torch.as_tensor(count)
        out = _out(torch.as_tensor(schedules[0](c)))
        for b, s in zip(boundaries, schedules[1:]):
            out = torch.where(c < b, out, _out(torch.as_tensor(s(c - b))))
        return out

    return schedule


# ----------------------------------------------------------------------------- target networks
def incremental_update(new_tensors, old_tensors, step_size: float | torch.Tensor):
    """Polyak averaging: ``step_size * new + (1 - step_size) * old`` leaf-wise.

    Args:
      new_tensors, old_tensors: pytrees of tensors with one structure (online
        and target params).
      step_size: in ``[0, 1]`` (``tau``), or a tensor (not checked, may be vmapped).

    Returns:
      The new target pytree (inputs untouched).
    """
    step_size = _check_number(step_size, "step_size", 0.0, 1.0)
    _check_same_structure(new_tensors, old_tensors, "new_tensors", "old_tensors")
    return _tree.map(lambda n, o: _like(step_size, n) * n + (1.0 - _like(step_size, n)) * o, new_tensors, old_tensors)


def periodic_update(new_tensors, old_tensors, steps: int | torch.Tensor, update_period: int):
    """``new_tensors`` if ``steps % update_period == 0`` else ``old_tensors`` (rlax semantics).

    Args:
      new_tensors, old_tensors: pytrees of tensors with one structure.
      steps: int or integer tensor ``()`` (may be vmapped).
      update_period: int > 0.

    Returns:
      The selected pytree, built with ``torch.where`` (no branch on ``steps``).
    """
    update_period = _check_steps(update_period, "update_period")
    if isinstance(steps, torch.Tensor):
        if steps.is_floating_point() or steps.dtype == torch.bool:
            raise TypeError(f"steps: expected an integer tensor, got dtype {steps.dtype}")
    elif isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps: expected an int or an integer tensor, got {type(steps).__name__}")
    _check_same_structure(new_tensors, old_tensors, "new_tensors", "old_tensors")
    s = torch.as_tensor(steps)
    take_new = torch.remainder(s, update_period) == 0
    return _tree.map(lambda n, o: torch.where(take_new.to(n.device), n, o), new_tensors, old_tensors)
