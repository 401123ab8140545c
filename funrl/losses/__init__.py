"""rlax-compatible RL losses and value targets, one module per family.

Every function handles one transition or one sequence (rlax's single-stream
semantics) and follows rlax's names, argument order, defaults and
``stop_target_gradients`` conventions; batch with ``torch.func.vmap``::

    td = torch.func.vmap(funrl.losses.q_learning)(q_tm1, a_tm1, r_t, discount_t, q_t)

Families: :mod:`~funrl.losses.value_learning`, :mod:`~funrl.losses.multistep`
(returns, GAE, V-trace), :mod:`~funrl.losses.policy_gradients`,
:mod:`~funrl.losses.distributional`, :mod:`~funrl.losses.transforms`,
:mod:`~funrl.losses.sequence` (sequence-level losses for RL fine-tuning of language
models: masked token log-probs, GRPO / RLOO advantages, token-level clipped
surrogate with its aggregations, KL estimators and KL-penalised rewards; these
take batches ``[B, L]`` with explicit bool masks rather than one sequence),
:mod:`~funrl.losses.base` (huber, l2, clip_gradient), :mod:`~funrl.losses.policies`
(greedy / epsilon-greedy / softmax) and :mod:`~funrl.losses.exploration` (Gaussian
and Ornstein–Uhlenbeck noise).  Target-network updates ``incremental_update``
(optax's name) and ``periodic_update`` (rlax's) live in :mod:`funrl.optim` and are
re-exported here.
"""

from funrl.losses.base import *  # noqa: F401,F403
from funrl.losses.distributional import *  # noqa: F401,F403
from funrl.losses.exploration import *  # noqa: F401,F403
from funrl.losses.multistep import *  # noqa: F401,F403
from funrl.losses.policies import *  # noqa: F401,F403
from funrl.losses.policy_gradients import *  # noqa: F401,F403
from funrl.losses.sequence import *  # noqa: F401,F403
from funrl.losses.transforms import *  # noqa: F401,F403
from funrl.losses.value_learning import *  # noqa: F401,F403
from funrl.optim import incremental_update, periodic_update  # noqa: F401
from funrl.losses import base, distributional, exploration, multistep, policies, policy_gradients, sequence, transforms, value_learning  # noqa: F401,E402
