"""Hyper-parameter sweeps: a grid of settings x seeds trained as one vmapped run.

A sweep names batchable hyper-parameters (an algorithm's ``HYPERPARAMS``) and a
list of values for each, e.g. ``{"learning_rate": [1e-4, 3e-4], "gamma": [0.99,
0.999]}``.  The settings are the Cartesian product in the order given: the first
name varies slowest, as in nested for-loops (``itertools.product``).  Each
setting trains ``seeds`` seeds, and all ``len(settings) * seeds`` seeds train
together as one run whose per-seed ``hparams`` carry each seed's setting.

Seed order is setting-major: global seed ``i`` belongs to setting ``i // seeds``
and, as in any run, trains with ``fold_in(key(seed), i)``.  So setting ``k``'s
seeds are ``k * seeds ... k * seeds + seeds - 1``, and no two settings share a
key (their seeds are as independent as any two seeds of one run).

Only batchable hyper-parameters can be swept: they are per-seed tensors in the
training state.  Fields such as ``hidden_sizes``, ``num_envs`` or
``num_steps`` change array shapes (or the program), so settings of them cannot
be vmapped together; run those as separate runs.

The results folder records the sweep in config.json (``"sweep"``: the grid and
``seeds_per_setting``, see :func:`sweep_record`), so resume, summary.json's
``"settings"`` and ``funrl plot`` know the groups.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from typing import Callable

from funrl import stats
from funrl.algorithms.common import check_hparams

__all__ = ["parse_sweep_args", "check_single_values", "expand_grid", "check_sweep", "sweep_hparams", "sweep_record", "plan",
           "setting_groups", "setting_label", "summarize_settings", "same_grid", "describe"]


def parse_sweep_args(items: list[str], flag: str = "--sweep") -> dict[str, list[str]]:
    """``["learning_rate=1e-4,3e-4", ...]`` (command-line items) as ``{"learning_rate": ["1e-4", "3e-4"]}``.

    Names are normalised like ``--set`` names (``-`` becomes ``_``); values stay
    strings (see :func:`check_sweep` for their types).

    Raises:
      ValueError: an item without ``=``, without values, or a name given twice (naming ``flag`` and the item).
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{flag}: expected NAME=V1,V2,..., got {item!r}")
        name, text = item.split("=", 1)
        name = name.strip().replace("-", "_")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not name or not values:
            raise ValueError(f"{flag}: expected NAME=V1,V2,... with at least one value, got {item!r}")
        if name in grid:
            raise ValueError(f"{flag} {name}: given twice; list all its values in one {flag} {name}=V1,V2,...")
        grid[name] = values
    return grid


def check_single_values(module, overrides: dict, flag: str = "--set") -> None:
    """Raise for a batchable field given several comma-separated values where one is expected.

    Args:
      module: the algorithm module (its ``HYPERPARAMS``).
      overrides: field -> value as given (command-line strings).

    Raises:
      ValueError: naming the field and pointing to ``--sweep``.
    """
    for k, v in overrides.items():
        if k in getattr(module, "HYPERPARAMS", ()) and isinstance(v, str) and "," in v:
            raise ValueError(f"{flag} {k}: expected one value, got {v!r}; use --sweep {k}={v} for several values "
                             f"(one run that trains every value x --seeds seeds)")


def _check_grid_shape(grid, name: str) -> None:
    if not isinstance(grid, dict) or not grid:
        raise ValueError(f"{name}: expected a non-empty dict name -> list of values, got {grid!r}")
    for k, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or len(values) == 0:
            raise ValueError(f"{name}[{k!r}]: expected a non-empty list of values, got {values!r}")


