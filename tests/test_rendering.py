"""Tests for funrl.envs.rendering: numpy ``rgb_array`` frames of the classic-control envs.

pygame (gymnasium's renderer) is not installed here, so frames are checked
against the geometry of gymnasium's own ``render`` code: sizes, scales and
positions are computed from the attributes of gymnasium's env objects and
its drawing formulas (copied into the ``expected_*`` helpers below), and the
drawn pixels of each shape (found by gymnasium's colours) must sit there.
"""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from funrl.envs import make, to_gymnasium_env
from funrl.envs import wrappers as W
from funrl.envs.acrobot import AcrobotState
from funrl.envs.cartpole import CartPoleState
from funrl.envs.mountain_car import MountainCarState
from funrl.envs.pendulum import PendulumState
from funrl.envs.rendering import render_frame, renderable


def _t(v):
    return torch.tensor(float(v))


def _zero():
    return torch.zeros((), dtype=torch.int64)


def _pixels(frame, color):
    """``(cols, ups)`` of the pixels of exactly ``color``.

    ``up`` counts rows from the bottom: gymnasium flips its surface upside
    down, so ``up`` is the ``y`` of gymnasium's drawing code.
    """
    rows, cols = np.nonzero((frame == np.array(color, dtype=np.uint8)).all(-1))
    return cols.astype(np.float64), (frame.shape[0] - 1 - rows).astype(np.float64)


def _check_frame(frame, g):
    """uint8 (H, W, 3) of gymnasium's screen size, mostly white background."""
    w = getattr(g, "screen_width", None) or getattr(g, "screen_dim", None) or g.SCREEN_DIM
    h = getattr(g, "screen_height", None) or w
    assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == (h, w, 3)
    assert frame.flags.c_contiguous
    assert 0.7 < (frame == 255).all(-1).mean() < 0.995


# ------------------------------------------------------------------ CartPole
def _cartpole_geometry(g, x, theta):
    """gymnasium CartPoleEnv.render: cart centre, axle, pole length (pre-flip y = up from the bottom)."""
    scale = g.screen_width / (g.x_threshold * 2)
    cartx = x * scale + g.screen_width / 2.0
    axle = (cartx, 100 + 30 / 4.0)
    return cartx, axle, scale * (2 * g.length) - 10 / 2


@pytest.mark.parametrize("x, theta", [(0.0, 0.0), (1.1, 0.15), (-1.7, -0.2)])
def test_cartpole_frame_geometry(x, theta):
    env, params = make("CartPole-v1")
    g = gym.make("CartPole-v1").unwrapped
    state = CartPoleState(_t(x), _t(0.3), _t(theta), _t(-0.1), _zero())
    frame = render_frame(env, state, params)
    _check_frame(frame, g)
    cartx, (ax, ay), tip = _cartpole_geometry(g, x, theta)
    # the track: one black row at y = 100
    assert (frame[frame.shape[0] - 1 - 100] == 0).all()
    cols, ups = _pixels(frame, (0, 0, 0))
    cart = ups != 100
    # (the pole and axle cover part of the cart's upper half: the centroid sits a little low)
    assert abs(cols[cart].mean() - cartx) < 1.0 and abs(ups[cart].mean() - 100) < 3.0
    assert 45 <= np.ptp(cols[cart]) <= 51 and 28 <= np.ptp(ups[cart]) <= 31  # 50 x 30 cart
    cols, ups = _pixels(frame, (202, 152, 101))
    est = math.atan2(cols.mean() - ax, ups.mean() - ay)
    assert abs(est - theta) < 0.01, (est, theta)
    assert abs(np.hypot(cols - ax, ups - ay).max() - np.hypot(tip, 5)) < 2.0
    cols, ups = _pixels(frame, (129, 132, 203))
    assert abs(cols.mean() - int(ax)) < 0.5 and abs(ups.mean() - int(ay)) < 0.5


