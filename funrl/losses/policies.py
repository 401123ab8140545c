"""Discrete action-selection policies as plain tensor functions (rlax's distributions).

rlax builds ``greedy()``, ``epsilon_greedy()`` and ``softmax()`` objects holding
``sample``, ``probs``, ``logprob`` and ``entropy`` closures; here each is a flat
function (``epsilon_greedy_probs``, ``softmax_sample``, ...).  Preferences live
on the last axis, any leading axes are batch axes, and every sampler takes one
funrl key (``funrl.random.key``), so ``vmap(sample)(keys, ...)`` is reproducible
row by row.  ``epsilon`` and ``temperature`` may be Python numbers or tensors
(e.g. a per-seed schedule under vmap).
"""

from __future__ import annotations

import torch

from funrl import random as frandom
from funrl._checks import check_float, check_int
from funrl.losses.base import batched_index

__all__ = [
    "greedy_probs",
    "greedy_sample",
    "greedy_log_prob",
    "epsilon_greedy_probs",
    "epsilon_greedy_sample",
    "epsilon_greedy_log_prob",
    "softmax_probs",
    "softmax_sample",
    "softmax_log_prob",
    "softmax_entropy",
]


def _check_prefs(x, name):
    check_float(x, name)
    if x.ndim == 0:
        raise ValueError(f"{name}: expected shape (..., num_actions), got shape ()")
    return x


def _hyper(value, name, ref, low=None, high=None, positive=False):
    """A float hyper-parameter as a tensor that broadcasts against ``ref[..., :]``."""
    if isinstance(value, torch.Tensor):
        check_float(value, name)
        batch = tuple(ref.shape[:-1])
        if value.ndim > len(batch) or tuple(value.shape) != batch[len(batch) - value.ndim:]:
            raise ValueError(
                f"{name}: expected shape () or a suffix of the batch shape {batch}, got {tuple(value.shape)}"
            )
        return value.to(ref.dtype).unsqueeze(-1)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a float or a float tensor, got {type(value).__name__}")
    if positive and value <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value}")
    if low is not None and not low <= value <= high:
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {value}")
    return torch.as_tensor(value, dtype=ref.dtype, device=ref.device)


def _check_sample(sample, prefs, name_prefs):
    check_int(sample, "sample")
    if tuple(sample.shape) != tuple(prefs.shape[:-1]):
        raise ValueError(
            f"sample: expected shape {tuple(prefs.shape[:-1])} (the batch shape of {name_prefs} "
            f"{tuple(prefs.shape)}), got {tuple(sample.shape)}"
        )


def greedy_probs(q_values: torch.Tensor) -> torch.Tensor:
    """Greedy policy probabilities; ties share the mass equally.

    Args:
      q_values: float ``[..., A]`` action preferences.

    Returns:
      float ``[..., A]``: ``1/k`` on each of the ``k`` maximising actions, 0 elsewhere.
    """
    _check_prefs(q_values, "q_values")
    best = (q_values == torch.amax(q_values, dim=-1, keepdim=True)).to(q_values.dtype)
    return best / torch.sum(best, dim=-1, keepdim=True)


def greedy_sample(key: torch.Tensor, q_values: torch.Tensor) -> torch.Tensor:
    """A greedy action, ties broken uniformly at random.

    Args:
      key: a funrl key ``(2,)``.
      q_values: float ``[..., A]`` action preferences.

    Returns:
      int64 ``[...]`` actions.
    """
    return frandom.categorical(key, torch.log(greedy_probs(q_values)))


def greedy_log_prob(sample: torch.Tensor, q_values: torch.Tensor) -> torch.Tensor:
    """Log-probability of ``sample`` under :func:`greedy_probs` (``-inf`` off the argmax).

    Args:
      sample: integer ``[...]`` actions.
      q_values: float ``[..., A]``.

    Returns:
      float ``[...]``.
    """
    _check_prefs(q_values, "q_values")
    _check_sample(sample, q_values, "q_values")
    return batched_index(torch.log(greedy_probs(q_values)), sample)


