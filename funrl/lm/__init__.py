"""Language models trained with RL: pure sampling and scoring, and small pretrain-then-RL tasks.

* :func:`sample` -- fixed-length decoding with the KV cache, pure (keys only),
  vmappable over seeds and prompts; returns tokens, their log-probs under the
  sampling distribution and the completion mask (:class:`Completions`);
* :func:`score` / :func:`completion_logits` -- the same log-probs (or the
  logits) from one forward pass, differentiable: what the losses use;
* :func:`group` -- ``[N, ...] -> [N / G, G, ...]``, completions grouped by prompt;
* :mod:`funrl.lm.tasks` -- random-walks (trlx's shortest paths), sort, add:
  prompts, rewards in [0, 1] and demonstrations for pretraining.

The losses are in :mod:`funrl.losses.sequence` (``funrl.losses``); the
algorithms (``sft``, ``grpo``, ``rloo``, ``ppo_lm``) in :mod:`funrl.algorithms`.
"""

from funrl.lm import tasks
from funrl.lm.sampling import Completions, completion_logits, group, sample, score

__all__ = ["Completions", "sample", "score", "completion_logits", "group", "tasks"]
