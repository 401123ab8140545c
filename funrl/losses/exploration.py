"""Noise-based exploration for continuous actions (rlax's ``exploration``).

Every function takes one funrl key; batch over actors with ``torch.func.vmap``
(``vmap(f)(keys, ...)[i] == f(keys[i], ...)`` bit for bit).
"""

from __future__ import annotations

import torch

from funrl import random as frandom
from funrl._checks import check_float, check_rank, check_same_shape

__all__ = ["add_gaussian_noise", "ornstein_uhlenbeck_noise", "add_ornstein_uhlenbeck_noise"]


def _check_scale(value, name, low=0.0, high=None):
    if isinstance(value, torch.Tensor):
        check_float(value, name)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float or a float tensor, got {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name}: expected a number {bound}, got {value}")


def add_gaussian_noise(key: torch.Tensor, action: torch.Tensor, stddev: float | torch.Tensor) -> torch.Tensor:
    """``action + stddev * N(0, I)``.

    Args:
      key: a funrl key ``(2,)``.
      action: float tensor, any shape (a scalar or a vector action).
      stddev: noise standard deviation ``>= 0``: a float or a float tensor
        broadcastable to ``action``.

    Returns:
      float tensor of ``action``'s shape and dtype.
    """
    check_float(action, "action")
    _check_scale(stddev, "stddev")
    noise = frandom.normal(key, tuple(action.shape), dtype=action.dtype)
    return action + noise * stddev


def ornstein_uhlenbeck_noise(
    key: torch.Tensor, noise_tm1: torch.Tensor, damping: float | torch.Tensor, stddev: float | torch.Tensor
) -> torch.Tensor:
    """One step of the discretised Ornstein-Uhlenbeck process used for exploration.

    ``noise_t = (1 - damping) * noise_tm1 + stddev * N(0, I)``.  Carry
    ``noise_t`` to the next step; :func:`add_ornstein_uhlenbeck_noise` adds the
    same quantity to an action.

    Args:
      key: a funrl key ``(2,)``.
      noise_tm1: float ``[D]`` noise of the previous step (zeros at episode start).
      damping: autocorrelation control in ``[0, 1]`` (0 = random walk, 1 = white noise).
      stddev: standard deviation of the innovation ``>= 0``.

    Returns:
      float ``[D]`` noise at time t.
    """
    check_rank(noise_tm1, 1, "noise_tm1")
    check_float(noise_tm1, "noise_tm1")
    _check_scale(damping, "damping", 0.0, 1.0)
    _check_scale(stddev, "stddev")
    innovation = frandom.normal(key, tuple(noise_tm1.shape), dtype=noise_tm1.dtype)
    return (1.0 - damping) * noise_tm1 + innovation * stddev


def add_ornstein_uhlenbeck_noise(
    key: torch.Tensor,
    action: torch.Tensor,
    noise_tm1: torch.Tensor,
    damping: float | torch.Tensor,
    stddev: float | torch.Tensor,
) -> torch.Tensor:
    """``action + noise_t`` with ``noise_t = ornstein_uhlenbeck_noise(key, noise_tm1, damping, stddev)``.

    As in rlax only the noisy action is returned; to carry the process forward
    call :func:`ornstein_uhlenbeck_noise` with the same key (it returns exactly
    the ``noise_t`` added here).  See "On the Theory of the Brownian Motion" by
    Uhlenbeck and Ornstein (1930).

    Args:
      key: a funrl key ``(2,)``.
      action: float ``[D]`` continuous action.
      noise_tm1: float ``[D]`` noise of the previous step.
      damping: in ``[0, 1]``.
      stddev: ``>= 0``.

    Returns:
      float ``[D]`` noisy action.
    """
    check_rank(action, 1, "action")
    check_float(action, "action")
    check_rank(noise_tm1, 1, "noise_tm1")
    check_same_shape({"noise_tm1": noise_tm1, "action": action}, reference="action")
    return action + ornstein_uhlenbeck_noise(key, noise_tm1, damping, stddev)