def expand_grid(grid: dict) -> list[dict]:
    """The settings of a grid: the Cartesian product, the first name varying slowest.

    Args:
      grid: name -> list of values, e.g. ``{"a": [1, 2], "b": [10, 20, 30]}``.

    Returns:
      one dict name -> value per setting, ``prod(len(values))`` of them:
      ``[{"a": 1, "b": 10}, {"a": 1, "b": 20}, {"a": 1, "b": 30}, {"a": 2, "b": 10}, ...]``.

    Raises:
      ValueError: ``grid`` is empty or a value list is empty or not a list.
    """
    _check_grid_shape(grid, "grid")
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def check_sweep(module, config, grid: dict, overrides: dict | None = None, hparams: dict | None = None,
                parse: Callable | None = None, name: str = "sweep") -> dict[str, list]:
    """The grid with typed, checked values; raises on anything a sweep cannot run.

    Args:
      module: the algorithm module (its ``HYPERPARAMS`` and ``Config``).
      config: the resolved Config the sweep starts from (the valid ranges are its checks).
      grid: name -> list of values; values may be strings (command line), parsed with ``parse``.
      overrides: the Config fields set otherwise (``--set``); a swept name among them is an error.
      hparams: per-seed hyper-parameters given otherwise; a sweep replaces them, so any is an error.
      parse: ``parse(field, default, text)`` for string values (``funrl.algorithms.parse_value``).
      name: how errors name the sweep (``"--sweep"`` on the command line).

    Returns:
      name -> list of float values, in the order given.

    Raises:
      ValueError: a name that is not batchable (listing the batchable ones), a name also
        in ``overrides``, any ``hparams``, a value that does not parse or lies outside the
        field's valid range, or a value repeated within a name.
    """
    _check_grid_shape(grid, name)
    algo = module.__name__.rsplit(".", 1)[-1]
    batchable = tuple(getattr(module, "HYPERPARAMS", ()))
    fields = {f.name: f for f in dataclasses.fields(config)}
    if hparams:
        raise ValueError(f"{name}: cannot be combined with hparams (the sweep sets every seed's hyper-parameters); "
                         f"put those values in the sweep")
    out = {}
    for k, values in grid.items():
        if k not in batchable:
            close = difflib.get_close_matches(k, batchable, n=1)
            what = "not batchable" if k in fields else f"not a {algo} config field"
            what += f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(
                f"{name} {k}: {what}; {algo} can sweep only its batchable hyper-parameters "
                f"({', '.join(batchable) or 'none'}), which differ per seed inside one vmapped run. "
                f"Fields like hidden_sizes or num_envs change array shapes, so their settings cannot be vmapped "
                f"together: run them as separate runs")
        if k in (overrides or {}):
            where = "--set" if name.startswith("--") else "a Config keyword argument"
            raise ValueError(f"{name} {k}: also given as {where} ({k}={overrides[k]!r}); give a swept field only to {name}")
        default = getattr(config, k)
        typed = []
        for v in values:
            if isinstance(v, str):
                if parse is None:
                    raise ValueError(f"{name} {k}: expected numbers, got the string {v!r}")
                try:
                    v = parse(fields[k], default, v)
                except ValueError as e:
                    raise ValueError(f"{name} {k}: {e}") from None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} {k}: expected finite real numbers, got {v!r}")
            typed.append(float(v))
        if len(set(typed)) != len(typed):
            raise ValueError(f"{name} {k}: a value is repeated in {typed}; each setting must differ")
        out[k] = typed
    check_hparams(config, out, name=name)  # the same ranges as --set (e.g. learning_rate > 0)
    return out


def sweep_hparams(grid: dict, seeds: int) -> dict[str, list[float]]:
    """Per-seed hyper-parameters of a sweep, setting-major.

    Args:
      grid: name -> list of values (see :func:`expand_grid`).
      seeds: seeds per setting.

    Returns:
      name -> list of ``len(settings) * seeds`` values; entry ``i`` is setting ``i // seeds``'s value.
    """
    settings = expand_grid(grid)
    return {k: [s[k] for s in settings for _ in range(seeds)] for k in grid}


