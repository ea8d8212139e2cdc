"""A character-level tokenizer for the shipped arithmetic models, saved as a standard
`tokenizer.json` so `AutoTokenizer.from_pretrained(dir)` loads it with no custom code.

One token per printable ASCII character (plus newline), and four special tokens: padding,
end of sequence, unknown, and the PRM step tag. A BPE model with no merges is exactly a
character tokenizer, and the `Fuse` decoder joins characters back without spaces.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
STEP_TAG = "<step>"  # the PRM's step tag (Math-Shepherd uses "ки"); one token, never generated
GOOD, BAD = "+", "-"  # the PRM's label tokens, read at each step tag (as in Math-Shepherd)
SPECIALS = [PAD, EOS, UNK, STEP_TAG]
CHARS = sorted(set(string.printable) - set("\t\r\x0b\x0c"))  # printable ASCII, space, "\n"


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[STEP_TAG],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(out_dir: str | Path) -> PreTrainedTokenizerFast:
    tok = build_tokenizer()
    tok.save_pretrained(str(out_dir))
    return tok
