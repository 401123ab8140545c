"""Videos of trained policies: ``funrl eval RUN --video`` writes ``RUN/videos/seed<i>.gif``.

Each seed's greedy/mean policy (the algorithm's ``evaluation_policy``, what
``funrl eval`` scores) plays whole episodes of the run's env; every env state,
the initial one included, is drawn by :func:`funrl.envs.rendering.render_frame`
(gymnasium's ``rgb_array`` frames, numpy only), and the frames are written as an
animated GIF with ``imageio`` (``pip install 'funrl[video]'``) at the env's
gymnasium frame rate, looping.

An episode of T steps gives T + 1 frames (the state after the reset and after
each step; the last one is the state that ended the episode, not the auto-reset
one).  GIF writers store a run of identical frames as one frame shown that
many times longer, so a decoder may return fewer images; their durations add
up to the same total.

Classic-control envs only (CartPole, Pendulum, MountainCar,
MountainCarContinuous, Acrobot): the others have no funrl rendering.
Randomness: episode *e* of seed *i* starts from ``fold_in(fold_in(key(seed), i), e)``.
"""

from __future__ import annotations

import os

import numpy as np
import torch

import funrl
from funrl import random as jr
from funrl import tree
from funrl.envs import rendering

__all__ = ["require_imageio", "episode_frames", "write_gif", "record_run"]

_INSTALL = "pip install 'funrl[video]'"


def require_imageio():
    """The ``imageio.v3`` module, or a clear error when imageio is missing.

    Raises:
      ImportError: imageio is not installed (the message says how to install it).
    """
    try:
        import imageio.v3 as iio
    except ImportError as e:
        raise ImportError(f"video: writing videos needs the imageio package ({e}); install it with: {_INSTALL}") from None
    return iio


def episode_frames(act, state, env, env_params, key: torch.Tensor, max_steps: int | None = None):
    """Play one episode of one seed's policy and draw every state.

    Args:
      act: ``act(state, key, obs[K, ...]) -> actions[K, ...]`` for one seed (an
        algorithm's ``evaluation_policy``); called with K = 1.
      state: that seed's training state (unbatched leaves).
      env, env_params: a classic-control env (see :func:`funrl.envs.rendering.renderable`) and its params.
      key: a key ``(2,)``; the reset uses ``split(key)[0]``, step t ``split(fold_in(split(key)[1], t))``.
      max_steps: stop after this many steps even if the episode goes on
        (default: the env's ``max_episode_steps``).

    Returns:
      ``(frames, episode_return, steps)``: a list of ``steps + 1`` uint8 arrays
      ``(H, W, 3)``, the undiscounted return (float) and the number of steps.

    Raises:
      TypeError: ``env`` has no funrl rendering.
      ValueError: ``max_steps`` < 1.
    """
    result = {}
    frames = list(_play(act, state, env, env_params, key, max_steps, result))
    return frames, result["return"], result["steps"]


def _play(act, state, env, env_params, key, max_steps, result: dict):
    """:func:`episode_frames` as a generator of frames (one frame in memory at a time);
    ``result`` gets ``return`` and ``steps`` when the episode ends."""
    if not rendering.renderable(env):
        raise TypeError(f"env: expected a classic-control env with rgb_array rendering "
                        f"({', '.join(sorted(rendering.RENDER_FPS))}), got {getattr(env, 'name', type(env).__name__)}")
    limit = int(env_params.max_episode_steps) if max_steps is None else max_steps
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"max_steps: expected an int >= 1, got {max_steps!r}")
    k_reset, key = jr.split(key)
    with torch.no_grad():
        obs, env_state = env.reset(k_reset, env_params)
        yield rendering.render_frame(env, env_state, env_params)
        total, t = 0.0, 0
        while t < limit:
            k_act, k_env = jr.split(jr.fold_in(key, t))
            action = act(state, k_act, obs[None])[0]
            # no auto-reset: the last frame shows the state that ended the episode
            obs, env_state, reward, terminated, truncated, _ = env.step(k_env, env_state, action, env_params,
                                                                       autoreset=False)
            yield rendering.render_frame(env, env_state, env_params)
            total += float(reward)
            t += 1
            if bool(terminated) or bool(truncated):
                break
    result.update({"return": total, "steps": t})


