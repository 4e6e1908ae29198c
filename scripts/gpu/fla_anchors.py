#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""The anchors of docs/benchmarks.md: flash-linear-attention (fla) on the same weights and shapes.

Run on the GPU machine by scripts/gpu/run_benchmarks.sh, with fla's source fetched and carried
(never committed): FLA_SRC=.device/fla, which holds fla/. Loads the model directory that
`retnet init` wrote (fla's own layout) into fla's RetNetForCausalLM in bf16 and times, with CUDA
events after warm-up (medians):
  - decode steps of B sequences after a 512-token prefill, through fla's cache (as fla users
    decode), B in --batch;
  - prefill of T tokens keeping the last logits row only (logits_to_keep=1), T in --lengths;
  - the retention kernels alone: chunk_retention forward and forward+backward at the issue's
    shapes, and fused_recurrent_retention for one decoding step.
Every part that fails is recorded as an error in the JSON instead of stopping the others.
"""
import argparse
import json
import os
import sys
import time
import traceback


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def time_cuda_ms(torch, fn, warmup=3, reps=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return median(times)


def load_fla_model(torch, model_dir):
    from safetensors.torch import load_file
    from fla.models.retnet import RetNetConfig, RetNetForCausalLM
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    config = RetNetConfig(**{k: v for k, v in cfg.items() if k != "model_type"})
    config.fuse_cross_entropy = False
    model = RetNetForCausalLM(config)
    state = load_file(os.path.join(model_dir, "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    return model.to(device="cuda", dtype=torch.bfloat16).eval(), sorted(missing), sorted(unexpected)


def bench_model(torch, model, batches, lengths, vocab):
    out = {"decode": [], "prefill": []}
    gen = torch.Generator(device="cuda").manual_seed(1)
    with torch.no_grad():
        for B in batches:
            prompt = torch.randint(0, vocab, (B, 512), device="cuda", generator=gen)
            result = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
            cache = result.past_key_values
            token = torch.randint(0, vocab, (B, 1), device="cuda", generator=gen)

            def step():
                nonlocal cache
                r = model(input_ids=token, past_key_values=cache, use_cache=True)
                cache = r.past_key_values

            ms = time_cuda_ms(torch, step, warmup=4, reps=24)
            out["decode"].append({"batch": B, "context": 512, "ms_per_step": ms, "tokens_per_s": B * 1000.0 / ms})
        for T in lengths:
            ids = torch.randint(0, vocab, (1, T), device="cuda", generator=gen)
            ms = time_cuda_ms(torch, lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1), warmup=2, reps=5)
            out["prefill"].append({"T": T, "ms": ms})
    out["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    return out


def bench_kernels(torch, shapes, out, save):
    """Appends to out and calls save() after every measurement (Triton's autotuning of a new shape
    can take minutes: a time limit keeps what was measured)."""
    from fla.ops.retention import chunk_retention, fused_recurrent_retention
    for (B, T, H, K, V) in shapes:
        q = torch.randn(B, T, H, K, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(B, T, H, K, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(B, T, H, V, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        do = torch.randn(B, T, H, V, device="cuda", dtype=torch.bfloat16)

        def forward():
            with torch.no_grad():
                chunk_retention(q, k, v)

        def forward_backward():
            o, _ = chunk_retention(q, k, v)
            o.backward(do)

        row = {"kernel": "chunk_retention", "B": B, "T": T, "H": H, "K": K, "V": V,
               "forward_ms": time_cuda_ms(torch, forward)}
        out.append(row)
        save()
        row["forward_backward_ms"] = time_cuda_ms(torch, forward_backward)
        save()
        del q, k, v, do
    for B in (1, 16, 64):
        H, K, V = 8, 256, 512
        q = torch.randn(B, 1, H, K, device="cuda", dtype=torch.bfloat16)
        state = torch.randn(B, H, K, V, device="cuda", dtype=torch.float32)
        with torch.no_grad():
            ms = time_cuda_ms(torch, lambda: fused_recurrent_retention(q, q, q.new_empty(B, 1, H, V).normal_(),
                                                                       initial_state=state, output_final_state=True),
                              reps=50)
        out.append({"kernel": "fused_recurrent_retention (one step)", "B": B, "T": 1, "H": H, "K": K, "V": V,
                    "forward_ms": ms})
        save()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="the model directory (not needed with --kernels-only)")
    parser.add_argument("--kernels-only", action="store_true", help="time the retention kernels alone")
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", default="1,16,64")
    parser.add_argument("--lengths", default="2048,8192")
    args = parser.parse_args()
    sys.path.insert(0, os.environ.get("FLA_SRC", ".device/fla"))
    import torch
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
    try:
        import triton
        import fla
        report["triton"], report["fla"] = triton.__version__, getattr(fla, "__version__", "?")
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        report["import_error"] = repr(e)
    def save():  # after every part, so a time limit keeps what was measured
        report["seconds"] = time.time() - t0
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)

    batches = [int(b) for b in args.batch.split(",")]
    lengths = [int(t) for t in args.lengths.split(",")]
    t0 = time.time()
    save()
    if not args.kernels_only:
        try:
            model, missing, unexpected = load_fla_model(torch, args.model)
            report["weights"] = {"missing": missing, "unexpected": unexpected}
            report["model"] = bench_model(torch, model, batches, lengths, model.config.vocab_size)
            del model
            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            report["model_error"] = traceback.format_exc()[-2000:]
        save()
    try:
        shapes = [(8, 2048, 8, 256, 512), (2, 8192, 8, 256, 512), (1, 32768, 8, 256, 512), (8, 2048, 8, 128, 256)]
        report["kernels"] = []
        bench_kernels(torch, shapes, report["kernels"], save)
    except Exception:  # noqa: BLE001
        report["kernels_error"] = traceback.format_exc()[-2000:]
    save()
    print(json.dumps(report, indent=1)[:4000])


if __name__ == "__main__":
    main()