def sweep_record(grid: dict, seeds: int) -> dict:
    """What config.json records of a sweep: ``grid``, ``seeds_per_setting`` and, for readers, ``settings``.

    ``settings`` lists each setting's ``values`` and ``seeds`` (its global seed indices).
    """
    settings = expand_grid(grid)
    return {
        "grid": {k: list(v) for k, v in grid.items()},
        "seeds_per_setting": seeds,
        "settings": [{"values": s, "seeds": list(range(i * seeds, (i + 1) * seeds))} for i, s in enumerate(settings)],
    }


def _check_seeds(seeds, name: str = "seeds") -> None:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"{name}: expected an int >= 1 (seeds per setting), got {seeds!r}")


def plan(module, config, grid: dict, seeds: int, overrides: dict | None = None, hparams: dict | None = None,
         parse: Callable | None = None, name: str = "sweep") -> tuple[int, dict, dict]:
    """``(total_seeds, hparams, record)`` of a sweep with ``seeds`` seeds per setting (checked by :func:`check_sweep`).

    ``total_seeds`` is ``len(settings) * seeds``; ``hparams`` holds one value per seed
    (:func:`sweep_hparams`); ``record`` is config.json's ``"sweep"`` (:func:`sweep_record`).
    """
    _check_seeds(seeds)
    typed = check_sweep(module, config, grid, overrides, hparams, parse, name)
    record = sweep_record(typed, seeds)
    return len(record["settings"]) * seeds, sweep_hparams(typed, seeds), record


def setting_groups(run_config: dict) -> list[dict] | None:
    """The settings of a results folder's config.json: ``[{"values": {...}, "seeds": [i, ...]}, ...]``.

    Returns:
      None for a run that is not a sweep.

    Raises:
      ValueError: the recorded sweep does not cover exactly the run's ``seeds``.
    """
    record = run_config.get("sweep")
    if not record:
        return None
    per = record["seeds_per_setting"]
    groups = sweep_record(record["grid"], per)["settings"]
    if len(groups) * per != run_config.get("seeds"):
        raise ValueError(f"config.json: its sweep has {len(groups)} settings x {per} seeds, "
                         f"but the run has {run_config.get('seeds')} seeds")
    return groups


def setting_label(values: dict) -> str:
    """``"learning_rate=0.0001, gamma=0.99"``: a setting's values, shortest round-tripping floats."""
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


def summarize_settings(finals, record: dict) -> list[dict]:
    """summary.json's ``"settings"``: per setting its values, seeds, IQM with CI and per-seed final returns.

    Args:
      finals: per-seed final returns ``[S]`` (all the run's seeds, setting-major).
      record: config.json's ``"sweep"`` (:func:`sweep_record`).

    Returns:
      one dict per setting: ``values``, ``seeds``, the keys of :func:`funrl.stats.summarize`
      (``iqm``, ``ci_low``, ``ci_high``, ``mean``, ...) over its seeds, and ``per_seed_final_return``.
    """
    rows = [float(x) for x in finals]
    out = []
    for g in sweep_record(record["grid"], record["seeds_per_setting"])["settings"]:
        mine = [rows[i] for i in g["seeds"]]
        out.append({"values": g["values"], "seeds": g["seeds"], **stats.summarize(mine),
                    "per_seed_final_return": mine})
    return out


def same_grid(record: dict | None, grid: dict | None) -> bool:
    """Whether ``grid`` (values may be command-line strings) is the sweep ``record`` holds."""
    stored = (record or {}).get("grid")
    if stored is None or grid is None:
        return stored is None and grid is None
    if list(stored) != list(grid):
        return False
    try:
        return all([float(v) for v in grid[k]] == [float(v) for v in stored[k]] for k in stored)
    except (TypeError, ValueError):
        return False


def describe(record: dict | None) -> str:
    """``"3 settings x 8 seeds"`` (empty for a run that is not a sweep)."""
    if not record:
        return ""
    n = len(expand_grid(record["grid"]))
    return f"{n} setting{'s' * (n != 1)} x {record['seeds_per_setting']} seeds"
