"""Learning curves across seeds: IQM with a 95% bootstrap band, several runs overlaid.

A sweep run (see :mod:`funrl.sweeps`) gives one curve per setting, over that setting's seeds.

matplotlib is an optional extra (``pip install funrl[plot]``); importing this
module without it raises an ImportError that says so.
"""

from __future__ import annotations

import os

import numpy as np

from funrl import stats, sweeps
from funrl.results import load_run

__all__ = ["curve_with_ci", "learning_curves", "plot_runs"]


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


def learning_curves(directories: list[str], metric: str = "episode_return") -> list[dict]:
    """The curves :func:`plot_runs` draws: one per results folder, or one per setting of a sweep run.

    Args:
      directories: results folders written by ``funrl train`` / ``funrl.run``.
      metric: the metrics.csv column.  For ``episode_return``, an update in which a
        seed finished no episode carries that seed's previous value forward, and
        updates before every seed of the curve finished one are left out.

    Returns:
      one dict per curve: ``label``, ``env``, ``directory``, ``values`` (dict of the
      setting, None outside a sweep), ``seeds`` (the seed indices it pools),
      ``x`` (env steps per seed ``[U']``) and ``iqm``, ``low``, ``high`` ``[U']``
      (:func:`curve_with_ci` across its seeds).
    """
    curves = []
    for d in directories:
        run = load_run(d)
        if metric not in run["metrics"]:
            raise ValueError(f"metric: {metric!r} is not in {d}/metrics.csv (columns: {list(run['metrics'])})")
        values = run["metrics"][metric].numpy()
        episodes = run["metrics"].get("episodes")
        x_all = run["env_steps"].numpy()
        carry = episodes is not None and metric == "episode_return"
        if carry:
            # updates with no finished episode report 0: carry the last value forward instead
            ep = episodes.numpy()
            values = values.copy()
            for s in range(values.shape[0]):
                last = np.nan
                for u in range(values.shape[1]):
                    if ep[s, u] > 0:
                        last = values[s, u]
                    values[s, u] = last
        cfg = run["config"]
        name = os.path.basename(os.path.normpath(d))
        groups = sweeps.setting_groups(cfg) or [{"values": None, "seeds": list(range(values.shape[0]))}]
        for g in groups:
            v, x = values[g["seeds"]], x_all  # [seeds of the curve, updates]
            if carry:
                keep = ~np.isnan(v).any(axis=0)
                v, x = v[:, keep], x[keep]
            if len(x) == 0:
                continue
            center, low, high = curve_with_ci(v)
            what = cfg["algo"] if g["values"] is None else f"{cfg['algo']} {sweeps.setting_label(g['values'])}"
            curves.append({"label": f"{what} ({len(g['seeds'])} seeds) — {name}", "env": cfg["env"], "directory": d,
                           "values": g["values"], "seeds": g["seeds"], "x": x, "iqm": center, "low": low, "high": high})
    return curves


def plot_runs(directories: list[str], out_file: str, metric: str = "episode_return", title: str | None = None) -> str:
    """Plot the learning curves of results folders (IQM ± 95% CI across seeds) into ``out_file``.

    One curve per folder, or per setting of a sweep run (see :func:`learning_curves`).

    Args:
      directories: results folders written by ``funrl train`` / ``funrl.run``.
      out_file: PNG path (written atomically).
      metric: the metrics.csv column to plot.
      title: figure title (default: the env ids).

    Returns:
      ``out_file``.
    """
    plt = _require_matplotlib()
    curves = learning_curves(directories, metric)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    envs = []
    for c in curves:
        (line,) = ax.plot(c["x"], c["iqm"], label=c["label"], linewidth=1.6)
        ax.fill_between(c["x"], c["low"], c["high"], color=line.get_color(), alpha=0.25, linewidth=0)
        envs.append(c["env"])
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
