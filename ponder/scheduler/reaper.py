"""Ray's local processes go when the driver that started them goes, however it goes.

`ray.init()` without an address starts the cluster's processes (GCS, raylet and their agents)
as children of the driver. When the driver dies without shutting Ray down (SIGKILL, a crash, a
second Ctrl-C during start-up), two of Ray's agents outlive it for minutes, one ignoring
SIGTERM. So before it starts Ray, the driver starts this watcher in its own session and keeps a
pipe to it open. The watcher follows the processes the driver starts while `ray.init` runs and
their descendants; when the pipe closes (the driver is gone, cleanly or not) it ends those still
running, SIGTERM first and SIGKILL after a grace period. Nothing else the driver starts (an
embedded Redis meant to outlive it, a `ray start` head) is touched.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import psutil

POLL_S = 0.2
GRACE_S = 3.0  # after the driver is gone: Ray's own shutdown first, then SIGTERM, then SIGKILL

_pipe: int | None = None  # the driver's end; closing it (at exit) tells the watcher to clean up


def start_watcher() -> None:
    """Start the watcher for this process, once; returns after its first look at the children."""
    global _pipe
    if _pipe is not None:
        return
    read, write = os.pipe()  # non-inheritable: Ray's processes do not keep the pipe open
    proc = subprocess.Popen([sys.executable, "-m", "ponder.scheduler.reaper", str(os.getpid())],
                            stdin=read, stdout=subprocess.PIPE, start_new_session=True)
    os.close(read)
    _pipe = write
    proc.stdout.readline()  # "ready": it has seen the children that exist before Ray starts
    proc.stdout.close()


def arm() -> None:
    """Ray has started: from now on follow only what started during `ray.init` and its descendants."""
    if _pipe is not None:
        os.write(_pipe, b"armed\n")


def _descendants(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def watch(driver_pid: int) -> None:
    me = os.getpid()
    driver = psutil.Process(driver_pid)
    before = {p.pid for p in _descendants(driver)}  # not ours to end
    print("ready", flush=True)
    roots: list[psutil.Process] | None = None  # set when armed: the processes ray.init started
    known: dict[int, psutil.Process] = {}
    while True:
        ready, _, _ = select.select([0], [], [], POLL_S)
        if ready:
            line = os.read(0, 64)
            if not line:
                break  # the driver is gone
            if roots is None and b"armed" in line:
                roots = [p for p in _descendants(driver) if p.pid not in before and p.pid != me
                         and p.ppid() == driver_pid]
        followed = (_descendants(driver) if roots is None
                    else [q for r in roots for q in [r, *_descendants(r)]])
        for p in followed:
            if p.pid not in before and p.pid != me:
                known.setdefault(p.pid, p)
    time.sleep(1.0)  # a driver exiting cleanly has shut Ray down already
    alive = [p for p in known.values() if p.is_running()]  # is_running checks the start time too
    for p in alive:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=GRACE_S)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the driver's to handle
    watch(int(sys.argv[1]))
