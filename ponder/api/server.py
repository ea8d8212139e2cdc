"""`ponder serve`: deploy the Serve app on the connected cluster, wait until the pools answer,
then serve until interrupted. The app is deleted on exit; the scheduler and its replica pools are
detached and shared with the job worker, so they stay (`ray stop` ends a local cluster)."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from ponder.config import PonderConfig

APP_NAME = "ponder"


def deploy(config: PonderConfig, redis_url: str | None, tokens: dict[str, str]) -> str:
    """Start Serve's HTTP proxy on api.host:api.port and deploy the app; returns its base URL."""
    from ray import serve

    from ponder.api.app import build_app

    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    a = config.api
    serve.start(http_options={"host": a.host, "port": int(a.port)})
    serve.run(build_app(config, redis_url=redis_url, tokens=tokens), name=APP_NAME, route_prefix="/")
    return f"http://{a.host}:{a.port}"


def wait_ready(url: str, timeout_s: float = 600.0) -> dict[str, Any]:
    """Poll /healthz until the pools answer (the first call starts them: models load)."""
    import json

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=60) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            last = e.read().decode(errors="replace")[:200]
        except OSError as e:
            last = str(e)
        time.sleep(1.0)
    raise TimeoutError(f"the service did not become ready within {timeout_s:.0f}s: {last}")


def serve_until_interrupted(stop: threading.Event | None = None) -> None:
    from ray import serve

    stop = stop or threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        print("ponder: stopping the HTTP service", file=sys.stderr)
        try:
            serve.delete(APP_NAME)
        except Exception:  # the cluster is already gone
            pass


def record_path(state_dir: Path) -> Path:
    return Path(state_dir) / "serve.json"


def record(state_dir: Path, url: str, config: PonderConfig) -> Path:
    """Say where this server listens, so `ponder solve` on the same machine can use it."""
    import json
    import os

    from ponder.jobs.spec import runner_config
    from ponder.jobs.worker import deployment_name

    path = record_path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "deployment": deployment_name(runner_config(config))}))
    tmp.replace(path)
    return path


def find_server(state_dir: Path, config: PonderConfig) -> str | None:
    """The URL of a running `ponder serve` of the same deployment (engines and search settings)
    on this machine, or None."""
    import json
    import os

    from ponder.jobs.spec import runner_config
    from ponder.jobs.worker import deployment_name

    try:
        rec = json.loads(record_path(state_dir).read_text())
        os.kill(int(rec["pid"]), 0)  # the server process is alive
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if rec.get("deployment") != deployment_name(runner_config(config)):
        return None
    try:
        with urllib.request.urlopen(f"{rec['url']}/healthz", timeout=2) as r:
            return rec["url"] if r.status == 200 else None
    except OSError:
        return None
