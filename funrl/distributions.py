"""Functional probability distributions: NamedTuples of tensors with pure methods.

Each distribution is a small ``NamedTuple`` of parameter tensors, so it is a
pytree: it can be returned from a network, passed through ``torch.func.vmap``,
``grad`` and ``torch.compile``, stacked with :func:`funrl.tree.stack`, and
indexed.  Every method is a pure function of the parameters (and, for sampling,
of a funrl key from :mod:`funrl.random`); nothing touches torch's global RNG.

Shapes follow distrax: a distribution has a *batch shape* (the parameters'
leading axes) and, for :class:`Normal` and :class:`TanhNormal`, an *event* axis
(the last axis: one action vector).  ``sample(key, shape)`` returns
``shape + batch_shape (+ event)``.

- :class:`Categorical` ``(logits)``: logits ``(..., K)``; int64 samples, no event axis.
- :class:`Normal` ``(loc, scale)``: diagonal Gaussian, ``(..., A)``, event = last axis.
- :class:`TanhNormal` ``(loc, scale)``: ``tanh`` of that Gaussian (SAC), event = last axis.
- :class:`Bernoulli` ``(logits)``: independent binary variables ``(...)``, elementwise.
- :class:`Deterministic` ``(value)``: a point mass ``(...)``, elementwise.

:class:`Normal` and :class:`TanhNormal` sum log-probabilities, entropies and KLs
over the event (last) axis, like ``Independent(Normal(loc, scale), 1)`` in
``torch.distributions``; :meth:`Normal.log_prob_elementwise` and friends give the
per-dimension terms.

Values are never inspected: ``scale <= 0`` or NaN logits cannot be detected
under ``vmap``/``compile`` and produce NaN/inf results rather than an error.
``loc``/``scale`` shape and dtype agreement is checked when a distribution is
built (``ValueError``/``TypeError`` naming both); float dtypes, ranks and the
arguments of each method are checked when the method is called.  Construction
is lenient for non-tensor fields because pytree utilities rebuild NamedTuples
with placeholder leaves.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch

from funrl import ops
from funrl import random as _random
from funrl._checks import check_float, check_tensor

__all__ = ["Categorical", "Normal", "TanhNormal", "Bernoulli", "Deterministic"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)


def _sample_shape(shape, name: str = "shape") -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape
    ):
        raise ValueError(f"{name}: expected a tuple of non-negative ints, got {shape!r}")
    return tuple(int(s) for s in shape)


def _check_same_kind(a, b, name_a: str, name_b: str) -> None:
    """Shape/dtype agreement of two parameter tensors (skipped for non-tensors).

    Pytree utilities rebuild NamedTuples with placeholder leaves (``None``,
    ints for ``in_dims``), so only tensor pairs are checked.
    """
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a}, {name_b}: expected the same shape, got {name_a} {tuple(a.shape)} "
            f"and {name_b} {tuple(b.shape)} (broadcast explicitly, e.g. {name_b}.expand_as({name_a}))"
        )
    if a.dtype != b.dtype:
        raise TypeError(
            f"{name_a}, {name_b}: expected the same dtype, got {name_a} {a.dtype} and {name_b} {b.dtype}"
        )


def _check_event(x: torch.Tensor, event: int, name: str) -> None:
    check_float(x, name)
    if x.ndim == 0 or x.shape[-1] != event:
        raise ValueError(
            f"{name}: expected a last (event) axis of size {event}, got shape {tuple(x.shape)}"
        )


def _check_has_event(loc: torch.Tensor, cls: str) -> None:
    check_float(loc, "loc")
    if loc.ndim == 0:
        raise ValueError(
            f"loc: {cls} has an event axis (the last axis), expected rank >= 1, got shape (); "
            "use loc[None] for a one-dimensional action"
        )


# ------------------------------------------------------------------ Categorical
class _CategoricalParams(NamedTuple):
    logits: torch.Tensor


class Categorical(_CategoricalParams):
    """Categorical distribution over ``K`` classes from unnormalised logits.

    Args:
      logits: float tensor ``(..., K)``; ``-inf`` entries have probability 0.
        The batch shape is ``logits.shape[:-1]``.

    Samples are int64 class indices with the batch shape (no event axis).
    """

    __slots__ = ()

    def _checked_logits(self) -> torch.Tensor:
        check_float(self.logits, "logits")
        if self.logits.ndim == 0:
            raise ValueError("logits: expected shape (..., K) with a class axis, got shape ()")
        return self.logits

    @property
    def num_classes(self) -> int:
        """``K``, the size of the last axis of ``logits``."""
        return self.logits.shape[-1]

    @property
    def log_probs(self) -> torch.Tensor:
        """Normalised log-probabilities ``log_softmax(logits)``, shape ``(..., K)``."""
        return torch.log_softmax(self._checked_logits(), dim=-1)

    @property
    def probs(self) -> torch.Tensor:
        """Probabilities ``softmax(logits)``, shape ``(..., K)``."""
        return torch.softmax(self._checked_logits(), dim=-1)

    def sample(self, key: torch.Tensor, shape: Sequence[int] = ()) -> torch.Tensor:
        """Draw class indices (Gumbel-max via :func:`funrl.random.categorical`).

        Args:
          key: a funrl key ``(2,)``.
          shape: sample shape prepended to the batch shape.

        Returns:
          int64 tensor ``shape + logits.shape[:-1]`` with values in ``[0, K)``.
        """
        logits = self._checked_logits()
        shape = _sample_shape(shape)
        return _random.categorical(key, logits, axis=-1, shape=shape + tuple(logits.shape[:-1]))

    def sample_and_log_prob(self, key: torch.Tensor, shape: Sequence[int] = ()):
        """``(x, log_prob(x))`` for ``x = sample(key, shape)``."""
        x = self.sample(key, shape)
        return x, self.log_prob(x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probability of class indices.

        Args:
          x: integer tensor broadcastable with the batch shape
            (``sample_shape + batch_shape``).

        Returns:
          Float tensor of the broadcast shape.  Indices outside ``[0, K)`` have
          probability 0 and give ``-inf`` (no error: values cannot be checked
          under vmap).  Computed with a one-hot comparison instead of ``gather``
          so that out-of-range indices never read out of bounds.
        """
        check_tensor(x, "x")
        if x.is_floating_point() or x.is_complex():
            raise TypeError(f"x: expected an integer tensor of class indices, got dtype {x.dtype}")
        lp = self.log_probs
        k = lp.shape[-1]
        classes = torch.arange(k, device=lp.device)
        hit = x.unsqueeze(-1).to(torch.int64) == classes
        picked = torch.where(hit, lp, torch.zeros((), dtype=lp.dtype, device=lp.device)).sum(-1)
        valid = hit.any(-1)
        return torch.where(valid, picked, torch.full((), -math.inf, dtype=lp.dtype, device=lp.device))

    def entropy(self) -> torch.Tensor:
        """Entropy ``-sum_k p_k log p_k`` in nats, shape ``logits.shape[:-1]``.

        Classes with ``p_k = 0`` contribute 0 (and a zero gradient, not NaN).
        """
        lp = self.log_probs
        p = torch.exp(lp)
        safe_lp = torch.where(p > 0, lp, torch.zeros((), dtype=lp.dtype, device=lp.device))
        return -(p * safe_lp).sum(-1)

    def mode(self) -> torch.Tensor:
        """Most likely class (first on ties), int64 of the batch shape."""
        return torch.argmax(self._checked_logits(), dim=-1)

    def kl(self, other: "Categorical") -> torch.Tensor:
        """``KL(self || other)`` in nats, shape: broadcast of both batch shapes.

        ``+inf`` where ``other`` gives probability 0 to a class ``self`` can draw.
        """
        if not isinstance(other, Categorical):
            raise TypeError(f"other: expected a Categorical, got {type(other).__name__}")
        k, k_other = self._checked_logits().shape[-1], other._checked_logits().shape[-1]
        if k_other != k:
            raise ValueError(f"other: expected {k} classes like self, got {k_other}")
        lp, lq = self.log_probs, other.log_probs
        p = torch.exp(lp)
        zero = torch.zeros((), dtype=lp.dtype, device=lp.device)
        diff = torch.where(p > 0, lp - lq, zero)
        return (p * diff).sum(-1)


