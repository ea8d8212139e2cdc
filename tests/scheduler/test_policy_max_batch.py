"""`scheduler.policy_max_batch`: the policy batcher's requests per call, apart from the PRM's."""

import pytest

from ponder.actors.sim import SimPolicy, SimReward
from ponder.config import ConfigError, PonderConfig
from ponder.scheduler.runner import Runner


def _config(**scheduler):
    return PonderConfig.from_dict({"policy": {"kind": "sim"}, "reward": {"kind": "sim"}, "cluster": {"address": None},
                                   "scheduler": scheduler})


def test_policy_max_batch_reaches_the_policy_batcher_only():
    runner = Runner(SimPolicy(), SimReward(), _config(max_batch=64, policy_max_batch=8))
    assert runner.policy.batcher.max_batch == 8
    assert runner.reward.batcher.max_batch == 64


def test_policy_max_batch_defaults_to_max_batch():
    runner = Runner(SimPolicy(), SimReward(), _config(max_batch=32))
    assert runner.policy.batcher.max_batch == runner.reward.batcher.max_batch == 32


def test_policy_max_batch_is_checked():
    with pytest.raises(ConfigError, match="policy_max_batch"):
        _config(policy_max_batch=0).validate()
