#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Transformer twin's anchor in PyTorch: a plain Llama (RMSNorm, rotate-half rotary, SwiGLU,
torch's scaled_dot_product_attention over a preallocated KV cache) on the weights `retnet init
--arch transformer` wrote, so that `retnet cost` is compared against a fair Transformer.

  --check TOKENS.npy LOGITS.npy   our logits of those tokens (float32 .npy): prints the relative error
  --lengths / --batch             decode latency per step (CUDA events, median after warm-up; eager and
                                  captured in a CUDA graph) and one prefill at each length, in bf16; JSON
                                  to --out
Reads config.json + model.safetensors itself (no transformers or safetensors package needed)."""
import argparse
import json
import math
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def load_safetensors(path, device, dtype):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=DTYPES[meta["dtype"]]).reshape(meta["shape"])
        out[name] = t.to(device=device, dtype=dtype)
    return out


class Llama:
    def __init__(self, directory, device, dtype):
        self.c = json.load(open(f"{directory}/config.json"))
        self.w = load_safetensors(f"{directory}/model.safetensors", device, dtype)
        c = self.c
        self.L, self.H, self.d = c["num_hidden_layers"], c["num_attention_heads"], c["hidden_size"]
        self.D = self.d // self.H
        self.eps = c.get("rms_norm_eps", 1e-6)
        theta = c.get("rope_theta", 10000.0)
        self.inv_freq = (1.0 / (theta ** (torch.arange(0, self.D, 2, dtype=torch.float32) / self.D))).to(device)
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        self.device, self.dtype = device, dtype

    def norm(self, x, w):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(self.dtype) * w

    def rotary(self, x, positions):  # x (B, H, T, D)
        angles = positions.float()[:, None] * self.inv_freq[None, :]  # (T, D/2)
        cos = torch.cat([angles.cos(), angles.cos()], -1).to(x.dtype)
        sin = torch.cat([angles.sin(), angles.sin()], -1).to(x.dtype)
        half = self.D // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def new_cache(self, B, capacity):
        shape = (B, self.H, capacity, self.D)
        return [(torch.empty(shape, device=self.device, dtype=self.dtype),
                 torch.empty(shape, device=self.device, dtype=self.dtype)) for _ in range(self.L)]

    @torch.no_grad()
    def forward(self, tokens, cache, pos0, last_only=True):  # tokens (B, T)
        B, T = tokens.shape
        x = F.embedding(tokens, self.w["model.embed_tokens.weight"])
        positions = torch.arange(pos0, pos0 + T, device=self.device)
        for l in range(self.L):
            p = f"model.layers.{l}."
            h = self.norm(x, self.w[p + "input_layernorm.weight"])
            q, k, v = (F.linear(h, self.w[p + f"self_attn.{n}_proj.weight"]).view(B, T, self.H, self.D).transpose(1, 2)
                       for n in "qkv")
            q, k = self.rotary(q, positions), self.rotary(k, positions)
            kc, vc = cache[l]
            kc[:, :, pos0:pos0 + T] = k
            vc[:, :, pos0:pos0 + T] = v
            o = F.scaled_dot_product_attention(q, kc[:, :, :pos0 + T], vc[:, :, :pos0 + T], is_causal=T > 1 and pos0 == 0)
            x = x + F.linear(o.transpose(1, 2).reshape(B, T, self.d), self.w[p + "self_attn.o_proj.weight"])
            h = self.norm(x, self.w[p + "post_attention_layernorm.weight"])
            x = x + F.linear(F.silu(F.linear(h, self.w[p + "mlp.gate_proj.weight"])) * F.linear(h, self.w[p + "mlp.up_proj.weight"]),
                             self.w[p + "mlp.down_proj.weight"])
        x = self.norm(x[:, -1:] if last_only else x, self.w["model.norm.weight"])
        return F.linear(x, self.lm_head).float()


def timed(fn, warmup=3, repeats=10):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    return times[len(times) // 2]


def graph_of(step):
    """The decoding step captured in a CUDA graph (static cache, position and token), so that its
    time is the kernels', not Python's launches: the fair anchor for a graph-replaying engine."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def check(model, tokens_path, logits_path):
    import numpy as np
    tokens = torch.tensor(np.load(tokens_path).astype("int64"), device=model.device)[None]
    ours = torch.tensor(np.load(logits_path), device=model.device).float()
    cache = model.new_cache(1, tokens.shape[1])
    theirs = model.forward(tokens, cache, 0, last_only=False)[0]
    err = ((theirs - ours).norm() / theirs.norm()).item()
    agree = (theirs.argmax(-1) == ours.argmax(-1)).float().mean().item()
    return {"rel_l2": err, "argmax_agreement": agree, "tokens": int(tokens.shape[1])}


def bench(model, lengths, batches, steps):
    out = {"decode": [], "prefill": []}
    vocab = model.c["vocab_size"]
    for L in lengths:
        try:
            cache = model.new_cache(1, L + 1)
            prompt = torch.randint(0, vocab, (1, L), device=model.device)
            ms = timed(lambda: model.forward(prompt, cache, 0), warmup=1, repeats=3)
            out["prefill"].append({"length": L, "ms": ms})
            del cache
        except torch.cuda.OutOfMemoryError:
            out["prefill"].append({"length": L, "out_of_memory": True})
        torch.cuda.empty_cache()
        for B in batches:
            try:
                cache = model.new_cache(B, L + 1)  # the prompt's keys are filled without a prefill: only their count matters
                for kc, vc in cache:
                    kc.normal_(), vc.normal_()
                token = torch.randint(0, vocab, (B, 1), device=model.device)
                eager = timed(lambda: model.forward(token, cache, L), repeats=steps)
                graphed = timed(graph_of(lambda: model.forward(token, cache, L)), repeats=steps)
                out["decode"].append({"length": L, "batch": B, "ms_per_step": graphed, "eager_ms_per_step": eager,
                                      "tokens_per_s": B * 1000.0 / graphed,
                                      "cache_bytes": sum(t.numel() * t.element_size() for kv in cache for t in kv)})
                del cache
            except torch.cuda.OutOfMemoryError:
                out["decode"].append({"length": L, "batch": B, "out_of_memory": True})
            torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--check", nargs=2, metavar=("TOKENS", "LOGITS"))
    ap.add_argument("--lengths", default="1024,4096,16384,32768")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--steps", type=int, default=16)
    a = ap.parse_args()
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name()}
    if a.check:
        report["check_fp32"] = check(Llama(a.model, "cuda", torch.float32), *a.check)
    model = Llama(a.model, "cuda", torch.bfloat16)
    report.update(bench(model, [int(x) for x in a.lengths.split(",")], [int(x) for x in a.batch.split(",")], a.steps))
    json.dump(report, open(a.out, "w"), indent=1)
    print(json.dumps(report)[:3000])


if __name__ == "__main__":
    sys.exit(main())