def test_cartpole_different_states_give_different_frames():
    env, params = make("CartPole-v1")
    a = render_frame(env, CartPoleState(_t(0.0), _t(0), _t(0.0), _t(0), _zero()), params)
    b = render_frame(env, CartPoleState(_t(0.8), _t(0), _t(0.1), _t(0), _zero()), params)
    c = render_frame(env, CartPoleState(_t(0.0), _t(5), _t(0.0), _t(9), _zero()), params)
    assert (a != b).any(-1).mean() > 0.01  # cart and pole moved: thousands of pixels
    np.testing.assert_array_equal(a, c)  # velocities are not drawn


# ------------------------------------------------------------------ Pendulum
@pytest.mark.parametrize("theta", [0.0, 1.0, -2.5, 3.0])
def test_pendulum_frame_geometry(theta):
    env, params = make("Pendulum-v1")
    g = gym.make("Pendulum-v1").unwrapped
    frame = render_frame(env, PendulumState(_t(theta), _t(0.5), _zero()), params)
    _check_frame(frame, g)
    scale = g.screen_dim / (2.2 * 2)
    offset = g.screen_dim // 2
    rod_length, rod_width = 1 * scale, 0.2 * scale
    cols, ups = _pixels(frame, (204, 77, 77))
    # rod rotated by theta + pi/2 from +x in gymnasium's (pre-flip) coordinates: theta = 0 points up
    ups_c = ups - offset
    est = math.atan2(-(cols.mean() - offset), ups_c.mean())
    assert abs(math.remainder(est - theta, 2 * math.pi)) < 0.02, (est, theta)
    reach = np.hypot(cols - offset, ups_c).max()
    assert abs(reach - (rod_length + int(rod_width / 2))) < 2.5
    cols, ups = _pixels(frame, (0, 0, 0))  # the axle
    assert abs(cols.mean() - offset) < 0.5 and abs(ups.mean() - offset) < 0.5
    assert abs(np.ptp(cols) - 2 * int(0.05 * scale)) <= 1


# ------------------------------------------------------------------ MountainCar
@pytest.mark.parametrize("env_id", ["MountainCar-v0", "MountainCarContinuous-v0"])
@pytest.mark.parametrize("pos", [-0.5, -1.0, 0.3])
def test_mountain_car_frame_geometry(env_id, pos):
    env, params = make(env_id)
    g = gym.make(env_id).unwrapped
    frame = render_frame(env, MountainCarState(_t(pos), _t(0.01), _zero()), params)
    _check_frame(frame, g)
    scale = g.screen_width / (g.max_position - g.min_position)
    cx, cy = (pos - g.min_position) * scale, 10 + g._height(pos) * scale
    cols, ups = _pixels(frame, (128, 128, 128))  # the two wheels, centred on the car's axle
    assert abs(cols.mean() - cx) < 1.5 and abs(ups.mean() - cy) < 1.5
    # the track: black pixels on gymnasium's height curve, away from the car and the flag
    flagx = int((g.goal_position - g.min_position) * scale)
    bcols, bups = _pixels(frame, (0, 0, 0))
    free = [c for c in (5, 150, 300, 450, 590) if abs(c - cx) > 40 and abs(c - flagx) > 5]
    assert len(free) >= 3
    for col in free:
        on = bups[bcols == col]
        want = g._height(g.min_position + col / scale) * scale
        assert on.size and np.abs(on - want).min() <= 2.0, (col, on, want)
    ycols, yups = _pixels(frame, (204, 204, 0))  # the flag at gymnasium's goal position
    flagy2 = int(g._height(g.goal_position) * scale) + 50
    assert ycols.min() == flagx and abs(ycols.max() - (flagx + 25)) <= 1 and abs(yups.max() - flagy2) <= 1


