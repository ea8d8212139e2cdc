"""`ponder deploy render`: the repo's k8s/ and cluster.yaml are the rendered example configs, byte
for byte; the rendered pieces carry the config's own pool sizes, resources and models (no second
copy); the Serve config builds the app; the RayJob's entrypoint is a valid `ponder submit`; bad
configs fail with one line and write nothing."""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ponder.api.cli import build_parser, main
from ponder.config import check_types
from ponder.config import MODELS_DIR, DeployConfig, PonderConfig
from ponder.deploy import render
from ponder.deploy.checks import SCHEDULER_STRATEGIES, known_strategies
from tests.deploy.conftest import EXAMPLES, REPO, shell_command


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _kind(root: Path, kind: str) -> dict:
    found = [d for p in sorted(root.rglob("*.yaml")) for d in _docs(p) if d.get("kind") == kind]
    assert len(found) == 1, (kind, len(found))
    return found[0]


# ---------------------------------------------------------------------------- drift


def test_repo_manifests_are_the_rendered_example_configs(rendered: Path):
    regenerate = "\n  ".join(shell_command(*e) for e in EXAMPLES)
    hint = f"k8s/ or cluster.yaml differ from their configs; regenerate them from the repo root with:\n  {regenerate}"
    for config, targets, out in EXAMPLES:
        if out == ".":
            want = {"cluster.yaml": (rendered / "cluster.yaml").read_bytes()}
            have = {"cluster.yaml": (REPO / "cluster.yaml").read_bytes() if (REPO / "cluster.yaml").exists() else b""}
        else:
            want, have = _files(rendered / out), _files(REPO / out)
        assert sorted(have) == sorted(want), f"{out}: files {sorted(set(have) ^ set(want))} differ. {hint}"
        for name in want:
            assert have[name] == want[name], f"{out}/{name} is not what {config} renders. {hint}"
    # Every file under k8s/ is rendered, except the hand-written operator guide.
    shipped = {p.relative_to(REPO / "k8s").as_posix() for p in (REPO / "k8s").rglob("*") if p.is_file()}
    renderable = {f"{Path(out).relative_to('k8s').as_posix()}/{n}" for _, _, out in EXAMPLES if out != "."
                  for n in _files(rendered / out)}
    assert shipped - renderable == {"README.md"}, hint


def test_rendering_is_deterministic_across_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(REPO)
    config = PonderConfig.load("configs/deploy-prod.yaml")
    first = render(config, ["rayservice", "rayjob", "cluster-launcher"], source="configs/deploy-prod.yaml")
    assert render(PonderConfig.load("configs/deploy-prod.yaml"), ["cluster-launcher", "rayjob", "rayservice"],
                  source="configs/deploy-prod.yaml") == first
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-m", "ponder", "deploy", "render", "--config", "configs/deploy-prod.yaml",
                    "--target", "rayservice", "--target", "rayjob", "--target", "cluster-launcher",
                    "--out", str(tmp_path)], check=True, capture_output=True, env=env, cwd=REPO, timeout=120)
    assert {k: v.decode() for k, v in _files(tmp_path).items()} == first


# ---------------------------------------------------------------------------- one source


