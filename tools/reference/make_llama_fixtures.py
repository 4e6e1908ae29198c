#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Generate the Transformer twin's reference fixtures from transformers' LlamaForCausalLM.

    python3 tools/reference/make_llama_fixtures.py --out DIR

For every fixture DIR/<name>/ receives what LlamaForCausalLM.save_pretrained()
writes (config.json, model.safetensors; no lm_head.weight when tied), tokens.json ({"tokens": [...], "chunk_size": 64,
"prefill": P}), logits.npy ([T, V] float32: one forward over all T tokens) and logits_handoff.npy
([T, V] float32: P tokens in one call with use_cache=True, then one call per token through the
returned KV cache). The model runs in float64 on the CPU (eager attention) and its weights are
rounded to float32 first, so the logits are those of the float32 weights the file holds, computed
without float32 rounding. All random numbers come from numpy's PCG64 with fixed seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

FIXTURES = {
    # rope_theta 100: every rotary pair turns visibly within the 29 positions; q/k weights large
    # enough that the softmax is far from uniform.
    "llama_small": dict(seed=11, tied=False, T=29, prefill=17, hidden=32, heads=4, layers=2, ffn=64, vocab=61,
                        rope_theta=100.0, eps=1e-5),
    "llama_tied": dict(seed=12, tied=True, T=23, prefill=9, hidden=48, heads=3, layers=3, ffn=96, vocab=71,
                       rope_theta=10000.0, eps=1e-6),
}


def make_fixture(name: str, spec: dict, out_root: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    rng = np.random.default_rng(spec["seed"])
    config = LlamaConfig(vocab_size=spec["vocab"], hidden_size=spec["hidden"], intermediate_size=spec["ffn"],
                         num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"],
                         num_key_value_heads=spec["heads"], hidden_act="silu", rms_norm_eps=spec["eps"],
                         rope_theta=spec["rope_theta"], tie_word_embeddings=spec["tied"], bos_token_id=1,
                         eos_token_id=2, attn_implementation="eager")
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if key.endswith("norm.weight"):
                values = 1.0 + 0.3 * rng.standard_normal(tensor.shape)
            elif "q_proj" in key or "k_proj" in key:
                values = 0.25 * rng.standard_normal(tensor.shape)
            elif key == "model.embed_tokens.weight":
                values = rng.standard_normal(tensor.shape)
            else:
                values = 0.1 * rng.standard_normal(tensor.shape)
            tensor.copy_(torch.from_numpy(values.astype(np.float32)))
        if spec["tied"]:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir)  # safetensors, the default since transformers 4.35

    tokens = rng.integers(0, spec["vocab"], size=spec["T"]).tolist()
    ids = torch.tensor([tokens])
    model64 = model.double()
    with torch.no_grad():
        logits = model64(ids).logits[0]
        first = model64(ids[:, : spec["prefill"]], use_cache=True)
        rows, cache = [first.logits[0]], first.past_key_values
        for t in range(spec["prefill"], spec["T"]):
            step = model64(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            rows.append(step.logits[0])
            cache = step.past_key_values
        handoff = torch.cat(rows)
    np.save(os.path.join(out_dir, "logits.npy"), logits.numpy().astype(np.float32))
    np.save(os.path.join(out_dir, "logits_handoff.npy"), handoff.numpy().astype(np.float32))
    with open(os.path.join(out_dir, "tokens.json"), "w") as f:
        json.dump({"tokens": tokens, "chunk_size": 64, "prefill": spec["prefill"]}, f)
    spread = float((handoff - logits).abs().max())
    print(f"[{name}] T={spec['T']} max|logit|={float(logits.abs().max()):.4f} "
          f"handoff vs one pass={spread:.3e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="directory to write the fixtures into")
    args = parser.parse_args()
    import torch
    import transformers
    print(f"[env] torch {torch.__version__}, transformers {transformers.__version__}")
    for name, spec in FIXTURES.items():
        make_fixture(name, spec, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
