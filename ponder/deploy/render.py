"""The entry: a PonderConfig and targets -> {relative path: YAML text}, then written to a folder.

Targets and their files (rendering several into one folder merges them; the shared files are
the same bytes from each target):

- `rayservice`: `00-namespace.yaml`, `10-api-key-secret.yaml` (only with deploy.api_key_value),
  `20-redis.yaml` (without jobs.redis_url), `25-config.yaml` (the runtime config file the heads
  mount), `30-rayservice.yaml`, `40-pdb.yaml`, `50-monitoring.yaml` (with deploy.monitoring).
  `kubectl apply -f DIR` applies them in this order.
- `rayjob`: `00-namespace.yaml`, `20-redis.yaml`, `25-config.yaml` and `jobs/<job>.yaml` (the
  RayJob), in a subfolder so that applying the folder does not start a job.
- `cluster-launcher`: `cluster.yaml`.

Everything is checked before anything is written; a bad config is one ConfigError line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ponder.config import ConfigError, PonderConfig
from ponder.deploy import checks, k8s_objects, kuberay, launcher
from ponder.deploy.plan import Plan, make_plan
from ponder.deploy.yamlout import documents

TARGETS = ("rayservice", "rayjob", "cluster-launcher")


def _header(source: str | None, target: str) -> str:
    origin = f" from {source}" if source else ""
    return (f"# Rendered by `ponder deploy render`{origin}.\n"
            "# Do not edit by hand: change the config and render again.\n")


def _shared(plan: Plan, target: str, source: str | None) -> dict[str, str]:
    files = {"00-namespace.yaml": documents([k8s_objects.namespace(plan)], _header(source, target))}
    if plan.in_cluster_redis:
        files["20-redis.yaml"] = documents(k8s_objects.redis(plan), _header(source, target))
    files["25-config.yaml"] = documents([k8s_objects.config_map(plan, kuberay.config_map_name(plan))],
                                        _header(source, target))
    return files


def _rayservice(plan: Plan, source: str | None) -> dict[str, str]:
    t = "rayservice"
    files = _shared(plan, t, source)
    if plan.deploy.api_key_value is not None:
        files["10-api-key-secret.yaml"] = documents(
            [k8s_objects.api_key_secret(plan)],
            _header(source, t) + "# A development key, not a secret: production creates the Secret by hand "
            "(k8s/README.md).\n")
    files["30-rayservice.yaml"] = documents([kuberay.rayservice(plan)], _header(source, t))
    files["40-pdb.yaml"] = documents(k8s_objects.disruption_budgets(plan), _header(source, t))
    if plan.deploy.monitoring:
        files["50-monitoring.yaml"] = documents(k8s_objects.monitors(plan), _header(source, t))
    return files


def _rayjob(plan: Plan, source: str | None) -> dict[str, str]:
    t = "rayjob"
    files = _shared(plan, t, source)
    files[f"jobs/{plan.deploy.job.name}.yaml"] = documents(
        [kuberay.rayjob(plan)],
        _header(source, t) + "# Start a job: kubectl apply -f THIS; another one: kubectl delete -f THIS first.\n")
    return files


def _launcher(plan: Plan, source: str | None) -> dict[str, str]:
    header = _header(source, "cluster-launcher") + (
        "# Ray cluster launcher: pip wheel --no-deps -w dist . && ray up cluster.yaml (k8s/README.md).\n")
    if plan.config.jobs.redis_url is None:
        header += ("# No jobs.redis_url in the config: give ponder submit / ponder serve a Redis every node "
                   "reaches with --redis.\n")
    return {"cluster.yaml": documents([launcher.cluster_yaml(plan)], header)}


_RENDERERS = {"rayservice": _rayservice, "rayjob": _rayjob, "cluster-launcher": _launcher}


def render(config: PonderConfig, targets: Iterable[str], source: str | None = None) -> dict[str, str]:
    """{relative path: file text} for the targets; deterministic (the same config gives the same bytes)."""
    targets = list(dict.fromkeys(targets))
    if not targets:
        raise ConfigError(f"no target: use {', '.join(TARGETS)}")
    for t in targets:
        if t not in _RENDERERS:
            raise ConfigError(f"unknown target {t!r} (known: {', '.join(TARGETS)})")
    checks.check(config)
    plan = make_plan(config)
    files: dict[str, str] = {}
    for t in targets:
        for path, text in _RENDERERS[t](plan, source).items():
            if files.setdefault(path, text) != text:
                raise AssertionError(f"two targets render {path} differently")
    return dict(sorted(files.items()))


def write(files: dict[str, str], out: Path) -> list[Path]:
    """Write every file under `out` (each through a temporary file, then renamed into place)."""
    written = []
    for rel, text in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written
