"""The progress output of ``funrl.run``: one unit, honest rate and ETA, carried returns, compile notice."""

import io
import math

import torch
from helpers import TINY

import funrl
from funrl.runner import _Progress


class Clock:
    """A fake clock the tests move by hand."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def chunk(returns, episodes):
    """Synthetic chunk metrics ``[S, C]`` (seeds x updates, as the runner gives them) from nested lists
    written one update per row (updates x seeds)."""
    return {"episode_return": torch.tensor(returns, dtype=torch.float32).T,
            "episodes": torch.tensor(episodes, dtype=torch.int64).T,
            "loss": torch.zeros(len(returns[0]), len(returns))}


def progress(**kw):
    args = dict(label="sac/Pendulum-v1", num_updates=100, steps_per_update=10, seeds=2, enabled=True,
                clock=Clock(), tty=False, every_s=0.0)
    args.update(kw)
    return _Progress(**args)


def lines(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if line]


def test_tiny_ppo_plain_lines_state_the_unit_and_show_no_nan(tmp_path, capsys):
    funrl.run("ppo", seeds=2, total_steps=32, out=str(tmp_path / "run"), compile=False, progress=True, plot=False,
              chunk_size=1, **{**TINY["ppo"], "total_timesteps": 32})
    out = lines(capsys)
    shown = [line for line in out if line.startswith("[ppo/CartPole-v1]")]
    assert shown, out
    last = shown[-1]
    # 4 updates x 8 env steps x 2 seeds, counted and rated in the same unit
    assert "64/64 env steps summed over 2 seeds (100%)" in last, last
    assert "env steps/s" in last and "eta 0 s" in last, last
    assert all("nan" not in line.lower() for line in shown), shown
    assert not any("compil" in line for line in out), out  # compile=False: no compile notice


def test_long_episode_returns_are_carried_across_chunks(capsys):
    p = progress()
    # chunk 1: seed 0 ends an episode, seed 1 none -> seed 1 has no return yet, never "nan"
    p.update(3, chunk([[0.0, 0.0], [-200.0, 0.0], [0.0, 0.0]], [[0, 0], [1, 0], [0, 0]]))
    # chunk 2: seed 1 ends one (update 5); seed 0 ends two, the later one counts
    p.update(6, chunk([[-150.0, 0.0], [0.0, -300.0], [-100.0, 0.0]], [[1, 0], [0, 1], [1, 0]]))
    # chunk 3: no episode anywhere -> both carried
    p.update(9, chunk([[0.0, 0.0]] * 3, [[0, 0]] * 3))
    one, two, three = lines(capsys)
    assert "return (last episode, 1/2 seeds) mean -200 iqm -200" in one, one
    assert "return (last episode, 2/2 seeds) mean -200 " in two, two  # (-100 + -300) / 2
    assert "return (last episode, 2/2 seeds) mean -200 " in three, three
    assert all("nan" not in line.lower() for line in (one, two, three))
    assert torch.equal(p.last_return, torch.tensor([-100.0, -300.0], dtype=torch.float64))


def test_no_episode_yet_shows_a_dash(capsys):
    p = progress()
    p.update(1, chunk([[0.0, 0.0]], [[0, 0]]))
    (line,) = lines(capsys)
    assert "return —" in line and "nan" not in line.lower(), line


def test_diverged_seeds_are_counted_not_hidden(capsys):
    p = progress(seeds=3)
    p.update(1, chunk([[10.0, math.nan, 20.0]], [[1, 1, 1]]))
    (line,) = lines(capsys)
    assert "diverged: 1" in line, line
    assert "2/3 seeds) mean 15" in line, line
    # a NaN in another metric (no episode ended) counts too, and stays counted
    m = chunk([[0.0, 0.0, 0.0]], [[0, 0, 0]])
    m["loss"][2, 0] = math.inf  # seed 2
    p.update(2, m)
    p.update(3, chunk([[0.0, 0.0, 0.0]], [[0, 0, 0]]))
    _, last = lines(capsys)
    assert "diverged: 2" in last and "1/3 seeds) mean 10" in last, last


def test_compile_notice_only_with_compile(capsys):
    clock = Clock()
    p = progress(compile=True, clock=clock)
    (notice,) = lines(capsys)
    assert "compiling the vmapped pieces (first run in this environment: about" in notice, notice
    assert "later runs reuse Inductor's cache" in notice and "measured" in notice
    clock.t = 41.0
    p.update(10, chunk([[0.0, 0.0]] * 10, [[0, 0]] * 10))
    compiled, first = lines(capsys)
    assert "compiled in 41 s" in compiled, compiled
    assert "— env steps/s" in first, first  # no rate yet: the only chunk so far was compiling
    clock.t = 42.0
    p.update(20, chunk([[0.0, 0.0]] * 10, [[0, 0]] * 10))
    (second,) = lines(capsys)
    # the rate leaves the compile out: 10 updates x 10 steps x 2 seeds in 1 s; 80 updates left -> 8 s
    assert "200 env steps/s" in second and "eta 8 s" in second, second

    progress(compile=False)
    assert lines(capsys) == []


def test_rate_and_eta_after_resume_count_only_this_process(capsys):
    clock = Clock()
    clock.t = 1000.0
    p = progress(start_update=50, clock=clock)
    clock.t = 1010.0
    p.update(60, chunk([[0.0, 0.0]] * 10, [[0, 0]] * 10))
    (line,) = lines(capsys)
    # 10 new updates x 10 steps x 2 seeds in 10 s = 20/s (not 60 updates' worth); 40 updates left: 40 s
    assert "1,200/2,000 env steps summed over 2 seeds (60%)" in line, line
    assert "20 env steps/s" in line and "eta 40 s" in line, line


def test_bar_on_a_terminal_starts_at_the_resumed_update():
    stream = io.StringIO()
    clock = Clock()
    p = progress(start_update=50, clock=clock, tty=True, stream=stream)
    assert p.bar.initial == 50 * 10 * 2 and p.bar.total == 100 * 10 * 2
    assert p.bar.n == p.bar.initial
    clock.t = 10.0
    p.update(60, chunk([[1.0, 2.0]] * 10, [[1, 1]] * 10))
    p.close()
    text = stream.getvalue()
    assert "env steps summed over 2 seeds" in text and "20 env steps/s" in text and "eta 40 s" in text, text
    assert "nan" not in text.lower()
