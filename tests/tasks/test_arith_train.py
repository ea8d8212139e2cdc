"""The training command of the shipped models, shrunk to seconds, and its model cards."""

from __future__ import annotations

import asyncio
import json

from transformers import AutoTokenizer, LlamaForCausalLM

from ponder.actors.engine import ScoreRequest
from ponder.actors.hf import HFReward
from ponder.config import EngineConfig
from ponder.tasks.arith import train
from ponder.tasks.arith.tokenizer import STEP_TAG

TINY = ["--hidden", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--policy-steps", "6", "--policy-batch", "4",
        "--prm-problems", "8", "--prm-samples", "1", "--prm-steps", "3", "--prm-batch", "4", "--eval-per-level", "1"]


def test_tiny_training_run_end_to_end(tmp_path) -> None:
    """Both stages and the eval write standard HF directories the engines load, with cards."""
    train.main(["--out", str(tmp_path), *TINY])
    policy, prm = tmp_path / "arith-policy", tmp_path / "arith-prm"
    assert AutoTokenizer.from_pretrained(str(policy)).convert_tokens_to_ids(STEP_TAG) == 3
    assert LlamaForCausalLM.from_pretrained(str(policy)).config.hidden_size == 32
    conv = json.loads((prm / "prm_config.json").read_text())
    assert conv["style"] == "implicit" and conv["beta"] > 0
    assert LlamaForCausalLM.from_pretrained(str(prm / conv["reference"])).config.hidden_size == 32  # the policy's copy
    reward = HFReward.from_config(EngineConfig(kind="hf", path=str(prm), device="cpu"))
    [out] = asyncio.run(reward.score([ScoreRequest("Compute 12 + 30.", ["12 + 30 = 42\nThe answer is \\boxed{42}."])]))
    assert len(out.rewards) == 1 and 0.0 < out.rewards[0] < 1.0
    ev = json.loads((policy / "eval.json").read_text())
    assert set(ev["levels"]) == {"1", "2", "3", "4", "5"} and ev["prm_steps_scored"] > 0
    card = (policy / "README.md").read_text()
    assert "## Evaluation" in card and "| 5 |" in card
    assert "## Search with the PRM" not in card  # that table measured the shipped models, not these
    assert "## Training" in (prm / "README.md").read_text()


def test_regenerated_cards_keep_hand_written_limitations(tmp_path) -> None:
    card = "# m\n\n## Evaluation\n\nnumbers\n\n## Limitations\n\nIt does not check sums.\nSee above.\n\n## Other\n\nx\n"
    assert train._kept_section(card, "## Limitations") == "## Limitations\n\nIt does not check sums.\nSee above."
    assert train._kept_section("# m\n\n## Limitations\n\nlast one\n", "## Limitations") == "## Limitations\n\nlast one"
    assert train._kept_section("# m\n", "## Limitations") == ""
