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

@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
