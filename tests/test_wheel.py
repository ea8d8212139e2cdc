"""The built wheel carries the shipped models: installed into a fresh venv outside the repo (its
dependencies borrowed from the test environment, so nothing is downloaded), `ponder eval` runs on
the default models, and the ponder it runs is the installed one."""

from __future__ import annotations

import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_installed_wheel_runs_eval_on_the_shipped_models(tmp_path: Path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO),
                    "-w", str(wheels)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("ponder-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    target = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # The dependencies (torch, transformers, ...) from this environment, after the wheel on the path;
    # this environment's editable ponder is not on it (its .pth hook is not processed from here).
    (target / "zz_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run([str(py), "-c", "import ponder.config as c; print(c.__file__); print(c.MODELS_DIR)"],
                           cwd=work, env=env, check=True, capture_output=True, text=True).stdout.split()
    assert where[0].startswith(str(target)) and where[1].startswith(str(target))
    out = work / "r.jsonl"
    done = subprocess.run([str(py), "-m", "ponder", "eval", "--dataset", "arith:4", "--strategy", "greedy",
                           "--out", str(out), "--address", "inprocess", "--quiet"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 4
