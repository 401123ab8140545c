"""Time spent writing a run's results (metrics.csv and the checkpoints' metrics), no training.

The shape of ``funrl train dqn``'s defaults: 50,000 updates x 8 seeds, 6 metrics
per update, a checkpoint every 50 updates (1,000 checkpoints).  Synthetic float32
metrics stand in for training; the training state in each checkpoint is left out
(a one-element tensor) because it costs the same before and after.

* before: every checkpoint re-saved the whole metrics history in the checkpoint
  and rewrote the whole metrics.csv (quadratic in the run's length).  Timing all
  1,000 checkpoints would take a long time, so ``--samples`` checkpoints spread
  over the run are timed and the total is the trapezoid sum over all of them
  (the cost grows linearly with the checkpoint's index).
* after: each checkpoint appends its 50 updates' rows to metrics.csv and saves
  only those updates' metrics (timed in full).

    python benchmarks/results_writing.py [--updates 50000] [--seeds 8] [--every 50] [--samples 6]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch

from funrl import checkpoint as ckpt
from funrl.results import MetricsCSV, concat_metrics, metrics_csv_text, write_checkpoint

NAMES = ("episode_return", "episode_length", "episodes", "td_loss", "q_values", "epsilon")


def _segment(rng, n, seeds):
    return {k: torch.from_numpy(rng.standard_normal((seeds, n)).astype(np.float32)) for k in NAMES}  # [seeds, updates]


def before_one(directory, manager, k, segments, spu):
    """The old writer at checkpoint ``k``: the whole history into the checkpoint and into metrics.csv."""
    t = time.perf_counter()
    history = concat_metrics(segments[:k])
    update = sum(s[NAMES[0]].shape[1] for s in segments[:k])
    manager.save(update, {"state": {"x": torch.zeros(1)}, "history": history}, metadata={"update": update})
    ckpt.write_text_atomic(os.path.join(directory, "metrics.csv"), metrics_csv_text(history, spu))
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=50_000)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--samples", type=int, default=6, help="checkpoints timed for the quadratic 'before' writer")
    p.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    K = args.updates // args.every
    segments = [_segment(rng, args.every, args.seeds) for _ in range(K)]
    spu = 10

    with tempfile.TemporaryDirectory() as d:
        manager = ckpt.CheckpointManager(os.path.join(d, "checkpoints"), keep=2)
        writer = MetricsCSV(os.path.join(d, "metrics.csv"), spu)
        t0 = time.perf_counter()
        for i, seg in enumerate(segments):
            write_checkpoint(manager, writer, (i + 1) * args.every, {"x": torch.zeros(1)}, seg, i * args.every)
        after = time.perf_counter() - t0
        csv_bytes = os.path.getsize(os.path.join(d, "metrics.csv"))
        ckpt_bytes = os.path.getsize(manager.path(K * args.every))

    ks = sorted({int(round(x)) for x in np.linspace(1, K, args.samples)})
    with tempfile.TemporaryDirectory() as d:
        manager = ckpt.CheckpointManager(os.path.join(d, "checkpoints"), keep=2)
        sampled = {k: before_one(d, manager, k, segments, spu) for k in ks}
        last_ckpt_bytes = os.path.getsize(manager.path(K * args.every))
    ys = [sampled[k] for k in ks]
    integral = sum(0.5 * (ys[i] + ys[i + 1]) * (ks[i + 1] - ks[i]) for i in range(len(ks) - 1))
    before = integral + 0.5 * (ys[0] + ys[-1])  # the sum over k = 1..K of a linear cost

    result = {
        "updates": args.updates, "seeds": args.seeds, "checkpoint_every": args.every, "checkpoints": K,
        "metrics": len(NAMES), "metrics_csv_bytes": csv_bytes,
        "after_total_s": after, "after_per_checkpoint_ms": 1000 * after / K,
        "before_sampled_s": {str(k): v for k, v in sampled.items()},
        "before_total_s_estimated": before,
        "checkpoint_metrics_bytes_after": ckpt_bytes, "checkpoint_metrics_bytes_before_last": last_ckpt_bytes,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        ckpt.write_json_atomic(args.out, result)


if __name__ == "__main__":
    main()