# ------------------------------------------------------------------ Acrobot
@pytest.mark.parametrize("s0, s1", [(0.0, 0.0), (1.0, -0.7), (-2.0, 1.5), (3.0, 0.4)])
def test_acrobot_frame_geometry(s0, s1):
    env, params = make("Acrobot-v1")
    g = gym.make("Acrobot-v1").unwrapped
    frame = render_frame(env, AcrobotState(_t(s0), _t(s1), _t(0.1), _t(-0.2), _zero()), params)
    _check_frame(frame, g)
    scale = g.SCREEN_DIM / ((g.LINK_LENGTH_1 + g.LINK_LENGTH_2 + 0.2) * 2)
    offset = g.SCREEN_DIM / 2
    # gymnasium: joints at (0, 0) and p1[::-1] with p1 = (-l1 cos s0, l1 sin s0) * scale
    j1 = np.array([g.LINK_LENGTH_1 * math.sin(s0) * scale, -g.LINK_LENGTH_1 * math.cos(s0) * scale]) + offset
    tip = j1 + g.LINK_LENGTH_2 * scale * np.array([math.cos(s0 + s1 - math.pi / 2), math.sin(s0 + s1 - math.pi / 2)])
    cols, ups = _pixels(frame, (204, 204, 0))  # joint discs at the base and the elbow
    want_c, want_u = (int(offset) + int(j1[0])) / 2, (int(offset) + int(j1[1])) / 2
    assert abs(cols.mean() - want_c) < 1.0 and abs(ups.mean() - want_u) < 1.0
    cols, ups = _pixels(frame, (0, 204, 204))  # the links reach the tip
    d = np.hypot(cols - tip[0], ups - tip[1])
    assert d.min() < 2.0
    base_d = np.hypot(cols - offset, ups - offset)
    assert abs(base_d.max() - np.hypot(*(tip - offset))) < 0.1 * scale + 2
    # gymnasium's goal line: y = offset + 1 * scale, from x = offset - 2.2 scale to offset + 2.2 scale
    line_row = frame.shape[0] - 1 - int(round(offset + scale))
    assert (frame[line_row, int(offset - 2 * scale) : int(offset + 2 * scale)] != 255).any(-1).mean() > 0.9


# ------------------------------------------------------------------ through the gymnasium wrapper
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1", "MountainCar-v0", "Acrobot-v1"])
def test_render_through_gymnasium_env_and_render_collection(env_id):
    env, params = make(env_id)
    g = gym.make(env_id).unwrapped
    e = to_gymnasium_env(env, params, seed=0, render_mode="rgb_array")
    assert e.metadata["render_fps"] == g.metadata["render_fps"]
    with pytest.raises(RuntimeError, match="render: call reset"):
        e.render()
    rc = gym.wrappers.RenderCollection(e)  # RecordVideo needs moviepy, which is not a funrl dependency
    rc.reset(seed=1)
    e.action_space.seed(0)
    for _ in range(8):
        rc.step(e.action_space.sample())
    frames = rc.render()
    assert isinstance(frames, list) and len(frames) == 9
    for f in frames:
        _check_frame(f, g)
    np.testing.assert_array_equal(frames[-1], render_frame(env, e._state, params))
    assert any((frames[0] != f).any() for f in frames[1:])  # the state moved


def test_render_frame_unwraps_wrapper_states_and_rejects_other_envs():
    env, params = make("CartPole-v1")
    wrapped = W.LogWrapper(env)
    assert renderable(wrapped)
    e = to_gymnasium_env(wrapped, params, seed=3, render_mode="rgb_array")
    obs, _ = e.reset()
    frame = e.render()
    state = CartPoleState(*[torch.tensor(v) for v in obs], _zero())
    np.testing.assert_array_equal(frame, render_frame(env, state, params))
    taxi, tparams = make("Taxi-v3")
    assert not renderable(taxi)
    with pytest.raises(TypeError, match="env: expected one of the classic-control envs .* got Taxi"):
        render_frame(taxi, taxi.reset(torch.tensor([0, 1]), tparams)[1], tparams)