# ------------------------------------------------------------------------ Normal
class _LocScale(NamedTuple):
    loc: torch.Tensor
    scale: torch.Tensor


def _new_loc_scale(cls, base, loc, scale):
    _check_same_kind(loc, scale, "loc", "scale")
    return base.__new__(cls, loc, scale)


class Normal(_LocScale):
    """Diagonal Gaussian with event axis = the last axis.

    Args:
      loc: float tensor ``(..., A)``, the mean.
      scale: float tensor of the same shape and dtype, the standard deviation
        (must be > 0; not checkable under vmap: ``scale <= 0`` gives NaN/-inf).

    ``log_prob``, ``entropy`` and ``kl`` are **summed over the last axis**
    (one value per action vector, shape ``(...,)``), matching
    ``Independent(torch.distributions.Normal(loc, scale), 1)``.  The
    ``*_elementwise`` variants return the per-dimension terms ``(..., A)``.
    """

    __slots__ = ()

    def __new__(cls, loc, scale):
        return _new_loc_scale(cls, _LocScale, loc, scale)

    # -- sampling
    def _eps(self, key: torch.Tensor, shape) -> torch.Tensor:
        _check_has_event(self.loc, type(self).__name__)
        shape = _sample_shape(shape)
        return _random.normal(key, shape + tuple(self.loc.shape), dtype=self.loc.dtype)

    def sample(self, key: torch.Tensor, shape: Sequence[int] = ()) -> torch.Tensor:
        """Reparameterised sample ``loc + scale * eps``, ``eps ~ N(0, I)``.

        Gradients flow to ``loc`` and ``scale``.

        Args:
          key: a funrl key ``(2,)``.
          shape: sample shape prepended to ``loc.shape``.

        Returns:
          Tensor ``shape + loc.shape`` of ``loc``'s dtype.
        """
        return self.loc + self.scale * self._eps(key, shape)

    def sample_and_log_prob(self, key: torch.Tensor, shape: Sequence[int] = ()):
        """``(x, log_prob(x))`` with the log-density computed from ``eps`` directly.

        Returns:
          ``x`` of shape ``shape + loc.shape`` and its summed log-density of
          shape ``shape + loc.shape[:-1]``.
        """
        eps = self._eps(key, shape)
        x = self.loc + self.scale * eps
        lp = -0.5 * eps * eps - torch.log(self.scale) - _HALF_LOG_2PI
        return x, lp.sum(-1)

    # -- densities
    def log_prob_elementwise(self, x: torch.Tensor) -> torch.Tensor:
        """Per-dimension log-density ``log N(x_i; loc_i, scale_i)``.

        Args:
          x: float tensor ``(..., A)`` broadcastable with ``loc``.

        Returns:
          Tensor of the broadcast shape ``(..., A)`` (NOT summed).
        """
        _check_has_event(self.loc, type(self).__name__)
        _check_event(x, self.loc.shape[-1], "x")
        z = (x - self.loc) / self.scale
        return -0.5 * z * z - torch.log(self.scale) - _HALF_LOG_2PI

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of action vectors, **summed over the last axis**.

        Args:
          x: float tensor ``(..., A)`` broadcastable with ``loc``.

        Returns:
          Tensor of the broadcast shape without the last axis.
        """
        return self.log_prob_elementwise(x).sum(-1)

    def entropy_elementwise(self) -> torch.Tensor:
        """Per-dimension entropy ``0.5 + 0.5 log(2 pi) + log scale``, shape ``loc.shape``."""
        _check_has_event(self.loc, type(self).__name__)
        return 0.5 + _HALF_LOG_2PI + torch.log(self.scale)

    def entropy(self) -> torch.Tensor:
        """Entropy of the action vector (summed over the last axis), shape ``loc.shape[:-1]``."""
        return self.entropy_elementwise().sum(-1)

    def kl_elementwise(self, other: "Normal") -> torch.Tensor:
        """Per-dimension ``KL(self_i || other_i)``, shape: broadcast of both ``loc`` shapes."""
        if not isinstance(other, Normal):
            raise TypeError(f"other: expected a Normal, got {type(other).__name__}")
        _check_has_event(self.loc, type(self).__name__)
        _check_event(other.loc, self.loc.shape[-1], "other.loc")
        var_ratio = (self.scale / other.scale) ** 2
        t = ((self.loc - other.loc) / other.scale) ** 2
        return 0.5 * (var_ratio + t - 1.0 - torch.log(var_ratio))

    def kl(self, other: "Normal") -> torch.Tensor:
        """``KL(self || other)`` of the action vectors, summed over the last axis."""
        return self.kl_elementwise(other).sum(-1)

    # -- moments
    def mode(self) -> torch.Tensor:
        """``loc``."""
        return self.loc

    def mean(self) -> torch.Tensor:
        """``loc``."""
        return self.loc

    def stddev(self) -> torch.Tensor:
        """``scale``."""
        return self.scale

    def variance(self) -> torch.Tensor:
        """``scale ** 2``."""
        return self.scale * self.scale


# -------------------------------------------------------------------- TanhNormal
def _log_det_tanh(u: torch.Tensor) -> torch.Tensor:
    """``log(1 - tanh(u)^2)`` computed stably as ``2 (log 2 - u - softplus(-2u))``."""
    return 2.0 * (_LOG_2 - u - ops.softplus(-2.0 * u))


class TanhNormal(_LocScale):
    """``tanh`` of a diagonal Gaussian: SAC's squashed policy, values in ``(-1, 1)``.

    Args:
      loc, scale: float tensors ``(..., A)`` of one shape and dtype: the
        parameters of the *pre-squash* Gaussian ``u ~ N(loc, scale)``;
        the action is ``tanh(u)``.

    Log-densities are summed over the last axis and include the change of
    variables ``-sum_i log(1 - tanh(u_i)^2)``, computed stably as
    ``-2 (log 2 - u - softplus(-2u))``.  Rescale to an action box yourself
    (``low + (a + 1) * (high - low) / 2`` adds ``-sum log((high - low) / 2)``).

    There is no closed-form entropy, KL or mean: :meth:`entropy` raises
    ``NotImplementedError``; use :meth:`entropy_estimate` (Monte Carlo).
    """

    __slots__ = ()

    def __new__(cls, loc, scale):
        return _new_loc_scale(cls, _LocScale, loc, scale)

    @property
    def base(self) -> Normal:
        """The pre-squash :class:`Normal`."""
        return Normal(self.loc, self.scale)

    def sample(self, key: torch.Tensor, shape: Sequence[int] = ()) -> torch.Tensor:
        """Reparameterised squashed sample ``tanh(loc + scale * eps)``.

        Returns:
          Tensor ``shape + loc.shape`` in ``[-1, 1]`` (float rounding can reach
          the bounds for ``|u| > ~9`` in float32).
        """
        return torch.tanh(self.base.sample(key, shape))

    def sample_and_log_prob(self, key: torch.Tensor, shape: Sequence[int] = ()):
        """``(a, log_prob(a))`` computed from the pre-squash sample ``u``.

        This is the form SAC needs: it never inverts ``tanh``, so it stays
        exact when ``a`` rounds to ``+-1``.  Both outputs are differentiable
        with respect to ``loc`` and ``scale`` (reparameterisation).

        Returns:
          ``a`` of shape ``shape + loc.shape`` and its log-density of shape
          ``shape + loc.shape[:-1]`` (summed over the last axis).
        """
        _check_has_event(self.loc, type(self).__name__)
        eps = self.base._eps(key, shape)
        u = self.loc + self.scale * eps
        lp_u = -0.5 * eps * eps - torch.log(self.scale) - _HALF_LOG_2PI
        return torch.tanh(u), (lp_u - _log_det_tanh(u)).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of squashed actions, summed over the last axis.

        Args:
          x: float tensor ``(..., A)`` broadcastable with ``loc``, values in
            ``(-1, 1)``.  Values are clamped to ``[-1 + eps, 1 - eps]``
            (``eps = torch.finfo(x.dtype).eps``) before ``atanh``, so actions at
            or beyond the bounds give the finite log-density of the clamped
            value (and zero gradient with respect to ``x``) instead of ``inf``/NaN.

        Returns:
          Tensor of the broadcast shape without the last axis.
        """
        _check_has_event(self.loc, type(self).__name__)
        _check_event(x, self.loc.shape[-1], "x")
        bound = 1.0 - torch.finfo(x.dtype).eps
        u = ops.atanh(torch.clamp(x, -bound, bound))
        return (self.base.log_prob_elementwise(u) - _log_det_tanh(u)).sum(-1)

    def entropy_estimate(self, key: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Monte-Carlo entropy ``-mean_n log p(a_n)`` over ``num_samples`` draws.

        Unbiased; differentiable with respect to ``loc``/``scale`` through the
        reparameterised samples.  Returns shape ``loc.shape[:-1]``.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples: expected an int >= 1, got {num_samples!r}")
        _, lp = self.sample_and_log_prob(key, (num_samples,))
        return -lp.mean(0)

    def entropy(self) -> torch.Tensor:
        """Not available in closed form: raises ``NotImplementedError``.

        Use :meth:`entropy_estimate` (SAC uses ``-log_prob`` of the sampled
        action, i.e. ``entropy_estimate`` with one sample).
        """
        raise NotImplementedError(
            "TanhNormal.entropy: no closed form; use entropy_estimate(key, num_samples) "
            "or -log_prob of sampled actions"
        )

    def mode(self) -> torch.Tensor:
        """``tanh(loc)``: the squashed Gaussian mode, the usual deterministic action.

        (The density of ``tanh(u)`` peaks elsewhere when ``scale`` is large;
        ``tanh(loc)`` is what SAC evaluates with.)
        """
        return torch.tanh(self.loc)


# --------------------------------------------------------------------- Bernoulli
class _BernoulliParams(NamedTuple):
    logits: torch.Tensor


class Bernoulli(_BernoulliParams):
    """Independent Bernoulli variables with ``P(x = 1) = sigmoid(logits)``.

    Args:
      logits: float tensor ``(...)``; every element is its own variable
      (no event axis: ``log_prob`` and ``entropy`` are elementwise).
    """

    __slots__ = ()

    @property
    def probs(self) -> torch.Tensor:
        """``sigmoid(logits)``."""
        return ops.sigmoid(check_float(self.logits, "logits"))

    def sample(self, key: torch.Tensor, shape: Sequence[int] = ()) -> torch.Tensor:
        """Draws as a bool tensor ``shape + logits.shape`` (via :func:`funrl.random.bernoulli`)."""
        shape = _sample_shape(shape)
        return _random.bernoulli(key, self.probs, shape + tuple(self.logits.shape))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``x log p + (1 - x) log(1 - p)`` elementwise, computed from logits.

        Args:
          x: bool, integer or float tensor broadcastable with ``logits``
            (float values in ``[0, 1]`` give the soft-label cross-entropy).
        """
        check_tensor(x, "x")
        check_float(self.logits, "logits")
        xf = x.to(self.logits.dtype)
        return xf * self.logits - ops.softplus(self.logits)

    def entropy(self) -> torch.Tensor:
        """Elementwise entropy in nats, shape ``logits.shape``."""
        p = self.probs
        return p * ops.softplus(-self.logits) + (1.0 - p) * ops.softplus(self.logits)

    def mode(self) -> torch.Tensor:
        """``logits > 0`` (bool; ties at ``p = 0.5`` give False)."""
        return check_float(self.logits, "logits") > 0

    def kl(self, other: "Bernoulli") -> torch.Tensor:
        """Elementwise ``KL(self || other)``."""
        if not isinstance(other, Bernoulli):
            raise TypeError(f"other: expected a Bernoulli, got {type(other).__name__}")
        p = self.probs
        check_float(other.logits, "other.logits")
        # log p - log q = softplus(-lq) - softplus(-lp), likewise for 1 - p
        pos = ops.softplus(-other.logits) - ops.softplus(-self.logits)
        neg = ops.softplus(other.logits) - ops.softplus(self.logits)
        return p * pos + (1.0 - p) * neg


# ----------------------------------------------------------------- Deterministic
class _DeterministicParams(NamedTuple):
    value: torch.Tensor


class Deterministic(_DeterministicParams):
    """Point mass at ``value`` (e.g. a DDPG/TD3 actor's output), elementwise.

    Args:
      value: tensor ``(...)`` of any dtype.
    """

    __slots__ = ()

    def sample(self, key: torch.Tensor, shape: Sequence[int] = ()) -> torch.Tensor:
        """``value`` broadcast to ``shape + value.shape`` (the key is validated, then unused)."""
        _random._check_key(key)
        shape = _sample_shape(shape)
        return self.value.expand(shape + tuple(self.value.shape))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``0`` where ``x == value``, ``-inf`` elsewhere (float32, or value's float dtype)."""
        check_tensor(x, "x")
        dtype = self.value.dtype if self.value.is_floating_point() else torch.float32
        zero = torch.zeros((), dtype=dtype, device=self.value.device)
        return torch.where(x == self.value, zero, torch.full_like(zero, -math.inf))

    def entropy(self) -> torch.Tensor:
        """Zeros of ``value``'s shape (float)."""
        dtype = self.value.dtype if self.value.is_floating_point() else torch.float32
        return torch.zeros(self.value.shape, dtype=dtype, device=self.value.device)

    def mode(self) -> torch.Tensor:
        """``value``."""
        return self.value
