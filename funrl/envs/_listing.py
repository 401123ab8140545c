"""What ``funrl envs`` prints for each registered id, written out so that listing needs no torch.

``repr`` of each env's observation and action space with its default params.
``tests/test_envs_core.py`` checks that every entry equals the live spaces' reprs
(regenerate with the loop in that test when an env changes).
"""

#: env id -> (repr of the observation space, repr of the action space)
SPACES: dict[str, tuple[str, str]] = {
    'Acrobot-v1': ('Box([-1.0, -1.0, -1.0, -1.0, -12.566371, -28.274334], [1.0, 1.0, 1.0, 1.0, 12.566371, 28.274334], (6,), torch.float32)', 'Discrete(3)'),
    'CartPole-v0': ('Box([-4.8, -inf, -0.41887903, -inf], [4.8, inf, 0.41887903, inf], (4,), torch.float32)', 'Discrete(2)'),
    'CartPole-v1': ('Box([-4.8, -inf, -0.41887903, -inf], [4.8, inf, 0.41887903, inf], (4,), torch.float32)', 'Discrete(2)'),
    'CliffWalking-v0': ('Discrete(48)', 'Discrete(4)'),
    'CliffWalking-v1': ('Discrete(48)', 'Discrete(4)'),
    'FrozenLake-v1': ('Discrete(16)', 'Discrete(4)'),
    'FrozenLake8x8-v1': ('Discrete(64)', 'Discrete(4)'),
    'MountainCar-v0': ('Box([-1.2, -0.07], [0.6, 0.07], (2,), torch.float32)', 'Discrete(3)'),
    'MountainCarContinuous-v0': ('Box([-1.2, -0.07], [0.6, 0.07], (2,), torch.float32)', 'Box(-1.0, 1.0, (1,), torch.float32)'),
    'Pendulum-v1': ('Box([-1.0, -1.0, -8.0], [1.0, 1.0, 8.0], (3,), torch.float32)', 'Box(-2.0, 2.0, (1,), torch.float32)'),
    'Taxi-v3': ('Discrete(500)', 'Discrete(6)'),
    'Taxi-v4': ('Discrete(500)', 'Discrete(6)'),
}
