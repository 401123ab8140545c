"""Statistics for reporting results across seeds (rliable-style).

Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS 2021) recommend the interquartile mean (IQM) with
bootstrap confidence intervals over independent runs instead of the mean (too
sensitive to outliers) or the median (too noisy with few runs).

This is reporting code that runs outside training, in numpy float64.  Inputs
may be torch tensors (any device), numpy arrays or (nested) lists.  The
bootstrap uses its own ``numpy.random.Generator(seed)`` so results are
deterministic given ``seed`` and neither torch's nor numpy's global RNG is
touched.

Conventions: axis 0 of ``x`` indexes independent runs (seeds); any further axes
(episodes, tasks) are extra scores of the same run.  Aggregates (:func:`iqm`
inside :func:`bootstrap_ci` and :func:`summarize`) pool all scores, as rliable
does for its aggregate IQM; the bootstrap resamples whole runs.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["iqm", "bootstrap_ci", "summarize"]


def _as_array(x, name: str = "x") -> np.ndarray:
    """float64 numpy copy of ``x`` with clear errors for empty / NaN / ragged input."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            if x.is_complex():
                raise TypeError(f"{name}: expected real scores, got a complex tensor ({x.dtype})")
            x = x.detach().to("cpu", torch.float64).numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        a = np.asarray(x)
    except ValueError as e:  # ragged nested lists
        raise ValueError(
            f"{name}: expected a rectangular array of scores (equal length per seed), got ragged input ({e})"
        ) from None
    if a.dtype == object or a.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected real numeric scores, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one score, got an empty array of shape {a.shape}")
    bad = ~np.isfinite(a)
    if bad.any():
        n_nan = int(np.isnan(a).sum())
        n_inf = int(bad.sum()) - n_nan
        raise ValueError(
            f"{name}: expected finite scores, got {n_nan} NaN and {n_inf} infinite value(s) "
            f"in an array of shape {a.shape}"
        )
    return a


def _iqm_last_axis(a: np.ndarray) -> np.ndarray:
    n = a.shape[-1]
    # scipy.stats.trim_mean(a, 0.25): drop int(0.25 * n) values from each end
    cut = int(0.25 * n)
    s = np.sort(a, axis=-1)
    return s[..., cut : n - cut].mean(axis=-1)


def iqm(x, axis: int | None = -1):
    """Interquartile mean: the mean of the middle 50% of the scores.

    Exactly rliable's definition, ``scipy.stats.trim_mean(x, 0.25, axis)``:
    sort, drop ``floor(n / 4)`` scores from each end, average the rest (so
    for ``n < 4`` nothing is dropped and the IQM is the mean).

    Args:
      x: scores (tensor, array or list), finite.
      axis: the axis to reduce; ``None`` pools all scores (flattened runs).

    Returns:
      A Python ``float`` when the result is a scalar, else a float64 numpy
      array with ``axis`` removed.

    Raises:
      ValueError: empty input, NaN/inf values, ragged lists, or a bad ``axis``.
    """
    a = _as_array(x)
    if axis is None:
        a = a.reshape(-1)
        axis = -1
    if isinstance(axis, bool) or not isinstance(axis, int) or not -max(a.ndim, 1) <= axis < max(a.ndim, 1):
        raise ValueError(f"axis: expected None or an int in [-{max(a.ndim, 1)}, {max(a.ndim, 1)}), got {axis!r}")
    if a.ndim == 0:
        return float(a)
    out = _iqm_last_axis(np.moveaxis(a, axis, -1))
    return float(out) if out.ndim == 0 else out


def bootstrap_ci(
    x,
    statistic: Callable = iqm,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval over runs (seeds).

    Each resample draws ``num_seeds`` runs with replacement (whole rows of
    ``x``), pools their scores and applies ``statistic``; the interval is the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    resampled statistics (numpy's linear interpolation).

    Args:
      x: scores of shape ``(num_seeds,)`` or ``(num_seeds, ...)`` (extra axes:
        several scores per run, e.g. evaluation episodes).
      statistic: a numpy-style reduction called as ``statistic(a, axis=-1)``
        on ``a`` of shape ``(chunk, num_scores)``, returning ``(chunk,)``;
        :func:`iqm` (default), ``np.mean`` and ``np.median`` qualify.
      confidence: in ``(0, 1)``.
      num_resamples: number of bootstrap resamples (int >= 1).
      seed: int seed of the private ``numpy.random.Generator``; same seed,
        same interval.

    Returns:
      ``(low, high)`` as Python floats.
    """
    a = _as_array(x)
    if not callable(statistic):
        raise TypeError(f"statistic: expected a callable, got {type(statistic).__name__}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 1:
        raise ValueError(f"num_resamples: expected an int >= 1, got {num_resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    if a.ndim == 0:
        a = a.reshape(1)
    num_seeds = a.shape[0]
    runs = a.reshape(num_seeds, -1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num_seeds, size=(num_resamples, num_seeds))
    # chunk so that a large (runs x scores) table never builds one huge array
    per_resample = runs.size
    chunk = max(1, min(num_resamples, 4_000_000 // per_resample))
    stats = []
    for start in range(0, num_resamples, chunk):
        sample = runs[idx[start : start + chunk]].reshape(-1, per_resample)
        s = np.asarray(statistic(sample, axis=-1), dtype=np.float64)
        if s.shape != (sample.shape[0],):
            raise ValueError(
                f"statistic: expected a reduction over axis=-1 returning shape ({sample.shape[0]},), "
                f"got shape {s.shape}"
            )
        stats.append(s)
    stats = np.concatenate(stats)
    alpha = 1.0 - float(confidence)
    low, high = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def summarize(
    returns_per_seed,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """Summary statistics of final returns across seeds.

    Args:
      returns_per_seed: scores of shape ``(num_seeds,)`` or
        ``(num_seeds, num_episodes)``; statistics pool all scores.
      confidence, num_resamples, seed: passed to :func:`bootstrap_ci`.

    Returns:
      dict of Python numbers: ``iqm``, ``ci_low``, ``ci_high`` (bootstrap CI
      of the IQM over seeds), ``mean``, ``std`` (population std, ``ddof=0``),
      ``median``, ``min``, ``max``, ``num_seeds`` (int).
    """
    a = _as_array(returns_per_seed, "returns_per_seed")
    if a.ndim == 0:
        a = a.reshape(1)
    flat = a.reshape(-1)
    low, high = bootstrap_ci(a, iqm, confidence=confidence, num_resamples=num_resamples, seed=seed)
    return {
        "iqm": iqm(flat),
        "ci_low": low,
        "ci_high": high,
        "mean": float(flat.mean()),
        "std": float(flat.std()),
        "median": float(np.median(flat)),
        "min": float(flat.min()),
        "max": float(flat.max()),
        "num_seeds": int(a.shape[0]),
    }
