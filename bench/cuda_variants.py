#!/usr/bin/env python3
"""Times kernel variants of the CUDA backend against each other and torch's
blockwise scaled_mm, in one process (same card, same run), for a few shapes.
A variant is a set of FP8GEMM_CUDA_* environment values read when its context
is created (FP8GEMM_CUDA_LARGE_CONFIG, _GROUP_M, _LARGE_VARIANT, _CROSSOVER, ...).
Timing as bench/cuda_bench.py: CUDA graphs of --calls calls over inputs
rotated through more than L2; a row's variants, layouts and the peer are
replayed interleaved, and each time is the median of its --reps rounds.

  cuda_variants.py --lib L --shapes "4096,7168,2048;1,2112,7168" \
      --variants "base:;w192:FP8GEMM_CUDA_LARGE_CONFIG=192" [--layouts plain,sm90]
  cuda_variants.py --lib L --once 4096,7168,2048 --variants "base:" (for ncu: 3 calls, 3 weights)
"""
import argparse
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cuda_bench as cb  # noqa: E402


def parse_variants(text):
    out = []
    for item in text.split(";"):
        if not item.strip():
            continue
        name, _, envs = item.partition(":")
        env = {}
        for kv in envs.split(","):
            if kv.strip():
                k, _, v = kv.partition("=")
                env[k.strip()] = v.strip()
        out.append((name.strip(), env))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--shapes", default="")
    ap.add_argument("--once", default="")
    ap.add_argument("--variants", default="base:")
    ap.add_argument("--layouts", default="plain")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--reps", type=int, default=11)
    ap.add_argument("--alt-lib", default="",
                    help="other builds of the library, loaded beside --lib: PATH or "
                         "NAME=PATH[,NAME=PATH...]; every variant is also timed on each, as "
                         "VARIANT@NAME (NAME alt for a bare PATH), interleaved with the rest")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--linear", action="store_true",
                    help="time fp8gemm_linear on bf16 x (quantize + GEMM, fused where enabled)")
    ap.add_argument("--x-hot", action="store_true",
                    help="one activation set for every call (x stays in L2, as the previous "
                         "layer's output would); the weights still rotate")
    ap.add_argument("--warmup-s", type=float, default=2.0,
                    help="seconds of tensor-core load before the first shape")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    gen = torch.Generator(device="cuda")
    gen.manual_seed(1234)
    # Builds: the library under test (suffix ""), and with --alt-lib other
    # builds of it (a patched kernel, an older commit), suffix "@NAME".
    builds = {"": cb.Lib(args.lib)}
    for item in (v for v in args.alt_lib.split(",") if v):
        name, _, path = item.rpartition("=")
        builds["@" + (name or "alt")] = cb.Lib(path)
    stream = torch.cuda.current_stream().cuda_stream
    variants = parse_variants(args.variants)
    variant_env = dict(variants)
    ctxs = {}  # suffix -> variant name -> context of that build
    for suffix, lib in builds.items():
        ctxs[suffix] = {}
        for name, env in variants:
            with cb.environment(env):
                ctxs[suffix][name] = lib.context(stream)
    layouts = {"plain": cb.LAYOUT_PLAIN, "sm90": cb.LAYOUT_SM90}
    want_layouts = [l for l in args.layouts.split(",") if l]
    shapes = args.once or args.shapes
    timers = {suffix: cb.GraphTimer(lib, ctxs[suffix], args.calls, args.reps)
              for suffix, lib in builds.items()}
    timer = timers[""]
    if not args.once:
        cb.warm_up_card(args.warmup_s)
    peer = None if args.no_peer or args.once else cb.peer_fn()
    rows = []
    for spec in shapes.split(";"):
        if not spec.strip():
            continue
        M, N, K = (int(v) for v in spec.split(","))
        groups, nb = (K + 127) // 128, (N + 127) // 128
        # --once: three calls on three weights (for profilers; the weights
        # of the shapes that matter do not all fit in L2 at once).
        rot = 3 if args.once else max(2, min(16, math.ceil(200e6 / (N * K + M * K))))
        w_src = [cb.random_codes((N, K), gen) for _ in range(rot)]
        w_scale = [torch.rand((nb, groups), device="cuda", generator=gen) * 0.02 + 0.005
                   for _ in range(rot)]
        xq = [cb.random_codes((M, K), gen) for _ in range(rot)]
        x16 = [torch.randn((M, K), device="cuda", generator=gen).to(torch.bfloat16)
               for _ in range(rot)] if args.linear else None
        sx = [torch.rand((groups, M), device="cuda", generator=gen) * 0.02 + 0.005
              for _ in range(rot)]
        if args.x_hot:
            xq = [xq[0]] * rot
            sx = [sx[0]] * rot
            x16 = [x16[0]] * rot if x16 else None
        y = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
        row = {"M": M, "N": N, "K": K}
        ref = None
        # Every variant, layout and the peer are captured first and timed in
        # one interleaved pass (cb.GraphTimer.time): they see the same clocks.
        graphs, all_handles, keep = {}, [], []
        for suffix, lname in ((s, l) for s in builds for l in want_layouts):
            lib, mine = builds[suffix], ctxs[suffix]
            ctx0 = next(iter(mine.values()))
            handles = [lib.weight(ctx0, w_src[r], w_scale[r], layouts[lname]) for r in range(rot)]
            all_handles += [(lib, h) for h in handles]
            ws_bytes = max(lib.workspace_size(c, handles[0], M) for c in mine.values())
            ws = torch.empty((max(ws_bytes, 256),), dtype=torch.uint8, device="cuda")
            keep.append(ws)
            for vname, ctx in mine.items():
                def gemm(r, ctx=ctx, handles=handles, ws=ws, ws_bytes=ws_bytes, lib=lib):
                    if args.linear:
                        lib.check(lib.so.fp8gemm_linear(ctx, handles[r], M, cb.DTYPE_BF16,
                                                        x16[r].data_ptr(), K, cb.DTYPE_BF16,
                                                        y.data_ptr(), N, ws.data_ptr(), ws_bytes),
                                  "linear")
                        return
                    lib.check(lib.so.fp8gemm_gemm(ctx, handles[r], M, xq[r].data_ptr(), K,
                                                  sx[r].data_ptr(), cb.SCALE_M_MAJOR, M,
                                                  cb.DTYPE_BF16, y.data_ptr(), N, ws.data_ptr(),
                                                  ws_bytes), "gemm")
                # Knobs read per call (FP8GEMM_CUDA_STREAM_*) must be set while
                # this variant's calls (and graph captures) run, not only at
                # context creation.
                with cb.environment(variant_env[vname]):
                    if args.once:
                        for r in range(3):
                            gemm(r)
                        torch.cuda.synchronize()
                        continue
                    y.fill_(float("nan"))
                    gemm(0)
                    torch.cuda.synchronize()
                    out = y.float()
                    if ref is None:
                        ref = out.clone()
                    rel = float((out - ref).norm() / ref.norm())
                    bad = bool(torch.isnan(out).any())
                    key = f"{vname}{suffix}/{lname}"
                    graphs[f"{key}_us"] = timers[suffix].capture(gemm, rot)
                    row[f"{key}_vs_first"] = rel if not bad else "NaN"
        if peer is not None:
            try:
                pa, psa, psb, padded = cb.peer_operands(xq, sx, w_scale, M, groups, nb, peer,
                                                        w_src[0])
                if padded:
                    row["peer_padded"] = padded
                pref = peer(pa[0], w_src[0].view(torch.float8_e4m3fn), psa[0],
                            psb[0])[:M].float()
                if ref is not None:
                    row["first_vs_peer_rel"] = float((ref - pref).norm() / pref.norm())
                graphs["peer_us"] = timer.capture(
                    lambda r: peer(pa[r], w_src[r].view(torch.float8_e4m3fn), psa[r], psb[r]),
                    rot)
            except Exception as e:
                row["peer_us"] = None
                row["peer_error"] = str(e).splitlines()[0][:120]
        if graphs:
            row.update(timer.time(graphs))
        del graphs
        torch.cuda.synchronize()
        for lib, h in all_handles:
            lib.so.fp8gemm_weight_destroy(h)
        if not args.once:
            print(json.dumps(row), flush=True)
            rows.append(row)
        del w_src, w_scale, xq, sx, y
        torch.cuda.empty_cache()
    if rows:
        names = [k for k in rows[0] if k.endswith("_us")]
        print("\n| M | N | K | " + " | ".join(names) + " |")
        for r in rows:
            cells = []
            for k in names:
                v = r.get(k)
                cells.append("-" if v is None else f"{v:.1f}")
            print(f"| {r['M']} | {r['N']} | {r['K']} | " + " | ".join(cells) + " |")
        if args.out:
            meta = {"card": torch.cuda.get_device_name(0), "driver": cb.driver_version(),
                    "torch": torch.__version__, "variants": args.variants}
            with open(args.out, "w") as f:
                json.dump({"meta": meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