@pytest.mark.parametrize("env", ["prod", "dev"])
def test_groups_carry_the_pools_sizes_and_custom_resources(env: str):
    config = PonderConfig.load(REPO / f"configs/deploy-{env}.yaml")
    c, d = config.cluster, config.deploy
    rs = _kind(REPO / "k8s" / env, "RayService")
    cluster = rs["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"] and cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert sorted(groups) == ["policy", "prm"]
    for name, role, resources, spec in (("policy", "policy", c.policy_resources, d.policy),
                                        ("prm", "reward", c.reward_resources, d.prm)):
        g = groups[name]
        assert (g["minReplicas"], g["maxReplicas"]) == c.replica_range(role)
        assert g["resources"] == {k: str(v) for k, v in resources.items()}
        pod = g["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == (str(spec.gpus) if spec.gpus else None)
        assert pod.get("nodeSelector", {}) == spec.node_selector and pod.get("tolerations", []) == spec.tolerations
        for container in pod["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"]
    if env == "prod":
        assert all(groups[n]["template"]["spec"]["nodeSelector"] for n in groups)
    assert cluster["gcsFaultToleranceOptions"]["redisAddress"].startswith(f"{d.name}-redis.{d.namespace}.svc")
    # The launcher's node types: the same custom resources and min/max workers.
    if env == "prod":
        launcher = _docs(REPO / "cluster.yaml")[0]
        types = launcher["available_node_types"]
        assert sorted(types) == ["head", "policy_gpu", "prm_gpu"] and types["head"]["resources"] == {"CPU": 0}
        for t, role, resources in (("policy_gpu", "policy", c.policy_resources), ("prm_gpu", "reward", c.reward_resources)):
            assert (types[t]["min_workers"], types[t]["max_workers"]) == c.replica_range(role)
            assert {k: types[t]["resources"][k] for k in resources} == resources and types[t]["resources"]["GPU"] == 1
        assert any("ponder-0.1.0-py3-none-any.whl[vllm]" in cmd for cmd in launcher["setup_commands"])


@pytest.mark.parametrize("env", ["prod", "dev"])
def test_serve_config_builds_the_app_from_the_whole_config(env: str):
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from ponder.api.app import app_from_args

    rs = _kind(REPO / "k8s" / env, "RayService")
    sc = yaml.safe_load(rs["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(sc)
    (app,) = sc["applications"]
    assert app["import_path"] == "ponder.api.app:app_from_args"
    module, attr = app["import_path"].split(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is app_from_args
    assert isinstance(app_from_args(app["args"]), serve.Application)

    source = PonderConfig.load(REPO / f"configs/deploy-{env}.yaml")
    loaded = PonderConfig.from_dict(app["args"]["config"])
    assert loaded.cluster.address == "auto"
    assert (loaded.cluster.policy_resources, loaded.cluster.reward_resources) == (
        source.cluster.policy_resources, source.cluster.reward_resources)
    assert loaded.jobs.redis_url == f"redis://{source.deploy.name}-redis.{source.deploy.namespace}.svc.cluster.local:6379/0"
    for section in ("policy", "reward", "search", "scheduler", "api"):
        assert getattr(loaded, section) == getattr(source, section), section
    if env == "dev":  # the shipped models: no path of this machine in the manifests, the pod's own copy
        assert "path" not in app["args"]["config"]["policy"] and str(MODELS_DIR) not in rs["spec"]["serveConfigV2"]
        assert loaded.policy.path == str(MODELS_DIR / "arith-policy")
    serve_port = rs["spec"]["serveService"]["spec"]["ports"][0]
    assert serve_port["name"] == "serve" and serve_port["port"] == sc["http_options"]["port"] == source.api.port


@pytest.mark.parametrize("env", ["prod", "dev"])
def test_rayjob_runs_ponder_submit_then_waits_and_its_cluster_is_deleted(env: str):
    source = PonderConfig.load(REPO / f"configs/deploy-{env}.yaml")
    (path,) = (REPO / "k8s" / env / "jobs").glob("*.yaml")
    (job,) = _docs(path)
    config_map = _kind(REPO / "k8s" / env, "ConfigMap")
    m = re.fullmatch(r'job=\$\((ponder submit .*)\) && echo "ponder job \$job" && (ponder jobs wait .*)',
                     job["spec"]["entrypoint"])
    assert m, job["spec"]["entrypoint"]
    submit = shlex.split(m.group(1))
    args = build_parser().parse_args(submit[1:])
    assert args.func.__name__ == "cmd_submit" and args.address == "auto"
    assert args.strategy == (source.deploy.job.strategies or [source.search.strategy])
    wait = build_parser().parse_args(shlex.split(m.group(2).replace('"$job"', "JOB"))[1:])
    assert wait.func.__name__ == "cmd_jobs_wait" and wait.redis == PonderConfig.from_dict(
        yaml.safe_load(config_map["data"]["config.yaml"])).jobs.redis_url
    # The config file it reads is the ConfigMap mounted on the head pods (the service's too).
    rs = _kind(REPO / "k8s" / env, "RayService")
    for cluster in (job["spec"]["rayClusterSpec"], rs["spec"]["rayClusterConfig"]):
        head = cluster["headGroupSpec"]["template"]["spec"]
        (mount,) = head["containers"][0]["volumeMounts"]
        assert args.config == f"{mount['mountPath']}/config.yaml"
        assert head["volumes"][0]["configMap"]["name"] == config_map["metadata"]["name"]
    rules = job["spec"]["deletionStrategy"]["deletionRules"]
    assert {r["policy"] for r in rules} == {"DeleteCluster"} and "shutdownAfterJobFinishes" not in job["spec"]
    assert {r["condition"].get("jobStatus") for r in rules} >= {"SUCCEEDED", "FAILED"}
    # Same runtime config as the service's (same pools), so a job submitted either way shares them.
    served = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]["config"]
    assert yaml.safe_load(config_map["data"]["config.yaml"]) == served
    check_types(PonderConfig.from_dict(served))  # what the CLI on the head checks when it loads the file


def test_dev_renders_its_secret_and_prod_does_not():
    assert _kind(REPO / "k8s/dev", "Secret")["stringData"] == {"api-key": "ponder-dev-key-not-a-secret"}
    assert not [d for p in (REPO / "k8s/prod").rglob("*.yaml") for d in _docs(p) if d.get("kind") == "Secret"]


def test_scheduler_strategies_are_the_ones_the_scheduler_registers():
    import ponder.scheduler.runner  # noqa: F401  (registers auto and probe)
    from ponder.search import registry

    assert set(SCHEDULER_STRATEGIES) <= set(registry.names())
    assert known_strategies() == registry.names()


def test_the_deploy_room_imports_only_config_and_the_registry():
    allowed = ("ponder.config", "ponder.search.registry", "ponder.deploy", "ponder.__version__", "yaml")
    for path in sorted((REPO / "ponder/deploy").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] in sys.stdlib_module_names or name.startswith("__future__."):
                    continue
                assert any(name == a or name.startswith(a + ".") for a in allowed), f"{path.name} imports {name}"


def test_dockerfile_installs_the_built_wheel_on_the_configs_ray():
    text = (REPO / "Dockerfile").read_text()
    (version,) = re.findall(r"^ARG RAY_VERSION=(\S+)$", text, re.MULTILINE)
    assert version == DeployConfig().ray_version
    for config in ("deploy-prod", "deploy-dev"):
        assert PonderConfig.load(REPO / f"configs/{config}.yaml").deploy.ray_version == version
    assert "pip wheel --no-deps" in text and re.search(r'pip install [^\n]*"\$\{whl\}\$\{EXTRAS:\+\[\$EXTRAS\]\}"', text)
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}", text, re.MULTILINE)


# ---------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize("overrides, message", [
    (["search.strategy=beam_serch"], "search.strategy: unknown strategy 'beam_serch'"),
    (["deploy.job.strategies=[greedy, nope]"], "deploy.job.strategies: unknown strategy 'nope'"),
    (["cluster.policy_max_replicas=0"], "cluster.policy_max_replicas (0) is below its minimum (1)"),
    (["cluster.reward_min_replicas=0", "cluster.reward_max_replicas=0"], "the reward pool needs at least one replica"),
    (["deploy.prm.gpus=1"], "deploy.prm.gpus is 1 but deploy.prm.node_selector is empty"),
    (["deploy.api_key_secret=null"], "deploy.auth is on but deploy.api_key_secret is not set"),
    (["deploy.api_key_secret=''"], "deploy.auth is on but deploy.api_key_secret is not set"),
    (["cluster.policy_resources={}"], "cluster.policy_resources is empty"),
    (["deploy.policy.cpu=1x"], "deploy.policy.cpu must be a positive Kubernetes quantity"),
    (["deploy.job.budgets=[lots]"], "deploy.job.budgets: bad budget 'lots'"),
    (["jobs.redis_url=redis://:hunter2@redis:6379/0"], "jobs.redis_url carries a password"),
])
def test_bad_config_fails_with_one_line_and_writes_nothing(tmp_path: Path, capsys, overrides, message):
    out = tmp_path / "out"
    sets = [a for o in overrides for a in ("--set", o)]
    code = main(["deploy", "render", "--config", str(REPO / "configs/deploy-dev.yaml"), *sets,
                 "--target", "rayservice", "--target", "rayjob", "--target", "cluster-launcher", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("ponder: error: ") and message in err, err
    assert not out.exists()


def test_bad_usage_is_exit_2(tmp_path: Path, capsys):
    config = str(REPO / "configs/deploy-dev.yaml")
    assert main(["deploy", "render", "--config", config, "--target", "helm", "--out", str(tmp_path / "o")]) == 2
    assert main(["deploy", "render", "--config", config, "--out", str(tmp_path / "o")]) == 2
    assert main(["deploy", "render", "--config", str(tmp_path / "missing.yaml"), "--target", "rayjob",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("ponder: error: ") for line in err)
    assert not (tmp_path / "o").exists()
