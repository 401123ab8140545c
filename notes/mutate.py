"""Apply one-line mutations to a funrl file one at a time, run a test module, report which survive.

Usage: PYTHONPATH=. python notes/mutate.py MUTATIONS.json
MUTATIONS.json: {"test": "tests/test_x.py", "mutations": [["funrl/...py", "old text", "new text"], ...]}
Each old text must occur exactly once; the file is restored with ``git checkout --`` after each run.
"""
import json
import os
import subprocess
import sys

spec = json.load(open(sys.argv[1]))
env = dict(os.environ, OMP_NUM_THREADS="1")
survivors = 0
for path, old, new in spec["mutations"]:
    src = open(path).read()
    assert src.count(old) == 1, (path, old, src.count(old))
    open(path, "w").write(src.replace(old, new))
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "-x", spec["test"]],
                           capture_output=True, text=True, env=env)
    finally:
        subprocess.run(["git", "checkout", "--", path], check=True)
    caught = r.returncode != 0
    survivors += not caught
    last = [l for l in r.stdout.splitlines() if l.startswith(("FAILED", "ERROR", "E "))][:1]
    print(f"{'CAUGHT ' if caught else 'SURVIVED'} {path}: {old!r} -> {new!r}  {last[0][:150] if last else ''}", flush=True)
print(f"{survivors} survived")
