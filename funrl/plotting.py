"""Learning curves across seeds: IQM with a 95% bootstrap band, several runs overlaid.

matplotlib is an optional extra (``pip install funrl[plot]``); importing this
module without it raises an ImportError that says so.
"""

from __future__ import annotations

import os

import numpy as np

from funrl import stats
from funrl.results import load_run

__all__ = ["curve_with_ci", "plot_runs"]


def _require_matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - exercised by test with a blocked import
        raise ImportError(
            "funrl plot needs matplotlib: pip install 'funrl[plot]' (or pip install matplotlib)"
        ) from e
    return plt


def curve_with_ci(returns: np.ndarray, confidence: float = 0.95, num_resamples: int = 1000, seed: int = 0):
    """IQM across seeds at every point of a learning curve, with a percentile-bootstrap band.

    Args:
      returns: float ``[S, U]`` (seeds x updates, as funrl's metrics are everywhere).
      confidence: band coverage.
      num_resamples: bootstrap resamples of the seeds.
      seed: bootstrap seed (a private numpy Generator; no global RNG is touched).

    Returns:
      ``(iqm [U], low [U], high [U])``.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"returns: expected shape [seeds, updates], got {r.shape}")
    S, U = r.shape
    center = stats.iqm(r, axis=0)
    if S == 1:
        return center, center, center
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, S, size=(num_resamples, S))
    boot = stats.iqm(r.T[:, idx], axis=-1)  # [U, R]
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha], axis=-1)
    return center, low, high


def plot_runs(directories: list[str], out_file: str, metric: str = "episode_return", title: str | None = None) -> str:
    """Plot one learning curve per results folder (IQM ± 95% CI across seeds) into ``out_file``.

    Args:
      directories: results folders written by ``funrl train`` / ``funrl.run``.
      out_file: PNG path (written atomically).
      metric: the metrics.csv column to plot.
      title: figure title (default: the env ids).

    Returns:
      ``out_file``.
    """
    plt = _require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    envs = []
    for d in directories:
        run = load_run(d)
        if metric not in run["metrics"]:
            raise ValueError(f"metric: {metric!r} is not in {d}/metrics.csv (columns: {list(run['metrics'])})")
        values = run["metrics"][metric].numpy()
        episodes = run["metrics"].get("episodes")
        x = run["env_steps"].numpy()
        if episodes is not None and metric == "episode_return":
            # updates with no finished episode report 0: carry the last value forward instead
            ep = episodes.numpy()
            values = values.copy()
            for s in range(values.shape[0]):
                last = np.nan
                for u in range(values.shape[1]):
                    if ep[s, u] > 0:
                        last = values[s, u]
                    values[s, u] = last
            keep = ~np.isnan(values).any(axis=0)
            values, x = values[:, keep], x[keep]
        if len(x) == 0:
            continue
        center, low, high = curve_with_ci(values)
        cfg = run["config"]
        label = f"{cfg['algo']} ({cfg['seeds']} seeds) — {os.path.basename(os.path.normpath(d))}"
        (line,) = ax.plot(x, center, label=label, linewidth=1.6)
        ax.fill_between(x, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
        envs.append(cfg["env"])
    ax.set_xlabel("environment steps per seed")
    ax.set_ylabel(f"{metric.replace('_', ' ')} (IQM, 95% bootstrap CI)")
    ax.set_title(title or ", ".join(sorted(set(envs))))
    ax.grid(alpha=0.3)
    if envs:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    tmp = out_file + ".tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out_file)
    return out_file
