"""The ``funrl`` command line (also ``python -m funrl``).

    funrl train [ALGO] [--env ENV_ID | --task TASK] [--lora RANK] [--seeds S] [--total-steps N] [--set field=value ...]
                [--sweep field=v1,v2,... ...]
                [--env-set name=value ...] [--init DIR [--init-seed I]] [--freeze REGEX]
                [--device cpu|cuda] [--processes N|auto] [--threads N] [--no-compile] [--out DIR] [--resume DIR]
                [--tensorboard]
    funrl eval DIR [--episodes K] [--video [--video-episodes N]]
    funrl plot DIR [DIR ...] [--out FILE.png]
    funrl export DIR [--seed I] --format torchscript|state_dict|onnx [--out PATH]
    funrl envs
    funrl algos

``funrl train`` with nothing else trains PPO on CartPole-v1 with 8 seeds.
On a multi-core machine ``funrl train`` with many seeds splits them over one
process per core (:mod:`funrl.launch`: it re-launches itself as ``torchrun
--nproc-per-node K -m funrl train ...``; see :mod:`funrl.distributed`); a
failed rank makes the job exit 1.
``funrl train ALGO --help`` lists every Config field of ALGO with its default.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main", "build_parser"]


def _config_help(algo: str) -> str:
    # read from the source: importing the algorithm would import torch (seconds before the help shows)
    from funrl._config_source import config_fields, hyperparams
    from funrl.algorithms import DEFAULT_ENVS, module_path

    path = module_path(algo)  # a bad name: the usual error, with close matches
    lines = [f"{algo} config fields (set with --set field=value; defaults tuned for {DEFAULT_ENVS[algo]}):"]
    fields = config_fields(path)
    width = max(len(f"{f.name} = {f.default}") for f in fields)
    for f in fields:
        lines.append(f"  {f'{f.name} = {f.default}':{width}}  {f.comment}".rstrip())
    batchable = hyperparams(path)
    if batchable:
        lines.append(f"sweepable with --sweep field=v1,v2,... (batchable per seed): {', '.join(batchable)}")
    return "\n".join(lines)


def build_parser(algo_for_help: str | None = "ppo") -> argparse.ArgumentParser:
    """The argument parser (``algo_for_help`` selects the Config listed by ``train --help``).

    ``algo_for_help=None`` leaves that list out: building it imports the algorithm
    (and torch), which ``funrl --help``, ``algos`` and every non-help command do not need.
    """
    from funrl.algorithms import list_algorithms

    parser = argparse.ArgumentParser(prog="funrl", description="funrl: functional RL for PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)

    tr = sub.add_parser(
        "train",
        help="train an algorithm on many seeds at once",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_config_help(algo_for_help) if algo_for_help else None,
    )
    tr.add_argument("algo", nargs="?", default=None, help=f"one of: {', '.join(list_algorithms())} (default ppo)")
    tr.add_argument("--env", "--task", dest="env", default=None,
                    help="env id (gymnasium:<ID> for any installed gymnasium env), or task for the LM algorithms "
                         "(default: the algorithm's; see `funrl envs`)")
    tr.add_argument("--lora", type=int, default=None, metavar="RANK",
                    help="LM algorithms: RL trains LoRA adapters of this rank only (sets lora_rank)")
    # flags a resumed run takes from its config.json default to None: only what is given is checked against it
    tr.add_argument("--seeds", type=int, default=None, help="number of seeds trained together (default 8)")
    tr.add_argument("--total-steps", type=int, default=None, help="env steps per seed (default: config total_timesteps)")
    tr.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field")
    tr.add_argument(
        "--sweep", action="append", default=[], metavar="FIELD=V1,V2,...",
        help="train every value of a batchable hyper-parameter in one vmapped run (several --sweep: every "
             "combination); --seeds is then per setting, seeds 0..S-1 are the first setting, S..2S-1 the next",
    )
    tr.add_argument(
        "--env-set", action="append", default=[], metavar="NAME=VALUE",
        help="override an env param or constructor argument (e.g. length=1.0 for CartPole; see funrl.envs.make)",
    )
    tr.add_argument("--init", default=None, metavar="DIR", help="start from the final params of the run in DIR (warm start)")
    tr.add_argument(
        "--init-seed", type=int, default=None, metavar="I",
        help="with --init: start every seed from DIR's seed I (default: seed for seed; the seed counts must match)",
    )
    tr.add_argument(
        "--freeze", default=None, metavar="REGEX",
        help="keep fixed the params whose path (e.g. actor.linear_0.weight) matches REGEX (re.search)",
    )
    tr.add_argument(
        "--network", default=None, metavar="MODULE:FUNCTION",
        help="your own networks: a factory(role, in_shape, out_dim) returning a torch.nn.Module or funrl.nn.Model "
             "(sets the config field network; see funrl/algorithms/networks.py)",
    )
    tr.add_argument("--device", default=None, choices=["cpu", "cuda"], help="device (default cpu)")
    tr.add_argument("--threads", type=int, default=None, metavar="N",
                    help="torch CPU threads (default 1, or OMP_NUM_THREADS when set: more threads collapse on a busy "
                         "machine and gain little on funrl's small ops; use torchrun for more cores -- see funrl.threads)")
    tr.add_argument("--processes", default=None, metavar="N|auto",
                    help="processes the seeds are split over (default auto: one per core, keeping at least 16 seeds "
                         "in each, CPU runs only; FUNRL_PROCESSES sets the default); results do not depend on it -- "
                         "see funrl.launch")
    tr.add_argument("--no-compile", action="store_true", help="run eagerly (same numbers up to rounding; slower)")
    tr.add_argument("--out", default=None, help="results folder (default runs/<algo>-<env>-<time>)")
    tr.add_argument("--seed", type=int, default=None, help="base seed; seed i uses fold_in(key(seed), i) (default 0)")
    tr.add_argument(
        "--resume", default=None, metavar="DIR",
        help="continue the run in DIR from its last checkpoint, with its stored settings (a flag that would change "
             "them is an error); a finished run is left as it is",
    )
    tr.add_argument("--checkpoint-every", type=int, default=None, help="updates between checkpoints (default 50)")
    tr.add_argument("--no-progress", action="store_true", help="no progress output")
    tr.add_argument("--no-plot", action="store_true", help="do not write learning_curve.png")
    tr.add_argument("--tensorboard", action="store_true",
                    help="also write the metrics as TensorBoard scalars in OUT/tensorboard/ "
                         "(needs pip install 'funrl[tensorboard]'; kept on --resume)")

    ev = sub.add_parser("eval", help="run the greedy/mean policy of each seed of a finished run")
    ev.add_argument("dir", help="results folder")
    ev.add_argument("--episodes", type=int, default=10, help="episodes per seed (default 10)")
    ev.add_argument("--seed", type=int, default=12345, help="evaluation seed")
    ev.add_argument("--video", action="store_true",
                    help="also write a GIF of each seed's policy to DIR/videos/seed<I>.gif (classic-control envs; "
                         "needs pip install 'funrl[video]')")
    ev.add_argument("--video-episodes", type=int, default=1, metavar="N", help="episodes per GIF (default 1)")

    pl = sub.add_parser("plot", help="learning curves (IQM ± 95%% CI across seeds) of one or more runs")
    pl.add_argument("dirs", nargs="+", help="results folders")
    pl.add_argument("--out", default=None, help="PNG file (default: learning_curve.png in the first folder)")
    pl.add_argument("--metric", default="episode_return", help="metrics.csv column (default episode_return)")

    ex = sub.add_parser("export", help="write one seed's greedy/mean policy as a file that runs with plain torch")
    ex.add_argument("dir", help="results folder")
    ex.add_argument("--seed", type=int, default=0, help="which seed's policy (default 0)")
    ex.add_argument("--format", required=True, choices=["torchscript", "state_dict", "onnx"],
                    help="torchscript (traced module), state_dict (tensors + metadata for an nn.Sequential) or "
                         "onnx (needs pip install 'funrl[onnx]'); see funrl.export")
    ex.add_argument("--out", default=None, help="file (default DIR/policy_seed<I>.<format suffix>)")

    sub.add_parser("envs", help="list environments")
    sub.add_parser("algos", help="list algorithms")
    return parser


def _parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set: expected FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v.strip()
    return out


def _parse_env_sets(items: list[str]) -> dict:
    """``--env-set NAME=VALUE`` items as ``funrl.envs.make`` overrides: ints, floats, true/false, else strings."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--env-set: expected NAME=VALUE, got {item!r}")
        k, v = (x.strip() for x in item.split("=", 1))
        if v.lower() in ("true", "false"):
            out[k] = v.lower() == "true"
            continue
        for parse in (int, float):
            try:
                out[k] = parse(v)
                break
            except ValueError:
                continue
        else:
            out[k] = v
    return out


