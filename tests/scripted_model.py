"""A crafted tiny checkpoint that writes a chosen text: the real model code, weights set so greedy decoding follows
a script token by token — for tests of what is done with a generation (reasoning split, streaming, judges), never
by asserting on a random model's noise.

How: every attention output and MLP/expert down projection is zero, so each position's hidden state stays its token
embedding; the script's tokens get orthogonal one-hot embeddings (unit final norm) and the untied lm_head maps
token i's direction to token i+1. After the prompt's last token `start` the model therefore writes the script,
then EOS. The script's tokens must be distinct (a repeated token would loop) and fewer than the hidden size.
"""

from __future__ import annotations

from pathlib import Path

from ernie_vl.config import named_config
from ernie_vl.tiny import make_tiny


def make_scripted(dst, script: str, start: str = "<think>") -> Path:
    """A tiny checkpoint at `dst` that answers any prompt ending in `start` with `script` and EOS."""
    from ernie_vl.tokenizer import Tokenizer

    cfg = named_config("tiny")
    cfg.tie_word_embeddings = False

    def edit(state, folder):
        tok = Tokenizer.from_pretrained(folder)
        ids = tok.encode(start) + tok.encode(script) + [cfg.text.eos_token_id]
        if len(tok.encode(start)) != 1:
            raise ValueError(f"start {start!r} must be one token, got {tok.encode(start)}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"script tokens repeat (a crafted chain would loop): {ids}")
        D = cfg.text.hidden_size
        if len(ids) > D:
            raise ValueError(f"script of {len(ids)} tokens does not fit the hidden size {D}")
        for key, value in state.items():
            if key.startswith("model.language_model.") and (
                    key.endswith(("o_proj.weight", "down_proj.weight", "experts.down_proj", ".bias"))
                    and "gate" not in key):
                value.zero_()
        state["model.language_model.norm.weight"].fill_(1.0)
        emb = state["model.language_model.embed_tokens.weight"]
        head = state["lm_head.weight"] = 0.0 * emb.clone()
        for i, token in enumerate(ids):
            emb[token] = 0.0
            emb[token, i] = 1.0
        for i, (token, nxt) in enumerate(zip(ids, ids[1:])):
            head[nxt, i] = 30.0
    return make_tiny(dst, config=cfg, edit_state=edit)