def epsilon_greedy_probs(q_values: torch.Tensor, epsilon: float | torch.Tensor) -> torch.Tensor:
    """Epsilon-greedy probabilities ``(1 - eps) * greedy + eps / A``.

    Args:
      q_values: float ``[..., A]`` action preferences.
      epsilon: exploration rate in ``[0, 1]``: a Python float or a float tensor
        of shape ``()`` or of the batch shape ``[...]`` (values outside
        ``[0, 1]`` in a tensor are not checked and give invalid probabilities).

    Returns:
      float ``[..., A]`` probabilities summing to 1.
    """
    _check_prefs(q_values, "q_values")
    eps = _hyper(epsilon, "epsilon", q_values, 0.0, 1.0)
    num_actions = q_values.shape[-1]
    return (1.0 - eps) * greedy_probs(q_values) + eps / num_actions


def epsilon_greedy_sample(key: torch.Tensor, q_values: torch.Tensor, epsilon: float | torch.Tensor) -> torch.Tensor:
    """An epsilon-greedy action (greedy ties broken uniformly at random).

    Args:
      key: a funrl key ``(2,)``.
      q_values: float ``[..., A]``.
      epsilon: exploration rate in ``[0, 1]`` (see :func:`epsilon_greedy_probs`).

    Returns:
      int64 ``[...]`` actions.
    """
    return frandom.categorical(key, torch.log(epsilon_greedy_probs(q_values, epsilon)))


def epsilon_greedy_log_prob(
    sample: torch.Tensor, q_values: torch.Tensor, epsilon: float | torch.Tensor
) -> torch.Tensor:
    """Log-probability of ``sample`` under :func:`epsilon_greedy_probs`.

    Args:
      sample: integer ``[...]`` actions.
      q_values: float ``[..., A]``.
      epsilon: exploration rate in ``[0, 1]``.

    Returns:
      float ``[...]``.
    """
    _check_prefs(q_values, "q_values")
    _check_sample(sample, q_values, "q_values")
    return batched_index(torch.log(epsilon_greedy_probs(q_values, epsilon)), sample)


def softmax_probs(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Boltzmann probabilities ``softmax(logits / temperature)``.

    Args:
      logits: float ``[..., A]`` action preferences.
      temperature: ``> 0``, a Python float or a float tensor of shape ``()`` or ``[...]``.

    Returns:
      float ``[..., A]``.
    """
    _check_prefs(logits, "logits")
    return torch.softmax(logits / _hyper(temperature, "temperature", logits, positive=True), dim=-1)


def softmax_sample(key: torch.Tensor, logits: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """An action from ``softmax(logits / temperature)`` (Gumbel-max on the key).

    Args:
      key: a funrl key ``(2,)``.
      logits: float ``[..., A]``.
      temperature: ``> 0``.

    Returns:
      int64 ``[...]`` actions.
    """
    _check_prefs(logits, "logits")
    return frandom.categorical(key, logits / _hyper(temperature, "temperature", logits, positive=True))


def softmax_log_prob(
    sample: torch.Tensor, logits: torch.Tensor, temperature: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """``log softmax(logits / temperature)[sample]`` (rlax's ``softmax().logprob``).

    Args:
      sample: integer ``[...]`` actions in ``[0, A)``.
      logits: float ``[..., A]``.
      temperature: ``> 0``.

    Returns:
      float ``[...]``.
    """
    _check_prefs(logits, "logits")
    _check_sample(sample, logits, "logits")
    t = _hyper(temperature, "temperature", logits, positive=True)
    return batched_index(torch.log_softmax(logits / t, dim=-1), sample)


def softmax_entropy(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Entropy of ``softmax(logits / temperature)`` in nats.

    Args:
      logits: float ``[..., A]``.
      temperature: ``> 0``.

    Returns:
      float ``[...]``.
    """
    _check_prefs(logits, "logits")
    t = _hyper(temperature, "temperature", logits, positive=True)
    log_p = torch.log_softmax(logits / t, dim=-1)
    return -torch.sum(torch.exp(log_p) * log_p, dim=-1)
