"""``rgb_array`` frames of the classic-control envs, drawn with numpy (no pygame).

:func:`render_frame` draws one env state as gymnasium 1.x's classic-control
envs do -- same screen sizes, scales, shapes, colours and vertical flip -- but
without anti-aliasing: a pixel belongs to a shape when its integer
coordinates lie inside it.  Frames therefore differ from gymnasium's only
along shape edges.  Not drawn: Pendulum's torque arrow (an image asset that
gymnasium scales by the last action; it is absent after a reset there too).

Coordinates follow gymnasium: shapes are placed on a ``(H, W)`` surface with
``y`` pointing down, and the finished surface is flipped upside down, so in
the returned frame ``y`` points up from the bottom row.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["render_frame", "renderable", "RENDER_FPS"]

WHITE, BLACK = (255, 255, 255), (0, 0, 0)

#: gymnasium's ``metadata["render_fps"]`` per env class name
RENDER_FPS = {"CartPole": 50, "Pendulum": 30, "MountainCar": 30, "MountainCarContinuous": 30, "Acrobot": 15}


# ---------------------------------------------------------------- primitives
def _canvas(h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), 255, dtype=np.uint8)


def _window(img: np.ndarray, xs, ys):
    """Integer pixel grid ``(ys, xs)`` covering the bounds, clipped to the image (None if empty)."""
    h, w = img.shape[:2]
    x0, x1 = max(int(math.floor(min(xs))), 0), min(int(math.ceil(max(xs))), w - 1)
    y0, y1 = max(int(math.floor(min(ys))), 0), min(int(math.ceil(max(ys))), h - 1)
    if x0 > x1 or y0 > y1:
        return None
    gy, gx = np.mgrid[y0 : y1 + 1, x0 : x1 + 1]
    return (slice(y0, y1 + 1), slice(x0, x1 + 1)), gx, gy


def _fill_convex(img: np.ndarray, pts, color) -> None:
    """Fill the convex polygon ``pts`` (``[(x, y), ...]``, either orientation) on ``img`` (H, W, 3) in place."""
    p = np.asarray(pts, dtype=np.float64)
    win = _window(img, p[:, 0], p[:, 1])
    if win is None:
        return
    sl, gx, gy = win
    pos = np.ones(gx.shape, dtype=bool)
    neg = pos.copy()
    for (ax, ay), (bx, by) in zip(p, np.roll(p, -1, axis=0)):
        c = (bx - ax) * (gy - ay) - (by - ay) * (gx - ax)
        pos &= c >= -1e-9
        neg &= c <= 1e-9
    img[sl][pos | neg] = color


def _fill_circle(img: np.ndarray, cx: int, cy: int, r: int, color) -> None:
    """Fill the disc of radius ``r`` around pixel ``(cx, cy)`` on ``img`` in place."""
    win = _window(img, (cx - r, cx + r), (cy - r, cy + r))
    if win is None:
        return
    sl, gx, gy = win
    img[sl][(gx - cx) ** 2 + (gy - cy) ** 2 <= r * r] = color


def _draw_line(img: np.ndarray, p0, p1, color) -> None:
    """A one-pixel line from ``p0`` to ``p1`` (``(x, y)``) on ``img`` in place."""
    (x0, y0), (x1, y1) = p0, p1
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    xs = np.rint(np.linspace(x0, x1, n + 1)).astype(np.int64)
    ys = np.rint(np.linspace(y0, y1, n + 1)).astype(np.int64)
    h, w = img.shape[:2]
    ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    img[ys[ok], xs[ok]] = color


def _rotate(pts, angle: float, dx: float, dy: float) -> list[tuple[float, float]]:
    """pygame's ``Vector2(p).rotate_rad(angle)`` then a shift by ``(dx, dy)``."""
    c, s = math.cos(angle), math.sin(angle)
    return [(x * c - y * s + dx, x * s + y * c + dy) for x, y in pts]


def _f(x) -> float:
    """A tensor scalar as a Python float; float32 values as their shortest decimal (0.45f -> 0.45).

    gymnasium draws with Python-float constants; recovering them keeps
    integer pixel positions such as ``int(goal * scale)`` identical.
    """
    if isinstance(x, torch.Tensor) and x.dtype == torch.float32:
        return float(repr(np.float32(x.item())).removeprefix("np.float32(").removesuffix(")"))
    return float(x)


# ---------------------------------------------------------------- the envs
def _cartpole(state, params) -> np.ndarray:
    w, h = 600, 400
    img = _canvas(h, w)
    scale = w / (_f(params.x_threshold) * 2)
    polewidth, polelen = 10.0, scale * (2 * _f(params.length))
    cartwidth, cartheight = 50.0, 30.0
    cartx, carty, axle = _f(state.x) * scale + w / 2.0, 100, cartheight / 4.0
    l, r, t, b = -cartwidth / 2, cartwidth / 2, cartheight / 2, -cartheight / 2
    _fill_convex(img, [(l + cartx, b + carty), (l + cartx, t + carty), (r + cartx, t + carty), (r + cartx, b + carty)], BLACK)
    l, r, t, b = -polewidth / 2, polewidth / 2, polelen - polewidth / 2, -polewidth / 2
    _fill_convex(img, _rotate([(l, b), (l, t), (r, t), (r, b)], -_f(state.theta), cartx, carty + axle), (202, 152, 101))
    _fill_circle(img, int(cartx), int(carty + axle), int(polewidth / 2), (129, 132, 203))
    img[carty, :] = BLACK
    return img


