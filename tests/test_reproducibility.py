"""funrl's reproducibility contract for whole training runs (README, "Reproducibility").

Row *i* of ``torch.func.vmap(train)(keys)`` equals ``train(keys[i])`` bit for
bit, for every algorithm, on every CPU capability CI runs this file under
(``.ci/run`` runs it again with ``ATEN_CPU_CAPABILITY=default``).

The runs are long enough for a last-bit difference to be amplified into a
different run (several hundred gradient steps after learning starts; before
the fix DDPG drifted by 7e-6 after its first gradient step and by O(1) after
2k env steps), and sized so that every kind of position-dependent kernel is
exercised: 33 seeds, so that a per-seed scalar of row 0 sits in the vectorised
body of a kernel (32 lanes of AVX-512 floats per iteration) while the single
run computes it in the scalar tail; several envs per seed, so that per-env
values fill vector blocks too.  Row 0 is compared: in the batch it is
computed in the kernels' vectorised bodies, alone in their scalar tails.
"""

from __future__ import annotations

import pytest
import torch

from funrl import envs, tree
from funrl import random as jr
from funrl.algorithms import a2c, ddpg, dqn, ppo, reinforce, sac, tabular, td3
from helpers import assert_match

pytestmark = pytest.mark.exactness

SEEDS = 33

#: Config overrides per algorithm: a few hundred gradient steps, small networks.
CASES = {
    # 8 updates x 4 epochs x 8 minibatches = 256 gradient steps
    "ppo": (ppo, "CartPole-v1", dict(total_timesteps=8 * 8 * 8, num_envs=8, num_steps=8, update_epochs=4,
                                     num_minibatches=8, hidden_sizes=(16, 16))),
    # one gradient step per update: 150 and 120
    "a2c": (a2c, "CartPole-v1", dict(total_timesteps=4 * 5 * 150, num_envs=4, num_steps=5, hidden_sizes=(16, 16))),
    "reinforce": (reinforce, "CartPole-v1", dict(total_timesteps=4 * 8 * 120, num_envs=4, num_steps=8,
                                                 hidden_sizes=(16, 16))),
    # 320 updates, learning from env step 64: 304 gradient steps
    "dqn": (dqn, "CartPole-v1", dict(total_timesteps=4 * 320, num_envs=4, train_frequency=1, learning_starts=64,
                                     target_network_frequency=64, batch_size=32, buffer_size=1280,
                                     hidden_sizes=(16, 16))),
    # 350 updates of 2 envs, learning from env step 100: 300 gradient steps (actor every 2nd)
    "ddpg": (ddpg, "Pendulum-v1", dict(total_timesteps=700, num_envs=2, learning_starts=100, batch_size=32,
                                       buffer_size=700, hidden_sizes=(16, 16))),
    "td3": (td3, "Pendulum-v1", dict(total_timesteps=700, num_envs=2, learning_starts=100, batch_size=32,
                                     buffer_size=700, hidden_sizes=(16, 16))),
    "sac": (sac, "Pendulum-v1", dict(total_timesteps=700, num_envs=2, learning_starts=100, batch_size=32,
                                     buffer_size=700, hidden_sizes=(16, 16))),
    # 60 updates x 8 steps x 8 envs of TD updates on a Q-table
    "tabular": (tabular, "FrozenLake-v1", dict(total_timesteps=8 * 8 * 60, num_envs=8, num_steps=8)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_seed_i_of_a_vmapped_run_is_the_run_of_seed_i_bit_for_bit(name):
    module, env_id, overrides = CASES[name]
    env, env_params = envs.make(env_id)
    train = module.make_train(module.Config(**overrides), env, env_params)
    keys = jr.split(jr.key(2026), SEEDS)
    batched = torch.func.vmap(train)(keys)
    # row 0: the body of every batched kernel; a run alone computes in the scalar tail
    assert_match(tree.index(batched, 0), train(keys[0]), exact=True)
    # and the runs learnt something different per seed (the comparison is not between constants)
    state, _ = batched
    first = tree.leaves(getattr(state, "params", state))[0]
    assert not torch.equal(first[0], first[1])


def test_a_batch_of_one_is_bit_for_bit_where_an_unbatched_call_is_only_close():
    """The mechanism, on one network call: ``one_seed_lift`` makes a single call run the batched kernels.

    A one-row input through a 16-wide layer is where the kernels part: unbatched, torch computes a
    matrix-vector product; under ``vmap`` a (small) batched matrix product, which adds in another order.
    """
    from funrl import nn
    from funrl.algorithms.common import one_seed_lift

    net = nn.mlp([5, 16, 16, 3], activation="tanh")
    keys = jr.split(jr.key(1), SEEDS)
    params = torch.func.vmap(net.init)(keys)
    x = jr.normal(jr.key(2), (SEEDS, 1, 5))
    batched = torch.func.vmap(net.apply)(params, x)
    unbatched = torch.stack([net.apply(tree.index(params, i), x[i]) for i in range(SEEDS)])
    as_batch_of_one = torch.stack([one_seed_lift(net.apply)(tree.index(params, i), x[i]) for i in range(SEEDS)])
    assert_match(as_batch_of_one, batched, exact=True)
    # unbatched is only promised to be close (on AVX2 and the baseline kernels it differs in the last bits)
    assert_match(unbatched, batched, exact=False)
