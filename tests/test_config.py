"""The one config object: YAML, overrides, merging onto defaults, budgets, the shipped files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ponder.config import check_types
from ponder.config import Budget, ConfigError, PonderConfig

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_shipped_models_on_a_local_cluster():
    c = PonderConfig()
    assert (c.policy.kind, c.reward.kind) == ("hf", "hf")
    assert Path(c.policy.path).name == "arith-policy" and Path(c.reward.path).name == "arith-prm"
    assert c.cluster.address == "local" and c.cluster.uses_ray
    assert not PonderConfig.from_dict({"cluster": {"address": "inprocess"}}).cluster.uses_ray
    assert not PonderConfig.from_dict({"cluster": {"address": None}}).cluster.uses_ray


def test_yaml_then_overrides_and_partial_sections_merge(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("policy: {max_batch: 8}\nsearch: {temperature: 0.5, params: {beam_width: 2}}\n")
    c = PonderConfig.load(f, ["search.seed=7", "reward.options.noise=0.1", "cluster.policy_replicas=3"])
    assert c.policy.max_batch == 8 and c.policy.kind == "hf" and c.policy.path == PonderConfig().policy.path
    assert (c.search.temperature, c.search.seed, c.search.params) == (0.5, 7, {"beam_width": 2})
    assert c.reward.options == {"noise": 0.1} and c.reward.kind == "hf"
    assert c.cluster.policy_replicas == 3 and c.cluster.reward_replicas == 1
    assert PonderConfig.from_dict(c.to_dict()) == c  # round trip


@pytest.mark.parametrize(
    "text, overrides, msg",
    [
        ("polcy: {}\n", [], "unknown config key 'polcy'"),
        ("search: {tempurature: 1}\n", [], "unknown config key 'search.tempurature'"),
        ("search: [1, 2]\n", [], "must be a mapping"),
        ("- a\n", [], "mapping at the top level"),
        ("a: [\n", [], "not valid YAML"),
        ("", ["search.seed"], "section.key=value"),
        ("search: {seed: 3}\n", ["search.seed.x=1"], "not a section"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path, text, overrides, msg):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=msg):
        PonderConfig.load(f, overrides)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        PonderConfig.load("/nonexistent/c.yaml")


@pytest.mark.parametrize(
    "spec, n, tokens",
    [("n=16", 16, math.inf), ("4096", None, 4096), ("8k", None, 8000), ("n=4,tokens=2k", 4, 2000), (512, None, 512)],
)
def test_budget_parse(spec, n, tokens):
    b = Budget.parse(spec)
    assert (b.n, b.tokens) == (n, tokens)
    assert Budget.parse(b.label()) == b


@pytest.mark.parametrize("spec", ["n=0", "-5", "0", "lots", "n=two", "4096 tokens"])
def test_bad_budget(spec):
    with pytest.raises(ConfigError):
        Budget.parse(spec)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_files_load_and_type_check(path):
    check_types(PonderConfig.load(path))


BAD_SETTINGS = {
    "width beyond any machine": (["search.budget=n=1000000000"], "at most n="),
    "zero max_batch": (["scheduler.max_batch=0"], "scheduler.max_batch"),
    "negative max_batch": (["scheduler.max_batch=-1"], "scheduler.max_batch"),
    "infinite batch window": (["scheduler.batch_window_ms=.inf"], "scheduler.batch_window_ms"),
    "zero concurrency": (["scheduler.max_concurrent_searches=0"], "max_concurrent_searches"),
    "nan temperature": (["search.temperature=.nan"], "search.temperature"),
    "negative temperature": (["search.temperature=-1"], "search.temperature"),
    "zero max_steps": (["search.max_steps=0"], "search.max_steps"),
    "zero max_step_tokens": (["search.max_step_tokens=0"], "search.max_step_tokens"),
    "negative prm cost": (["scheduler.prm_cost_ratio=-1"], "prm_cost_ratio"),
    "missing allocation table": (["scheduler.allocation_table=/nonexistent/table.yaml"], "not found"),
    "zero engine batch": (["policy.max_batch=0"], "policy.max_batch"),
    "zero probe samples": (["scheduler.probe_samples=0"], "probe_samples"),
    "string for a number": (["scheduler.max_batch=lots"], "scheduler.max_batch"),
}


@pytest.mark.parametrize("overrides,needle", BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_bad_settings_fail_at_load_with_one_line(overrides, needle):
    with pytest.raises(ConfigError) as e:
        PonderConfig.load(None, overrides)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_strategy_parameters_of_the_wrong_type_are_refused_up_front():
    from ponder.search import registry

    with pytest.raises(ValueError, match="beam_width.*integer"):
        registry.get("beam_search").make_config({"beam_width": 2.0}, n=8)
    with pytest.raises(ValueError, match="integer"):
        registry.get("best_of_n").make_config({"round_size": True}, n=8)
    assert registry.get("beam_search").make_config({"beam_width": 2}, n=8).beam_width == 2
