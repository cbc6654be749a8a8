#!/usr/bin/env python3
"""Writes the fuzzer's seed corpus (tests/fuzz/corpus): small valid
safetensors files and broken ones, one per validation rule of the reader.
Run once; the files are committed. Standard library only."""
import json
import os
import struct
import sys

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
os.makedirs(out, exist_ok=True)


def pack(header, data=b"", raw_header=None):
    text = raw_header if raw_header is not None else json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


files = {}
# ---- valid ----
files["valid_empty"] = pack({})
files["valid_metadata_only"] = pack({"__metadata__": {"format": "pt"}})
files["valid_one_f32"] = pack({"t": entry("F32", [2, 2], 0, 16)}, bytes(range(16)))
sizes = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2,
         "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
         "F64": 8}
header, data = {}, b""
for name, size in sizes.items():
    header["t_" + name.lower()] = entry(name, [3], len(data), len(data) + 3 * size)
    data += bytes((i * 37) & 255 for i in range(3 * size))
files["valid_all_dtypes"] = pack(header, data)
files["valid_scalar_and_empty"] = pack(
    {"s": entry("I64", [], 0, 8), "e": entry("U8", [0, 5], 8, 8)}, bytes(8))
w = bytes((i * 13) & 255 for i in range(32 * 32))
files["valid_fp8_block"] = pack({
    "__metadata__": {"fp8gemm.format": "fp8_e4m3fn_block128", "fp8gemm.block": "128,128",
                     "fp8gemm.layout.l.weight": "aiter16x16"},
    "l.weight": entry("F8_E4M3", [32, 32], 0, 1024),
    "l.weight_scale_inv": entry("F32", [1, 1], 1024, 1028)}, w + struct.pack("<f", 0.01))
files["valid_padded_unordered"] = pack(None, b"\x01\x02\x03\x04\x05\x06",
    raw_header=b'{"z":{"dtype":"U8","shape":[2],"data_offsets":[4,6]},'
               b'"a":{"shape":[1],"data_offsets":[0,4],"dtype":"F32"}}       ')
# ---- broken ----
files["bad_short"] = b"\x05\x00\x00"
files["bad_len_over_file"] = struct.pack("<Q", 1000) + b"{}"
files["bad_len_over_limit"] = struct.pack("<Q", 100000001) + b"{}"
files["bad_len_huge"] = b"\xff" * 8 + b"{}"
files["bad_leading_space"] = pack(None, raw_header=b" {}")
files["bad_json"] = pack(None, raw_header=b'{"t":{"dtype":"U8",')
files["bad_utf8"] = pack(None, b"\x00", raw_header=b'{"\xff":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}')
files["bad_duplicate"] = pack(None, b"\x00\x00",
    raw_header=b'{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}')
files["bad_entry_type"] = pack({"t": [1, 2]})
files["bad_unknown_field"] = pack({"t": dict(entry("U8", [1], 0, 1), extra=1)}, b"\x00")
files["bad_dtype"] = pack({"t": entry("F128", [1], 0, 1)}, b"\x00")
files["bad_dtype_f4"] = pack({"t": entry("F4", [2], 0, 1)}, b"\x00")
files["bad_no_shape"] = pack({"t": {"dtype": "U8", "data_offsets": [0, 1]}}, b"\x00")
files["bad_rank"] = pack({"t": entry("U8", [1] * 17, 0, 1)}, b"\x00")
files["bad_negative_dim"] = pack({"t": entry("U8", [-1], 0, 1)}, b"\x00")
files["bad_real_dim"] = pack(None, b"\x00", raw_header=b'{"t":{"dtype":"U8","shape":[1.0],"data_offsets":[0,1]}}')
files["bad_offsets_form"] = pack({"t": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}, b"\x00")
files["bad_begin_after_end"] = pack({"t": entry("U8", [1], 1, 0)}, b"\x00")
files["bad_past_end"] = pack({"t": entry("U8", [4], 0, 4)}, b"\x00")
files["bad_overflow"] = pack({"t": entry("U8", [4294967296, 4294967296], 0, 0)})
files["bad_size_mismatch"] = pack({"t": entry("F32", [3], 0, 8)}, bytes(8))
files["bad_overlap"] = pack({"a": entry("U8", [8], 0, 8), "b": entry("U8", [8], 4, 12)}, bytes(12))
files["bad_hole"] = pack({"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 6, 10)}, bytes(10))
files["bad_trailing"] = pack({"a": entry("U8", [4], 0, 4)}, bytes(9))
files["bad_metadata_type"] = pack({"__metadata__": ["a"]})
files["bad_metadata_value"] = pack({"__metadata__": {"k": 3}})
files["bad_layout_name"] = pack({"__metadata__": {"fp8gemm.layout.t": "spiral"},
                                 "t": entry("F8_E4M3", [16, 32], 0, 512)}, bytes(512))
for name, blob in files.items():
    with open(os.path.join(out, name), "wb") as f:
        f.write(blob)
print(f"wrote {len(files)} files to {out}")