def _algo_in_argv(argv: list[str]) -> str | None:
    """The algorithm whose Config ``train --help`` lists (None when no train help is asked for)."""
    from funrl.algorithms import ALGORITHMS

    if not argv or argv[0] != "train" or not {"-h", "--help"} & set(argv):
        return None
    for a in argv[1:]:
        if a.lower() in ALGORITHMS:
            return a.lower()
    return "ppo"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``funrl`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_algo_in_argv(argv))
    args = parser.parse_args(argv)
    try:
        if args.command == "algos":
            return _cmd_algos()
        if args.command == "envs":
            return _cmd_envs()
        if args.command == "train":
            return _cmd_train(args, argv)
        if args.command == "eval":
            return _cmd_eval(args)
        if args.command == "plot":
            return _cmd_plot(args)
        if args.command == "export":
            return _cmd_export(args)
    except KeyboardInterrupt:
        return 130
    except _rank_failed() as e:
        # raised on the ranks that stop because another failed (that one printed its own error)
        print(f"funrl: rank {e.rank} stopping: {e}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, ImportError, FileNotFoundError) as e:
        print(f"funrl {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover - argparse guarantees a command


def _rank_failed() -> type:
    from funrl.distributed import RankFailed

    return RankFailed


def _cmd_algos() -> int:
    import ast
    import importlib.util

    from funrl.algorithms import ALGORITHMS, DEFAULT_ENVS

    for name, path in ALGORITHMS.items():
        # the docstring read from the source, not imported: listing must not pay for torch
        with open(importlib.util.find_spec(path).origin) as f:
            doc = (ast.get_docstring(ast.parse(f.read())) or "").strip().splitlines()[0]
        print(f"{name:10} default env {DEFAULT_ENVS[name]:16} {doc}")
    return 0


def _cmd_envs() -> int:
    from funrl.envs import list_envs
    from funrl.envs._listing import SPACES

    for env_id in list_envs():
        if env_id in SPACES:  # written out: listing must not pay for importing torch
            obs, act = SPACES[env_id]
        else:  # registered by the user's code in this process
            import funrl

            env, params = funrl.envs.make(env_id)
            obs, act = repr(env.observation_space(params)), repr(env.action_space(params))
        print(f"{env_id:28} obs {obs:44} action {act}")
    print(f"{'gymnasium:<ID>':28} any installed gymnasium env, e.g. gymnasium:LunarLander-v3 (stepped on the host, eager)")
    return 0


def _plural(n: int, word: str, suffix: str = "s") -> str:
    return f"{n} {word}{suffix if n != 1 else ''}"


def _train_flag_names(given: dict, overrides: dict, lora: bool) -> dict:
    """How a resume conflict names each of ``funrl.run``'s arguments: the flag that sets it."""
    names = {"algo": "ALGO", "env": "--env", "seeds": "--seeds", "total_steps": "--total-steps", "seed": "--seed",
             "sweep": "--sweep",
             "device": "--device", "compile": "--no-compile", "checkpoint_every": "--checkpoint-every",
             "init": "--init", "init_seed": "--init-seed", "threads": "--threads",
             "tensorboard": "--tensorboard"}
    for k in given.get("env_params") or {}:
        names[f"env_params[{k!r}]"] = f"--env-set {k}"
    for k in overrides:
        names[f"config.{k}"] = f"--set {k}"
    names["config.freeze"] = "--freeze"
    names["config.network"] = "--network"
    if lora:
        names["config.lora_rank"] = "--lora"
    return names


def _processes(args, sweep) -> int:
    """How many processes this ``funrl train`` runs as (:func:`funrl.launch.processes_for`)."""
    from funrl.launch import parse_processes, processes_for
    from funrl.threads import check_threads, default_threads

    requested = parse_processes(args.processes)
    if args.resume is not None:
        from funrl.results import read_config_json

        saved = read_config_json(os.path.join(args.resume, "config.json"))
        seeds, device = saved["seeds"], saved.get("device", "cpu")  # a sweep's seeds: every setting's
    else:
        seeds, device = args.seeds or 8, args.device or "cpu"
        for values in (sweep or {}).values():
            seeds *= len(values)
    threads = default_threads() if args.threads is None else check_threads(args.threads, "--threads")
    return processes_for(requested, seeds, device, threads)


def _relaunch(argv: list[str], processes: int, threads: int | None) -> int:
    """Become ``torchrun --nproc-per-node=processes -m funrl <argv>`` (never returns on success)."""
    from funrl.launch import torchrun_argv
    from funrl.threads import default_threads

    env = dict(os.environ)
    # torchrun sets OMP_NUM_THREADS=1 with a notice when it is unset; funrl's default is the same
    env.setdefault("OMP_NUM_THREADS", str(threads or default_threads()))
    cmd = torchrun_argv(argv, processes)
    print(f"funrl train: seeds split over {processes} processes (torch.distributed.run --standalone "
          f"--nproc-per-node={processes}; --processes 1 for one)", flush=True)
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)
    return 1  # pragma: no cover - execve does not return


def _cmd_train(args, argv: list[str] | None = None) -> int:
    import funrl

    overrides = _parse_sets(args.set)
    if args.freeze is not None:
        overrides["freeze"] = args.freeze
    if args.lora is not None:
        overrides["lora_rank"] = args.lora
    if args.network is not None:
        overrides["network"] = args.network
    env_params = _parse_env_sets(args.env_set)
    from funrl.sweeps import parse_sweep_args

    sweep = parse_sweep_args(args.sweep) or None
    # only what the user gave: a resumed run checks these against its config.json
    given = {"algo": args.algo, "env": args.env, "seeds": args.seeds, "total_steps": args.total_steps,
             "seed": args.seed, "device": args.device, "compile": False if args.no_compile else None,
             "checkpoint_every": args.checkpoint_every, "init": args.init, "init_seed": args.init_seed,
             "env_params": env_params or None, "sweep": sweep,
             "tensorboard": True if args.tensorboard else None}
    given = {k: v for k, v in given.items() if v is not None}
    if args.resume is None:
        from funrl.algorithms import get

        algo = args.algo or "ppo"
        get(algo)  # fail fast on a bad name
        # validate fields and types before anything runs
        from funrl.algorithms import parse_value, resolve_config
        from funrl.sweeps import check_single_values, check_sweep

        check_single_values(get(algo), overrides)  # before resolve_config reads "1e-4,3e-4" as a bad float
        module, _, config = resolve_config(algo, args.env, args.total_steps, overrides)
        if sweep:
            check_sweep(module, config, sweep, overrides, parse=parse_value, name="--sweep")
        if args.env is not None or env_params:
            from funrl.algorithms import DEFAULT_ENVS

            make_env = getattr(get(algo), "make_env", funrl.envs.make)
            make_env(args.env or DEFAULT_ENVS[algo.lower()], **env_params)
    processes = _processes(args, sweep)
    if processes > 1 and argv is not None:
        return _relaunch(argv, processes, args.threads)
    from funrl import runner

    run_args = dict(runner._RUN_DEFAULTS)
    run_args.update(given, out=args.out, resume=args.resume, progress=not args.no_progress, plot=not args.no_plot,
                    threads=args.threads)
    # run's own check compares with its defaults; the flags given are checked exactly, named as flags
    result = runner._start(run_args, overrides, given, names=_train_flag_names(given, overrides, args.lora is not None))
    from funrl.distributed import world

    if world().rank != 0:
        return 0  # under torchrun rank 0 reports for the whole job
    s = result["summary"]
    settings = s.get("settings") or []
    if result.get("finished"):
        print(f"{result['out']}: the run is already finished (its last checkpoint is the last update and "
              f"summary.json is written); nothing to resume, nothing changed")
    grid = f" ({len(settings)} settings x {len(settings[0]['seeds'])} seeds)" if settings else ""
    print(
        f"{s['algo']} on {s['env']}: {s['seeds']} seeds{grid} x {s['env_steps_per_seed']:,} steps in {s['wall_time_s']:.1f} s "
        f"({s['sps']:,.0f} env steps/s summed over seeds; {_plural(s.get('processes', 1), 'process', 'es')} x "
        f"{_plural(s.get('threads', 1), 'torch thread')})\n"
        f"final return: IQM {s['iqm']:.1f} (95% CI {s['ci_low']:.1f} .. {s['ci_high']:.1f}), "
        f"mean {s['mean']:.1f}, min {s['min']:.1f}, max {s['max']:.1f}" + (" (all settings)" if settings else "")
    )
    for g in settings:
        print(_setting_line(g))
    print(f"results: {result['out']}")
    return 0


def _setting_line(g: dict) -> str:
    """One line of a sweep's summary: the setting, its seeds and its IQM with CI."""
    from funrl.sweeps import setting_label

    seeds = g["seeds"]
    return (f"  {setting_label(g['values'])} (seeds {seeds[0]}..{seeds[-1]}): IQM {g['iqm']:.1f} "
            f"(95% CI {g['ci_low']:.1f} .. {g['ci_high']:.1f}), mean {g['mean']:.1f}")


def _cmd_eval(args) -> int:
    from funrl.evaluation import evaluate_run

    if args.video:  # first: a run that cannot be filmed fails before the evaluation's wait
        from funrl.video import record_run

        if args.video_episodes < 1:
            raise ValueError(f"--video-episodes: expected an int >= 1, got {args.video_episodes}")

        for v in record_run(args.dir, episodes=args.video_episodes, seed=args.seed):
            print(f"seed {v['seed']}: {v['path']} ({v['frames']} frames, return "
                  f"{', '.join(f'{r:.1f}' for r in v['returns'])})")

    table = evaluate_run(args.dir, episodes=args.episodes, seed=args.seed)
    total = f" of {table['num_updates']:,}" if table.get("num_updates") else ""
    print(f"checkpoint: update {table['update']:,}{total}")
    print(f"{'seed':>4} {'mean return':>12} {'std':>8} {'episodes':>9}")
    for row in table["per_seed"]:
        print(f"{row['seed']:4d} {row['mean']:12.2f} {row['std']:8.2f} {row['episodes']:9d}")
    s = table["summary"]
    print(f"IQM {s['iqm']:.2f} (95% CI {s['ci_low']:.2f} .. {s['ci_high']:.2f}), mean {s['mean']:.2f}")
    return 0


def _cmd_plot(args) -> int:
    from funrl.plotting import plot_runs

    for d in args.dirs:
        if not os.path.exists(os.path.join(d, "metrics.csv")):
            raise FileNotFoundError(f"{d}: no metrics.csv (is it a funrl results folder?)")
    out = args.out or os.path.join(args.dirs[0], "learning_curve.png")
    plot_runs(args.dirs, out, metric=args.metric)
    print(out)
    return 0


def _cmd_export(args) -> int:
    from funrl.export import export_policy

    try:
        print(export_policy(args.dir, seed=args.seed, format=args.format, out=args.out))
    except ValueError as e:  # name the flags, not the Python arguments
        for arg, flag in (("run_dir:", "DIR:"), ("seed:", "--seed:"), ("format:", "--format:")):
            if str(e).startswith(arg):
                raise ValueError(flag + str(e)[len(arg):]) from None
        raise
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
