"""Every manifest the project ships or renders passes ../shared/k8s/validate.py: the KubeRay
v1.7.0 CRD schemas, Kubernetes' own (with kubernetes-validate installed) and Ray's
ray-schema.json for cluster.yaml. Skipped where ../shared/k8s is not beside the repo."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

VALIDATE = REPO.parent / "shared" / "k8s" / "validate.py"

pytestmark = [
    pytest.mark.skipif(not VALIDATE.is_file(), reason=f"{VALIDATE} is not there"),
    pytest.mark.skipif(importlib.util.find_spec("jsonschema") is None, reason="validate.py needs jsonschema"),
]


def validate(*paths: Path | str) -> subprocess.CompletedProcess:
    strict = ["--require-core"] if importlib.util.find_spec("kubernetes_validate") else []
    return subprocess.run([sys.executable, str(VALIDATE), *strict, *map(str, paths)], check=False,
                          capture_output=True, text=True, cwd=REPO, timeout=300)


def test_shipped_and_freshly_rendered_manifests_validate(rendered: Path):
    done = validate("k8s", "cluster.yaml", rendered)
    assert done.returncode == 0 and " 0 error(s)" in done.stderr, done.stdout + done.stderr
    kinds = {"RayService", "RayJob", "StatefulSet", "Service", "Secret", "PodDisruptionBudget", "ServiceMonitor"}
    text = "".join(p.read_text() for p in (REPO / "k8s").rglob("*.yaml"))
    assert all(f"kind: {k}\n" in text for k in kinds)


def test_the_validator_catches_a_broken_manifest(tmp_path: Path):
    """It really checks these files: an unknown field in the RayService and a bad quantity fail."""
    text = (REPO / "k8s/dev/30-rayservice.yaml").read_text()
    broken = text.replace("  upgradeStrategy:\n", "  upgradeStrategi:\n", 1).replace("cpu: '2'", "cpu: 2x", 1)
    assert broken != text
    (tmp_path / "rs.yaml").write_text(broken)
    done = validate(tmp_path / "rs.yaml")
    assert done.returncode == 1 and "upgradeStrategi" in done.stdout and "2x" in done.stdout, done.stdout
