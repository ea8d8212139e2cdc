"""A driver that started a local Ray cluster takes the cluster's processes with it, even when it
is SIGKILLed, and even in the middle of `ray.init` (issue 15.8)."""

import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

pytestmark = pytest.mark.ray

DRIVER = textwrap.dedent("""
    import sys, time
    from ponder.config import ClusterConfig
    from ponder.scheduler.cluster import ensure_ray
    ensure_ray(ClusterConfig(address="local"), num_cpus=1)
    print("up", flush=True)
    time.sleep(600)
""")


def _gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not procs:
            return []
        time.sleep(0.2)
    return procs


def _start() -> tuple[subprocess.Popen, psutil.Process]:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**__import__("os").environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
    return proc, psutil.Process(proc.pid)


def _ray_processes(driver: psutil.Process) -> list[psutil.Process]:
    return [p for p in driver.children(recursive=True) if "reaper" not in " ".join(p.cmdline())]


def _kill_and_check(proc: subprocess.Popen, procs: list[psutil.Process]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    left = _gone(procs, timeout_s=15)
    assert not left, [" ".join(p.cmdline())[:80] for p in left]


def test_sigkill_of_the_driver_ends_the_local_cluster():
    proc, driver = _start()
    try:
        assert proc.stdout.readline().strip() == "up"
        ray_procs = _ray_processes(driver)
        names = " ".join(" ".join(p.cmdline()) for p in ray_procs)
        assert "raylet" in names and "gcs_server" in names
        _kill_and_check(proc, ray_procs)
    finally:
        proc.kill()


def test_sigkill_during_start_up_leaves_nothing():
    proc, driver = _start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the GCS is up, ray.init has not returned yet
            procs = _ray_processes(driver)
            if any("gcs_server" in " ".join(p.cmdline()) for p in procs):
                break
            time.sleep(0.05)
        else:
            pytest.fail("Ray did not start")
        time.sleep(0.3)
        _kill_and_check(proc, _ray_processes(driver))
    finally:
        proc.kill()