class _PaletteFrames:
    """RGB frames stored as palette indices (a third of the memory), the palette grown as colours appear.

    Up to 256 colours the indices are exact (funrl's frames have a handful);
    the colours of a frame that would exceed 256 become their nearest palette
    colours.  An exact palette also spares the GIF writer its own adaptive
    quantization: 6 vs 16 ms of CPU per 600x400 CartPole frame, measured.
    """

    def __init__(self):
        from PIL import Image  # an imageio dependency

        self._image = Image
        self.colours: list[tuple[int, int, int]] = []
        self._known: set = set()
        self.index: list[np.ndarray] = []
        self.shape = None
        self._target = None

    def add(self, frame) -> None:
        i = len(self.index)
        if self.shape is None and isinstance(frame, np.ndarray):
            self.shape = frame.shape
        if (not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3
                or frame.shape != self.shape):
            got = (frame.dtype, frame.shape) if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frames[{i}]: expected a uint8 array (H, W, 3) of the first frame's shape "
                             f"{self.shape}, got {got}")
        Image = self._image
        im = Image.fromarray(frame)
        # more than 256 colours in the frame: its most frequent ones join the palette while it has room
        counts = im.getcolors(256) or sorted(im.getcolors(frame.shape[0] * frame.shape[1]), reverse=True)
        new = [c for _, c in counts if c not in self._known][: 256 - len(self.colours)]
        if new or self._target is None:
            self.colours += new
            self._known.update(new)
            flat = np.array(self.colours, dtype=np.uint8).tobytes()
            self._target = Image.new("P", (1, 1))
            self._target.putpalette(flat + bytes(768 - len(flat)))
        # a colour in the palette maps to itself (its nearest entry)
        self.index.append(np.asarray(im.quantize(palette=self._target, dither=Image.Dither.NONE)))

    @property
    def palette(self) -> np.ndarray:
        return np.array(self.colours, dtype=np.uint8).reshape(-1, 3)


def write_gif(frames, path: str, fps: float) -> str:
    """Write ``frames`` as a looping animated GIF, atomically.

    Args:
      frames: a non-empty iterable (a generator is fine: frames are converted
        as they come) of uint8 arrays ``(H, W, 3)`` of one size.  Exact up to
        256 distinct colours over all frames; beyond, later colours become the
        nearest of the first 256.
      path: the ``.gif`` file.
      fps: frames per second (each frame is shown ``round(1000 / fps)`` ms; GIF
        stores delays in 10 ms units).

    Returns:
      ``path``.

    Raises:
      ValueError: no frames, frames of different sizes or not uint8 RGB, or ``fps`` <= 0.
      ImportError: imageio is missing.
    """
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"fps: expected a number > 0, got {fps!r}")
    iio = require_imageio()
    indexed = _PaletteFrames()
    for frame in frames:
        indexed.add(frame)
    if not indexed.index:
        raise ValueError("frames: expected at least one frame, got none")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.gif"
    try:
        iio.imwrite(tmp, np.stack(indexed.index), extension=".gif", mode="P", palette=indexed.palette.tobytes(),
                    duration=round(1000 / fps), loop=0)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def record_run(directory: str, episodes: int = 1, seed: int = 12345, out_dir: str | None = None) -> list[dict]:
    """Write a GIF of each seed's policy of a results folder (what ``funrl eval --video`` does).

    Args:
      directory: a ``funrl train`` results folder; its newest good checkpoint is played.
      episodes: episodes per seed, one after the other in the seed's GIF.
      seed: the base seed of the episodes (see the module docstring).
      out_dir: where the GIFs go (default ``directory/videos``).

    Returns:
      per seed ``{"seed", "path", "returns" (one float per episode), "frames"}``.

    Raises:
      ValueError: ``episodes`` not an int >= 1; a run of an algorithm without an
        evaluation policy or of an env funrl cannot render (naming it).
      ImportError: imageio is missing (checked before anything is played).
    """
    from funrl.algorithms import get
    from funrl.results import load_trained, read_config_json

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: expected an int >= 1, got {episodes!r}")
    cfg = read_config_json(os.path.join(directory, "config.json"))
    module = get(cfg["algo"])
    if not hasattr(module, "evaluation_policy"):
        raise ValueError(f"directory: {directory!r} is a {cfg['algo']} run; videos need an env-based algorithm "
                         f"with an evaluation policy")
    # checked before the checkpoint is read: the env alone decides whether there can be a video
    env, _ = funrl.envs.make(cfg["env"], **(cfg.get("env_params") or {}))
    if not rendering.renderable(env):
        raise ValueError(f"directory: {directory!r} trained on {cfg['env']}, which funrl cannot render; videos "
                         f"support the classic-control envs ({', '.join(sorted(rendering.RENDER_FPS))})")
    require_imageio()
    # on the CPU, with the env: a run trained on a GPU plays here too
    run = load_trained(directory, map_location="cpu")
    module, config, env, env_params, states = run.module, run.config, run.env, run.env_params, run.states
    act = module.evaluation_policy(config, env, env_params)
    fps = rendering.RENDER_FPS[type(getattr(env, "unwrapped", env)).__name__]
    out_dir = out_dir or os.path.join(directory, "videos")
    base = jr.key(seed)
    results = []
    for i in range(int(cfg["seeds"])):
        state = tree.map(lambda x: x[i], states)
        played = [{} for _ in range(episodes)]
        # a generator: each frame is played, drawn and indexed before the next one exists
        frames = (frame for e in range(episodes)
                  for frame in _play(act, state, env, env_params, jr.fold_in(jr.fold_in(base, i), e), None, played[e]))
        path = write_gif(frames, os.path.join(out_dir, f"seed{i}.gif"), fps)
        results.append({"seed": i, "path": path, "returns": [p["return"] for p in played],
                        "frames": sum(p["steps"] + 1 for p in played)})
    return results
