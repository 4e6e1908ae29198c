#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""fla's training step at a given RetNet shape, the anchor of `retnet train --device cuda-bf16`.

Run on the GPU machine by scripts/gpu/train_anchor.sh with fla's source fetched and carried (never
committed): FLA_SRC=.device/fla, which holds fla/. Builds fla's RetNetForCausalLM from the same
config.json that `retnet train --config` reads (fla's own field names), fp32 parameters, and times
training steps as its users train: torch.autocast(bfloat16), torch.optim.AdamW(fused=True), random
token windows of B × T. Times are CUDA-event medians after warm-up; tokens/s = B·T / median step;
peak memory is torch's max_memory_allocated (the caller also samples the process with nvidia-smi,
as it does for ours). One JSON line per length on stdout; a failure is recorded, not raised.
"""
import argparse
import json
import os
import sys
import traceback


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--lengths", default="2048,8192")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8, help="timed steps (after 3 warm-up steps)")
    args = parser.parse_args()
    sys.path.insert(0, os.environ.get("FLA_SRC", ".device/fla"))
    import torch
    from fla.models.retnet import RetNetConfig, RetNetForCausalLM
    from fla_anchors import time_cuda_ms  # beside this file

    with open(args.config) as f:
        fields = json.load(f)
    config = RetNetConfig(**{k: v for k, v in fields.items() if k != "model_type"})
    for T in (int(t) for t in args.lengths.split(",")):
        row = {"system": "fla", "T": T, "B": args.batch}
        try:
            torch.manual_seed(1)
            model = RetNetForCausalLM(config).cuda().train()
            row["parameters"] = sum(p.numel() for p in model.parameters())
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
            ids = torch.randint(0, config.vocab_size, (args.batch, T), device="cuda")
            torch.cuda.reset_peak_memory_stats()

            def step():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = model(input_ids=ids, labels=ids).loss  # fla shifts the labels itself
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            ms = time_cuda_ms(torch, step, warmup=3, reps=args.steps)
            row.update({"ms_per_step": ms, "tokens_per_s": args.batch * T * 1000.0 / ms,
                        "peak_allocated_bytes": torch.cuda.max_memory_allocated()})
            del model, optimizer
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - recorded, not fatal
            row["error"] = traceback.format_exc()[-1500:]
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
