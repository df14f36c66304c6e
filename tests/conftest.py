"Shared helpers for the tests of the installed package."
import os, subprocess, sys, shutil
from pathlib import Path
import pytest, torch

def bin_path(name):
    "An installed console script, from the same environment as this Python"
    p = Path(sys.executable).parent/name
    return str(p) if p.exists() else shutil.which(name)

def run(args, env=None, **kw):
    "Run a command, return the CompletedProcess (text); `env` adds to (or overrides) this process's environment"
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}, **kw)

def one_line(r, contains, status=2):
    "The command failed with `status` and said one line, without a traceback, containing `contains`"
    lines = r.stderr.strip().splitlines()
    assert r.returncode == status, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert contains in lines[0], lines[0]
    return lines[0]

@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