def _pendulum(state, params) -> np.ndarray:
    dim = 500
    img = _canvas(dim, dim)
    scale, offset = dim / (2.2 * 2), dim // 2
    rod_length, rod_width = 1 * scale, 0.2 * scale
    th = _f(state.theta) + math.pi / 2
    red = (204, 77, 77)
    l, r, t, b = 0, rod_length, rod_width / 2, -rod_width / 2
    _fill_convex(img, _rotate([(l, b), (l, t), (r, t), (r, b)], th, offset, offset), red)
    _fill_circle(img, offset, offset, int(rod_width / 2), red)
    (ex, ey), = _rotate([(rod_length, 0)], th, offset, offset)
    _fill_circle(img, int(ex), int(ey), int(rod_width / 2), red)
    _fill_circle(img, offset, offset, int(0.05 * scale), BLACK)
    return img


def _mountain_car(state, params) -> np.ndarray:
    w, h = 600, 400
    img = _canvas(h, w)
    lo, hi = _f(params.min_position), _f(params.max_position)
    scale = w / (hi - lo)

    def height(x):
        return np.sin(3 * x) * 0.45 + 0.55

    xs = np.linspace(lo, hi, 100)
    pts = list(zip((xs - lo) * scale, height(xs) * scale))
    for p0, p1 in zip(pts[:-1], pts[1:]):
        _draw_line(img, p0, p1, BLACK)
    pos, clearance, carwidth, carheight = _f(state.position), 10, 40, 20
    angle, cx, cy = math.cos(3 * pos), (pos - lo) * scale, clearance + height(pos) * scale
    l, r, t, b = -carwidth / 2, carwidth / 2, carheight, 0
    _fill_convex(img, _rotate([(l, b), (l, t), (r, t), (r, b)], angle, cx, cy), BLACK)
    for wx, wy in _rotate([(carwidth / 4, 0), (-carwidth / 4, 0)], angle, cx, cy):
        _fill_circle(img, int(wx), int(wy), int(carheight / 2.5), (128, 128, 128))
    goal = _f(params.goal_position)
    flagx, flagy1 = int((goal - lo) * scale), int(height(goal) * scale)
    flagy2 = flagy1 + 50
    _draw_line(img, (flagx, flagy1), (flagx, flagy2), BLACK)
    _fill_convex(img, [(flagx, flagy2), (flagx, flagy2 - 10), (flagx + 25, flagy2 - 5)], (204, 204, 0))
    return img


def _acrobot(state, params) -> np.ndarray:
    dim = 500
    img = _canvas(dim, dim)
    l1, l2 = _f(params.link_length_1), _f(params.link_length_2)
    scale, offset = dim / ((l1 + l2 + 0.2) * 2), dim / 2
    s0, s1 = _f(state.theta1), _f(state.theta2)
    _draw_line(img, (-2.2 * scale + offset, 1 * scale + offset), (2.2 * scale + offset, 1 * scale + offset), BLACK)
    joints = [(0.0, 0.0), (l1 * math.sin(s0) * scale, -l1 * math.cos(s0) * scale)]
    for (x, y), th, llen in zip(joints, [s0 - math.pi / 2, s0 + s1 - math.pi / 2], [l1 * scale, l2 * scale]):
        x, y = x + offset, y + offset
        l, r, t, b = 0, llen, 0.1 * scale, -0.1 * scale
        _fill_convex(img, _rotate([(l, b), (l, t), (r, t), (r, b)], th, x, y), (0, 204, 204))
        _fill_circle(img, int(x), int(y), int(0.1 * scale), (204, 204, 0))
    return img


_DRAW: dict[str, Callable[[Any, Any], np.ndarray]] = {
    "CartPole": _cartpole,
    "Pendulum": _pendulum,
    "MountainCar": _mountain_car,
    "MountainCarContinuous": _mountain_car,
    "Acrobot": _acrobot,
}


def _base(env):
    """The innermost env of a funrl wrapper stack."""
    return getattr(env, "unwrapped", env)


def renderable(env) -> bool:
    """True if :func:`render_frame` can draw ``env`` (a classic-control env, wrappers allowed)."""
    return type(_base(env)).__name__ in _DRAW and type(_base(env)).__module__.startswith("funrl.envs.")


def render_frame(env, state, params) -> np.ndarray:
    """Draw one (unbatched) state of a classic-control env as gymnasium's ``rgb_array`` frame.

    Args:
      env: a funrl CartPole, Pendulum, MountainCar, MountainCarContinuous or
        Acrobot, possibly wrapped (wrapper states are unwrapped through their
        ``env_state`` field).
      state: the env state, unbatched (scalar fields).
      params: the env params, unbatched.

    Returns:
      uint8 array ``(H, W, 3)``: ``(400, 600, 3)`` for CartPole and the
      mountain cars, ``(500, 500, 3)`` for Pendulum and Acrobot.

    Raises:
      TypeError: ``env`` is not one of the envs above.
    """
    if not renderable(env):
        raise TypeError(
            f"env: expected one of the classic-control envs {sorted(_DRAW)} (possibly wrapped), "
            f"got {type(_base(env)).__name__}"
        )
    while hasattr(state, "env_state"):
        state = state.env_state
    frame = _DRAW[type(_base(env)).__name__](state, params)
    return np.ascontiguousarray(frame[::-1])
