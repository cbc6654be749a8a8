#!/usr/bin/env python3
"""Small-M (decode) benchmark in one process: a baseline library and the new
one side by side, the large-M kernel forced, torch's blockwise scaled_mm and
the device copy rate, on the preshuffled layout. Timing as cuda_bench.py
(CUDA graphs of --calls calls over inputs rotated through more than L2,
median of --reps replays).

  cuda_small_bench.py --base BASE.so --new NEW.so [--shapes "N,K;..."] [--ms 1,4,16,64]
                      [--splits 1,2,4,8] --out rows.json
"""
import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cuda_bench as cb  # noqa: E402

DS = "2112,7168;24576,1536;32768,512;7168,16384;4096,7168;7168,2048"


def ctx_with(lib, stream, env):
    with cb.environment(env):
        return lib.context(stream)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="")
    ap.add_argument("--new", required=True)
    ap.add_argument("--shapes", default=DS)
    ap.add_argument("--ms", default="1,4,16,64")
    ap.add_argument("--splits", default="")
    ap.add_argument("--splits-ms", default="1,16")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1234)
    stream = torch.cuda.current_stream().cuda_stream
    libs = {"new": cb.Lib(args.new)}
    if args.base:
        libs["base"] = cb.Lib(args.base)
    small = {"FP8GEMM_CUDA_CROSSOVER": "1000"}
    ctxs = {n: {"small": ctx_with(l, stream, small), "large": ctx_with(l, stream, {"FP8GEMM_CUDA_CROSSOVER": "0"}),
                "default": ctx_with(l, stream, {})} for n, l in libs.items()}
    timers = {n: cb.GraphTimer(l, ctxs[n], args.calls, args.reps) for n, l in libs.items()}
    copy_gbs = cb.copy_rate_gbs()
    print(f"copy rate {copy_gbs:.0f} GB/s", flush=True)
    peer = cb.peer_fn()
    ms = [int(v) for v in args.ms.split(",")]
    splits = [int(v) for v in args.splits.split(",") if v]
    splits_ms = [int(v) for v in args.splits_ms.split(",") if v]
    rows = []
    for spec in args.shapes.split(";"):
        N, K = (int(v) for v in spec.split(","))
        groups, nb = (K + 127) // 128, (N + 127) // 128
        rot = max(2, min(16, math.ceil(200e6 / (N * K))))
        w_src = [cb.random_codes((N, K), gen) for _ in range(rot)]
        w_scale = [torch.rand((nb, groups), device="cuda", generator=gen) * 0.02 + 0.005
                   for _ in range(rot)]
        handles = {n: [l.weight(ctxs[n]["default"], w_src[r], w_scale[r], cb.LAYOUT_SM90)
                       for r in range(rot)] for n, l in libs.items()}
        for M in ms:
            xq = [cb.random_codes((M, K), gen) for _ in range(rot)]
            sx = [torch.rand((groups, M), device="cuda", generator=gen) * 0.02 + 0.005
                  for _ in range(rot)]
            x16 = [torch.randn((M, K), device="cuda", generator=gen).to(torch.bfloat16)
                   for _ in range(rot)]
            y = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
            ws_bytes = 64 << 20
            ws = torch.empty((ws_bytes,), dtype=torch.uint8, device="cuda")
            qx = torch.empty((M, K), dtype=torch.uint8, device="cuda")
            qs = torch.empty((groups, M), dtype=torch.float32, device="cuda")
            row = {"M": M, "N": N, "K": K}
            moved = N * K + nb * groups * 4 + M * K + M * groups * 4 + M * N * 2
            row["roof_us"] = moved / (copy_gbs * 1e9) * 1e6
            outs = {}
            for n, lib in libs.items():
                def gemm(r, c, lib=lib, n=n):
                    lib.check(lib.so.fp8gemm_gemm(c, handles[n][r], M, xq[r].data_ptr(), K,
                                                  sx[r].data_ptr(), cb.SCALE_M_MAJOR, M,
                                                  cb.DTYPE_BF16, y.data_ptr(), N, ws.data_ptr(),
                                                  ws_bytes), "gemm")
                for kind in ("small", "large"):
                    if n == "base" and kind == "large":
                        continue
                    c = ctxs[n][kind]
                    y.fill_(float("nan"))
                    gemm(0, c)
                    torch.cuda.synchronize()
                    outs[f"{n}_{kind}"] = y.float().clone()
                    row[f"{n}_{kind}_us"] = timers[n](lambda r, c=c: gemm(r, c), rot)
                if n == "new" and M in splits_ms:
                    for sp in splits:
                        # Read at each call, not at context creation.
                        with cb.environment({"FP8GEMM_CUDA_SMALL_SPLITS": str(sp)}):
                            c = ctxs[n]["small"]
                            gemm(0, c)
                            torch.cuda.synchronize()
                            e = float((y.float() - outs["new_small"]).norm()
                                      / outs["new_small"].norm())
                            row[f"new_small_s{sp}_us"] = timers[n](lambda r, c=c: gemm(r, c), rot)
                            row[f"new_small_s{sp}_rel"] = e
                if n == "new" and M <= 16:
                    c = ctxs[n]["small"]

                    def linear(r, c=c, lib=lib, n=n):
                        lib.check(lib.so.fp8gemm_linear(c, handles[n][r], M, cb.DTYPE_BF16,
                                                        x16[r].data_ptr(), K, cb.DTYPE_BF16,
                                                        y.data_ptr(), N, ws.data_ptr(), ws_bytes),
                                  "linear")

                    def two(r, c=c, lib=lib, n=n):
                        lib.check(lib.so.fp8gemm_quantize_activations(
                            c, M, K, cb.DTYPE_BF16, x16[r].data_ptr(), K, qx.data_ptr(), K,
                            qs.data_ptr(), cb.SCALE_M_MAJOR, M), "quantize")
                        lib.check(lib.so.fp8gemm_gemm(c, handles[n][r], M, qx.data_ptr(), K,
                                                      qs.data_ptr(), cb.SCALE_M_MAJOR, M,
                                                      cb.DTYPE_BF16, y.data_ptr(), N,
                                                      ws.data_ptr(), ws_bytes), "gemm")
                    linear(0)
                    torch.cuda.synchronize()
                    yf = y.float().clone()
                    two(0)
                    torch.cuda.synchronize()
                    row["fused_vs_two_maxabs"] = float((yf - y.float()).abs().max())
                    row["fused_us"] = timers[n](linear, rot)
                    row["two_launch_us"] = timers[n](two, rot)
            ref = outs["new_small"]
            for k, v in outs.items():
                row[f"{k}_rel_vs_new"] = float((v - ref).norm() / ref.norm())
            try:
                py = peer(xq[0].view(torch.float8_e4m3fn), w_src[0].view(torch.float8_e4m3fn),
                          sx[0].t(), w_scale[0].t()).float()
                row["new_vs_peer_rel"] = float((ref - py).norm() / py.norm())
                row["peer_us"] = timers["new"](
                    lambda r: peer(xq[r].view(torch.float8_e4m3fn), w_src[r].view(torch.float8_e4m3fn),
                                   sx[r].t(), w_scale[r].t()), rot)
            except Exception as e:
                row["peer_us"] = None
                row["peer_error"] = str(e).splitlines()[0][:100]
            print(json.dumps(row), flush=True)
            rows.append(row)
            del xq, sx, x16, y, ws
        for n, hs in handles.items():
            for h in hs:
                libs[n].so.fp8gemm_weight_destroy(h)
        del w_src, w_scale
        torch.cuda.empty_cache()
    keys = ["base_small_us", "new_small_us", "new_large_us", "peer_us", "roof_us", "fused_us",
            "two_launch_us"]
    print("\n| M | N | K | " + " | ".join(keys) + " | new roof % | x torch |")
    for r in rows:
        cells = ["-" if r.get(k) is None else f"{r[k]:.1f}" for k in keys]
        pct = 100 * r["roof_us"] / r["new_small_us"]
        xt = f"{r['peer_us'] / r['new_small_us']:.2f}" if r.get("peer_us") else "-"
        print(f"| {r['M']} | {r['N']} | {r['K']} | " + " | ".join(cells) + f" | {pct:.0f} | {xt} |")
    if args.out:
        meta = {"card": torch.cuda.get_device_name(0), "driver": cb.driver_version(),
                "torch": torch.__version__, "copy_gbs": copy_gbs}
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
