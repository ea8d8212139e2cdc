"""A tiny Llama fitted in a second to one arithmetic solution, saved as an HF dir (policy and
Math-Shepherd PRM), so engine tests see real steps, delimiters and end of sequence."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ponder.actors.hf import PRM_CONFIG_FILE, plain_prompt
from ponder.tasks.arith import tokenizer as chartok

PROBLEM = "Compute (37 + 48) * 6."
SOLUTION = "37 + 48 = 85\n\n85 * 6 = 510\nThe answer is \\boxed{510}."


def build_tiny_model(out: Path, fit_steps: int = 80) -> Path:
    torch.manual_seed(0)
    tok = chartok.save_tokenizer(out)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    ids = torch.tensor([tok(plain_prompt(PROBLEM, []) + SOLUTION, add_special_tokens=False).input_ids + [tok.eos_token_id]])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(fit_steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(str(out))
    good, bad = tok.convert_tokens_to_ids([chartok.GOOD, chartok.BAD])
    prm = {"step_tag": chartok.STEP_TAG, "step_tag_id": tok.convert_tokens_to_ids(chartok.STEP_TAG),
           "good_token_id": good, "bad_token_id": bad}
    (out / PRM_CONFIG_FILE).write_text(json.dumps(prm))
    return out
