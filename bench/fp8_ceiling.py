#!/usr/bin/env python3
"""What the card itself gives FP8 and bf16 GEMMs at large M, through torch alone
(cuBLASLt / CUTLASS behind torch._scaled_mm and torch.matmul), as a yardstick
for the blockwise FP8 GEMM: per-tensor scales (no per-group promotion at all),
row-wise scales, the blockwise 1x128 / 128x128 scales that our kernels and the
peer compute, and bf16. Inputs rotate over 3 sets; one CUDA graph of 10 calls
per case, the cases of a shape timed interleaved (cuda_bench.GraphTimer:
median of --reps rounds) after a --warmup-s tensor-core load.

  python3 bench/fp8_ceiling.py [--shapes "M,N,K;..."] [--json OUT]
"""
import argparse
import json
import sys

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from cuda_bench import GraphTimer, peer_fn, warm_up_card  # noqa: E402  (as cuda_bench times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="8192,8192,8192;4096,7168,16384;4096,7168,2048;4096,4096,7168")
    ap.add_argument("--json", default="")
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--warmup-s", type=float, default=2.0)
    args = ap.parse_args()
    warm_up_card(args.warmup_s)
    timer = GraphTimer(None, {}, calls=10, reps=args.reps)
    fp8, bf16 = torch.float8_e4m3fn, torch.bfloat16
    gen = torch.Generator(device="cuda").manual_seed(5)
    peer = peer_fn()
    rows = []
    print("| M | N | K | per-tensor us | TF | row-wise us | TF | blockwise us | TF | bf16 us | TF |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.shapes.split(";"):
        M, N, K = (int(v) for v in spec.split(","))
        flop = 2.0 * M * N * K
        a = [(torch.randn(M, K, device="cuda", generator=gen) * 0.5).to(fp8) for _ in range(3)]
        b = [(torch.randn(N, K, device="cuda", generator=gen) * 0.5).to(fp8) for _ in range(3)]
        one = torch.ones((), device="cuda")
        sa_row = torch.ones((M, 1), device="cuda")
        sb_row = torch.ones((1, N), device="cuda")
        groups, nb = (K + 127) // 128, (N + 127) // 128
        sa_blk = torch.rand((groups, M), device="cuda", generator=gen).add_(0.5).t()  # M-major
        sb_blk = torch.rand((nb, groups), device="cuda", generator=gen).add_(0.5).t()
        ab = [x.to(bf16) for x in a]
        bb = [x.to(bf16) for x in b]
        row = {"M": M, "N": N, "K": K}
        cases = {
            "per_tensor": lambda i: torch._scaled_mm(a[i], b[i].t(), scale_a=one, scale_b=one,
                                                     out_dtype=bf16),
            "row_wise": lambda i: torch._scaled_mm(a[i], b[i].t(), scale_a=sa_row, scale_b=sb_row,
                                                   out_dtype=bf16),
            "blockwise": lambda i: peer(a[i], b[i], sa_blk, sb_blk),
            "bf16": lambda i: ab[i] @ bb[i].t(),
        }
        errors = {}  # scaling modes this torch/cuBLASLt refuses
        times = timer.compare(cases, 3, errors)
        row.update({name + "_error": message for name, message in errors.items()})
        cells = []
        for name in cases:
            if name in times:
                us = times[name]
                row[name + "_us"] = us
                row[name + "_tflops"] = flop / us / 1e6
                cells += [f"{us:.1f}", f"{flop / us / 1e6:.0f}"]
            else:
                cells += ["-", "-"]
        rows.append(row)
        print(f"| {M} | {N} | {K} | " + " | ".join(cells) + " |", flush=True)
        del a, b, ab, bb
        torch.cuda.empty_cache()
    if args.json:
        meta = {"card": torch.cuda.get_device_name(), "torch": torch.__version__}
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
