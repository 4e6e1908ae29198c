#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Plots of scripts/gpu/run_benchmarks.sh's JSON (ours_bf16, ours_fp32, ours_contexts, fla) in DIR:
decode throughput against batch size, prefill time against length, and decode latency against
context length. Usage: plot_benchmarks.py DIR (writes DIR/*.png and prints one line per plot)."""
import json
import os
import sys


def load(directory, name):
    try:
        with open(os.path.join(directory, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def main():
    directory = sys.argv[1]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours = {dtype: load(directory, f"ours_{dtype}.json") for dtype in ("bf16", "fp32")}
    fla = (load(directory, "fla.json") or {}).get("model", {})
    contexts = load(directory, "ours_contexts.json")

    fig, ax = plt.subplots(figsize=(6, 4))
    for dtype, report in ours.items():
        if report and "decode" in report:
            rows = report["decode"]
            ax.plot([r["batch"] for r in rows], [r["tokens_per_s"] for r in rows], "o-", label=f"RetNet Studio {dtype}")
    if fla.get("decode"):
        ax.plot([r["batch"] for r in fla["decode"]], [r["tokens_per_s"] for r in fla["decode"]], "s--", label="fla bf16")
    ax.set(xscale="log", yscale="log", xlabel="sequences decoded together", ylabel="tokens / s",
           title="Decoding, 1.3B shape, 512-token context (H200)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "decode_vs_batch.png"), dpi=120)
    print("wrote decode_vs_batch.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for dtype, report in ours.items():
        if report and "prefill" in report:
            rows = report["prefill"]
            for form in ("parallel", "chunkwise", "recurrent"):
                ax.plot([r["T"] for r in rows], [r[f"{form}_ms"] for r in rows], "o-", label=f"ours {dtype} {form}")
    if fla.get("prefill"):
        ax.plot([r["T"] for r in fla["prefill"]], [r["ms"] for r in fla["prefill"]], "s--", label="fla bf16 chunk")
    ax.set(xscale="log", yscale="log", xlabel="prompt tokens", ylabel="ms (last logits row)",
           title="Prefill, 1.3B shape (H200)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(directory, "prefill_vs_length.png"), dpi=120)
    print("wrote prefill_vs_length.png")

    if contexts and "decode" in contexts:
        fig, ax = plt.subplots(figsize=(6, 4))
        for B in sorted({r["batch"] for r in contexts["decode"]}):
            rows = [r for r in contexts["decode"] if r["batch"] == B]
            ax.plot([r["context"] for r in rows], [r["ms_per_step"] for r in rows], "o-", label=f"batch {B}")
        ax.set(xscale="log", xlabel="tokens already in the context", ylabel="ms per decoding step",
               title="Decoding latency against context (bf16, H200)")
        ax.set_ylim(bottom=0)
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(directory, "decode_vs_context.png"), dpi=120)
        print("wrote decode_vs_context.png")


if __name__ == "__main__":
    main()
