#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-3.0-or-later
"""Writes the small seed corpora of the fuzz targets into fuzz/corpus/<target>/ (kept in git).
Each seed is a valid input or a typical corruption of one, so the fuzzers start deep inside the
parsers. Re-run after changing it; the tokenizer model seed is trained with spm_train."""
import json
import os
import shutil
import struct
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(tensors, metadata=None, pad=True):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def floats(values, fmt="f"):
    return struct.pack("<%d%s" % (len(values), fmt), *values)


# --- safetensors --------------------------------------------------------------------------
f32 = ("a.weight", "F32", [2, 3], floats([0.5, -1, 2, 3, 4, 5]))
bf16 = ("b.weight", "BF16", [4], struct.pack("<4H", 0x3F80, 0xBF80, 0x7F80, 0x0001))
f16 = ("c", "F16", [2], struct.pack("<2H", 0x3C00, 0x7C01))
f64 = ("d", "F64", [1], floats([3.25], "d"))
ints = [("e", "I64", [1], struct.pack("<q", -7)), ("f", "I32", [2], struct.pack("<2i", 1, -2)),
        ("g", "I16", [1], struct.pack("<h", 9)), ("h", "I8", [2], b"\x80\x7f"),
        ("i", "U8", [1], b"\xff"), ("j", "BOOL", [1], b"\x01")]
put("safetensors", "valid_f32", safetensors([f32], {"format": "pt"}))
put("safetensors", "valid_every_dtype", safetensors([f32, bf16, f16, f64] + ints))
put("safetensors", "empty_header", safetensors([]))
put("safetensors", "zero_sized", safetensors([("z", "F32", [0, 5], b""), ("s", "F32", [], floats([1]))]))
good = safetensors([f32, bf16])
put("safetensors", "truncated", good[:-3])
put("safetensors", "header_too_long", struct.pack("<Q", 1 << 40) + good[8:])
put("safetensors", "not_json", struct.pack("<Q", 8) + b"{not js}" + b"\0" * 8)
overlap = {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
           "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
text = json.dumps(overlap).encode()
put("safetensors", "overlap", struct.pack("<Q", len(text)) + text + b"\0" * 12)
put("safetensors", "unknown_dtype", safetensors([("q", "F8_E4M3", [2], b"\0\0")]))

# --- config.json --------------------------------------------------------------------------
for name in sorted(os.listdir(os.path.join(ROOT, "tests/data/reference"))):
    path = os.path.join(ROOT, "tests/data/reference", name, "config.json")
    if os.path.exists(path):
        with open(path, "rb") as f:
            put("config", name, f.read())
put("config", "fla_minimal", json.dumps({"model_type": "retnet", "hidden_size": 8, "num_heads": 2,
                                         "num_hidden_layers": 1, "vocab_size": 11}))
put("config", "torchscale_minimal", json.dumps({"decoder_embed_dim": 8, "decoder_value_embed_dim": 16,
                                                "decoder_retention_heads": 2, "decoder_ffn_embed_dim": 16,
                                                "decoder_layers": 1, "vocab_size": 11}))
put("config", "absurd", json.dumps({"model_type": "retnet", "hidden_size": 0, "num_heads": 3,
                                    "num_hidden_layers": 1000000000, "vocab_size": -5, "expand_k": 1e308}))

# --- tokenizer input (first byte: 0 = text, 1 = ids) ---------------------------------------
put("tokenizer", "text_ascii", b"\x00The robot counted tokens.")
put("tokenizer", "text_unicode", b"\x00caf\xc3\xa9 \xf0\x9f\xa4\x96 \xd8\xa7\xd9\x84 \xe2\x80\x8b\t\n")
put("tokenizer", "text_invalid", b"\x00ok \xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80")
put("tokenizer", "text_controls", b"\x00\x01\x07\x1b[31m\x7f  ")
put("tokenizer", "ids", b"\x01" + struct.pack("<8i", 1, 5, 300, 3, -1, 399, 400, 2))

# --- .npy -----------------------------------------------------------------------------------
def npy(descr, shape, raw, version=1):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    text = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, dims)
    lenbytes = 2 if version == 1 else 4
    text += " " * ((64 - (6 + 2 + lenbytes + len(text) + 1) % 64) % 64) + "\n"
    fmt = "<H" if version == 1 else "<I"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack(fmt, len(text)) + text.encode() + raw


put("npy", "f4_2x3", npy("<f4", [2, 3], floats([1, 2, 3, 4, 5, 6])))
put("npy", "f8_v2", npy("<f8", [2], floats([1.5, -2], "d"), version=2))
put("npy", "scalar", npy("<f4", [], floats([7])))
put("npy", "short_data", npy("<f4", [4], floats([1])))

# --- tokenizer.model --------------------------------------------------------------------------
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(["spm_train", "--input=" + os.path.join(ROOT, "tests/data/tokenizer/corpus.txt"),
                    "--model_prefix=" + os.path.join(tmp, "m"), "--vocab_size=400", "--model_type=bpe",
                    "--byte_fallback=true", "--character_coverage=1.0", "--normalization_rule_name=identity", "--minloglevel=2"],
                   check=True, capture_output=True)
    with open(os.path.join(tmp, "m.model"), "rb") as f:
        model = f.read()
put("tokenizer_model", "bpe_400", model)
put("tokenizer_model", "truncated", model[: len(model) // 3])
put("tokenizer_model", "empty", b"")
put("tokenizer_model", "not_a_model", b"\x0a\x05hello")
