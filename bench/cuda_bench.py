#!/usr/bin/env python3
"""CUDA benchmark: this project's kernels against torch's blockwise scaled_mm
(cuBLASLt), in one process on one GPU, over shared/shapes.csv.

libfp8gemm.so is loaded through ctypes (no Python extension needed on the
GPU machine); torch allocates the device buffers, runs the peer, and times
everything with CUDA events on one stream. Inputs are random (never zeros)
and rotated through several copies whose total exceeds the L2 cache; every
time is the median over many calls.

Writes JSON (card, driver, CUDA version, date, per row: M, N, K, ours per
layout, peer, TFLOP/s, ratio; small-M rows also GB/s against the measured
device-to-device copy rate, fused vs two-launch linear) and a PNG plot.

usage: cuda_bench.py --lib build/libfp8gemm.so --shapes shared/shapes.csv
                     --out bench/results/cuda-h100.json [--quick]
"""
import argparse
import contextlib
import ctypes as C
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import time

import torch

# ---- the C API through ctypes ---------------------------------------------------
BACKEND_CUDA = 1
DTYPE_F32, DTYPE_BF16, DTYPE_F16, DTYPE_E4M3FN = 0, 1, 2, 3
LAYOUT_PLAIN, LAYOUT_SM90 = 0, 2
SCALE_ROW_MAJOR, SCALE_M_MAJOR = 0, 1
MEMORY_DEVICE = 1


class ContextOptions(C.Structure):
    _fields_ = [("backend", C.c_int), ("num_threads", C.c_int), ("isa", C.c_char_p),
                ("cuda_device", C.c_int), ("cuda_stream", C.c_void_p),
                ("tuned_table_path", C.c_char_p)]


class WeightDesc(C.Structure):
    _fields_ = [("N", C.c_size_t), ("K", C.c_size_t), ("dtype", C.c_int), ("data", C.c_void_p),
                ("layout", C.c_int), ("memory", C.c_int), ("scale_inv", C.c_void_p),
                ("bias", C.c_void_p), ("bias_dtype", C.c_int), ("target_layout", C.c_int)]


class Lib:
    def __init__(self, path):
        self.so = C.CDLL(path)
        so = self.so
        so.fp8gemm_last_error.restype = C.c_char_p
        so.fp8gemm_context_create.argtypes = [C.POINTER(ContextOptions), C.POINTER(C.c_void_p)]
        so.fp8gemm_context_options_init.argtypes = [C.POINTER(ContextOptions)]
        so.fp8gemm_context_destroy.argtypes = [C.c_void_p]
        so.fp8gemm_context_device.argtypes = [C.c_void_p]
        so.fp8gemm_context_device.restype = C.c_char_p
        so.fp8gemm_weight_desc_init.argtypes = [C.POINTER(WeightDesc)]
        so.fp8gemm_weight_create.argtypes = [C.c_void_p, C.POINTER(WeightDesc), C.POINTER(C.c_void_p)]
        so.fp8gemm_weight_destroy.argtypes = [C.c_void_p]
        so.fp8gemm_linear_workspace_size.argtypes = [C.c_void_p, C.c_void_p, C.c_size_t,
                                                     C.POINTER(C.c_size_t)]
        so.fp8gemm_gemm.argtypes = [C.c_void_p, C.c_void_p, C.c_size_t, C.c_void_p, C.c_size_t,
                                    C.c_void_p, C.c_int, C.c_size_t, C.c_int, C.c_void_p,
                                    C.c_size_t, C.c_void_p, C.c_size_t]
        so.fp8gemm_linear.argtypes = [C.c_void_p, C.c_void_p, C.c_size_t, C.c_int, C.c_void_p,
                                      C.c_size_t, C.c_int, C.c_void_p, C.c_size_t, C.c_void_p,
                                      C.c_size_t]
        so.fp8gemm_context_set_stream.argtypes = [C.c_void_p, C.c_void_p]
        so.fp8gemm_quantize_activations.argtypes = [C.c_void_p, C.c_size_t, C.c_size_t, C.c_int,
                                                    C.c_void_p, C.c_size_t, C.c_void_p,
                                                    C.c_size_t, C.c_void_p, C.c_int, C.c_size_t]

    def check(self, status, what):
        if status != 0:
            raise RuntimeError(f"{what}: status {status}: {self.so.fp8gemm_last_error().decode()}")

    def context(self, stream):
        opts = ContextOptions()
        self.so.fp8gemm_context_options_init(C.byref(opts))
        opts.backend = BACKEND_CUDA
        opts.cuda_stream = stream
        ctx = C.c_void_p()
        self.check(self.so.fp8gemm_context_create(C.byref(opts), C.byref(ctx)), "context_create")
        return ctx

    def weight(self, ctx, w_plain, scales, layout):
        N, K = w_plain.shape
        desc = WeightDesc()
        self.so.fp8gemm_weight_desc_init(C.byref(desc))
        desc.N, desc.K, desc.dtype = N, K, DTYPE_E4M3FN
        desc.data = w_plain.data_ptr()
        desc.layout = LAYOUT_PLAIN
        desc.memory = MEMORY_DEVICE
        desc.scale_inv = scales.data_ptr()
        desc.target_layout = layout
        handle = C.c_void_p()
        self.check(self.so.fp8gemm_weight_create(ctx, C.byref(desc), C.byref(handle)),
                   "weight_create")
        return handle

    def workspace_size(self, ctx, w, M):
        n = C.c_size_t()
        self.check(self.so.fp8gemm_linear_workspace_size(ctx, w, M, C.byref(n)), "workspace_size")
        return n.value


# ---- timing -----------------------------------------------------------------------
def median_us(fn, rotations, iters, warmup=3):
    """Per-call CUDA events (includes host launch gaps: for long kernels)."""
    for i in range(warmup):
        fn(i % rotations)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for i in range(iters):
        starts[i].record()
        fn(i % rotations)
        ends[i].record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends)) * 1000.0


class GraphTimer:
    """Captures `calls` consecutive calls (cycling the rotated inputs) in one
    CUDA graph per candidate and times replays with events: no host launch
    gaps, as in a serving engine. Our contexts are pointed at the capture
    stream while capturing.

    `compare` times several candidates (ours per layout, the peer, ...)
    interleaved: each round replays every candidate once, in an order
    rotated from round to round, and a candidate's time is the median of
    its rounds. The card's clocks drift with power and temperature over a
    run (an H200 gave the same build 776 or 878 us on 8192^3 in short runs,
    session 12), so candidates timed one after another can see different
    clocks; interleaved, they see the same ones, and their ratio holds."""

    def __init__(self, lib, ctxs, calls, reps, warm_ms=20.0):
        self.lib, self.ctxs, self.calls, self.reps = lib, ctxs, calls, reps
        self.warm_ms = warm_ms
        self.stream = torch.cuda.Stream()

    def capture(self, fn, rotations):
        """Runs fn over the rotations once, then captures `calls` calls.
        (lib may be None when ctxs is empty: torch-only candidates.)"""
        so = self.lib.so if self.ctxs else None
        for c in self.ctxs.values():
            self.lib.check(so.fp8gemm_context_set_stream(c, self.stream.cuda_stream), "set_stream")
        try:
            with torch.cuda.stream(self.stream):
                for i in range(rotations):
                    fn(i)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                for i in range(self.calls):
                    fn(i % rotations)
            return graph
        finally:
            torch.cuda.synchronize()
            for c in self.ctxs.values():
                so.fp8gemm_context_set_stream(c, C.c_void_p(torch.cuda.current_stream().cuda_stream))

    @staticmethod
    def _replay_us(graph):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1000.0

    def time(self, graphs):
        """graphs: {name: captured graph} -> {name: median us per call}."""
        names = list(graphs)
        # Warm-up, round-robin, ~warm_ms per candidate: the first row of a
        # shape, timed right after the weights' creation, measured up to
        # 20% slow with one warm-up replay, and still with ten (~2 ms).
        first = {n: self._replay_us(graphs[n]) for n in names}
        replays = min(200, math.ceil(self.warm_ms * 1000.0 / max(max(first.values()), 1.0)))
        for _ in range(replays):
            for n in names:
                graphs[n].replay()
        torch.cuda.synchronize()
        times = {n: [] for n in names}
        for rep in range(self.reps):
            shift = rep % len(names)
            for n in names[shift:] + names[:shift]:
                times[n].append(self._replay_us(graphs[n]) / self.calls)
        return {n: statistics.median(times[n]) for n in names}

    def compare(self, fns, rotations, errors=None):
        """fns: {name: fn(rotation)} -> {name: median us per call}, interleaved.
        With an `errors` dict, a candidate whose first calls or capture raise
        (a peer refusing a shape) is left out and its message kept there
        under its name; without one, the exception propagates."""
        graphs = {}
        try:
            for n, fn in fns.items():
                try:
                    graphs[n] = self.capture(fn, rotations)
                except Exception as exc:
                    if errors is None:
                        raise
                    errors[n] = str(exc).splitlines()[0][:200]
            return self.time(graphs) if graphs else {}
        finally:
            del graphs
            torch.cuda.synchronize()

    def __call__(self, fn, rotations):
        return self.compare({"only": fn}, rotations)["only"]


@contextlib.contextmanager
def environment(env):
    """Sets env while the block runs, then restores what was there (the
    library reads its FP8GEMM_CUDA_* knobs at context creation)."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def warm_up_card(seconds):
    """Keeps the tensor cores busy for `seconds` before anything is timed, so
    the first shapes do not run at the clocks of an idle card."""
    if seconds <= 0:
        return
    a = torch.randn((8192, 8192), device="cuda", dtype=torch.bfloat16)
    b = torch.randn((8192, 8192), device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for _ in range(10):
            a @ b
        torch.cuda.synchronize()
    del a, b
    torch.cuda.empty_cache()


def copy_rate_gbs():
    n = 1 << 30
    a = torch.randint(0, 255, (n,), dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    t = median_us(lambda i: b.copy_(a), 1, 20)
    return 2 * n / (t * 1e-6) / 1e9


def random_codes(shape, gen):
    w = torch.randint(0, 256, shape, dtype=torch.uint8, device="cuda", generator=gen)
    nan = (w & 0x7F) == 0x7F
    w[nan] ^= 1
    return w


def peer_fn():
    F = torch.nn.functional
    ScalingType = getattr(F, "ScalingType", None)
    if ScalingType is not None and hasattr(F, "scaled_mm"):
        a1 = getattr(ScalingType, "BlockWise1x128", None) or getattr(ScalingType, "Blockwise_1x128")
        b128 = getattr(ScalingType, "BlockWise128x128", None) or getattr(ScalingType, "Blockwise_128x128")

        def run(a, b, sa, sb):
            return F.scaled_mm(a, b.t(), sa, a1, sb, b128, output_dtype=torch.bfloat16)
        return run

    def run_private(a, b, sa, sb):
        return torch._scaled_mm(a, b.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
    return run_private


def peer_operands(xq, sx_mmajor, w_scale, M, groups, nb, peer, w0):
    """The peer's operands per rotation: as ours where it takes them; else
    padded as cuBLASLt's blockwise kernels require (M a multiple of 4, zero
    rows; the weight scales' K-group count a multiple of 4), which it then
    computes in full (the weight read is the same). Returns (a, scale_a,
    scale_b, what was padded)."""
    fp8 = torch.float8_e4m3fn
    a = [x.view(fp8) for x in xq]
    sa = [s.t() for s in sx_mmajor]  # [M, groups], M-major strides
    sb = [s.t() for s in w_scale]    # [groups, nb]
    try:
        peer(a[0], w0.view(fp8), sa[0], sb[0])
        return a, sa, sb, ""
    except Exception:
        pass
    m4, g4 = -(-M // 4) * 4, -(-groups // 4) * 4
    padded = []
    if m4 != M:
        padded.append(f"M {M} -> {m4}")
        a = [torch.cat([x, torch.zeros((m4 - M, x.shape[1]), dtype=x.dtype, device=x.device)])
             .view(fp8) for x in xq]
        sa = [torch.cat([s, torch.ones((s.shape[0], m4 - M), dtype=s.dtype, device=s.device)],
                        dim=1).t() for s in sx_mmajor]
    if g4 != groups:
        padded.append(f"weight-scale groups {groups} -> {g4}")
        sb = [torch.cat([s, torch.zeros((nb, g4 - groups), dtype=s.dtype, device=s.device)],
                        dim=1).t() for s in w_scale]
    return a, sa, sb, ", ".join(padded)


# ---- one shape -------------------------------------------------------------------
def bench_shape(lib, ctxs, set_name, N, K, ms, args, gen, copy_gbs, peer, timer):
    ctx = ctxs["default"]
    groups = (K + 127) // 128
    nb = (N + 127) // 128
    big = max(ms)
    rotations = max(2, min(16, math.ceil(args.rotate_bytes / (N * K + big * K))))
    ws_torch = []
    w_src = [random_codes((N, K), gen) for _ in range(rotations)]
    w_scale = [torch.rand((nb, groups), device="cuda", generator=gen) * 0.02 + 0.005
               for _ in range(rotations)]
    handles = {}
    for name, layout in (("plain", LAYOUT_PLAIN), ("preshuffled_sm90", LAYOUT_SM90)):
        handles[name] = [lib.weight(ctx, w_src[r], w_scale[r], layout) for r in range(rotations)]
    rows = []
    try:
        for M in ms:
            row = {"set": set_name, "M": M, "N": N, "K": K, "rotations": rotations}
            flops = 2.0 * M * N * K
            xq = [random_codes((M, K), gen) for _ in range(rotations)]
            sx_mmajor = [torch.rand((groups, M), device="cuda", generator=gen) * 0.02 + 0.005
                         for _ in range(rotations)]
            x16 = [torch.randn((M, K), device="cuda", generator=gen, dtype=torch.float32)
                   .to(torch.bfloat16) for _ in range(rotations)]
            y = torch.empty((M, N), dtype=torch.bfloat16, device="cuda")
            ws_bytes = max(lib.workspace_size(c, handles[l][0], M) for l in handles
                           for c in ctxs.values())
            ws = torch.empty((max(ws_bytes, 256),), dtype=torch.uint8, device="cuda")
            ws_torch.append(ws)

            def gemm(layout, r, context=ctx):
                lib.check(lib.so.fp8gemm_gemm(context, handles[layout][r], M, xq[r].data_ptr(), K,
                                              sx_mmajor[r].data_ptr(), SCALE_M_MAJOR, M,
                                              DTYPE_BF16, y.data_ptr(), N, ws.data_ptr(),
                                              ws_bytes), "gemm")

            # Every candidate of the row is timed in one interleaved pass (GraphTimer.compare).
            fns = {f"ours_{layout}_us": (lambda r, layout=layout: gemm(layout, r))
                   for layout in handles}
            # Accuracy of ours against the peer on the same data (sanity, not the test).
            gemm("preshuffled_sm90", 0)
            ours_y = y.float().clone()
            try:
                pa, psa, psb, padded = peer_operands(xq, sx_mmajor, w_scale, M, groups, nb,
                                                     peer, w_src[0])
                if padded:
                    row["peer_padded"] = padded
                peer_y = peer(pa[0], w_src[0].view(torch.float8_e4m3fn), psa[0], psb[0])[:M]
                row["ours_vs_peer_rel"] = float((ours_y - peer_y.float()).norm() /
                                                peer_y.float().norm())
                fns["peer_us"] = lambda r: peer(pa[r], w_src[r].view(torch.float8_e4m3fn),
                                                psa[r], psb[r])
            except Exception as e:  # the peer refuses the shape even padded
                row["peer_us"] = None
                row["peer_error"] = str(e).splitlines()[0][:200]
            if M <= 128:
                # Small and large kernel forced, on the preshuffled layout (crossover).
                for kind in ("small", "large", "registers"):
                    fns[f"{kind}_kernel_us"] = (
                        lambda r, kind=kind: gemm("preshuffled_sm90", r, ctxs[kind]))
            if M <= 32:
                wl = "preshuffled_sm90"
                ws2_bytes = lib.workspace_size(ctx, handles[wl][0], M)
                ws2 = torch.empty((max(ws2_bytes, 256),), dtype=torch.uint8, device="cuda")
                qx = torch.empty((M, K), dtype=torch.uint8, device="cuda")
                qs = torch.empty((groups, M), dtype=torch.float32, device="cuda")

                def linear(r):
                    lib.check(lib.so.fp8gemm_linear(ctx, handles[wl][r], M, DTYPE_BF16,
                                                    x16[r].data_ptr(), K, DTYPE_BF16,
                                                    y.data_ptr(), N, ws2.data_ptr(), ws2_bytes),
                              "linear")

                def two_launch(r):
                    lib.check(lib.so.fp8gemm_quantize_activations(
                        ctx, M, K, DTYPE_BF16, x16[r].data_ptr(), K, qx.data_ptr(), K,
                        qs.data_ptr(), SCALE_M_MAJOR, M), "quantize")
                    lib.check(lib.so.fp8gemm_gemm(ctx, handles[wl][r], M, qx.data_ptr(), K,
                                                  qs.data_ptr(), SCALE_M_MAJOR, M, DTYPE_BF16,
                                                  y.data_ptr(), N, ws.data_ptr(), ws_bytes),
                              "gemm")

                fns["linear_fused_us"] = linear
                fns["two_launch_us"] = two_launch
            errors = {}
            row.update(timer.compare(fns, rotations, errors))
            for name, message in errors.items():
                if name != "peer_us":  # only the peer may refuse; ours must run
                    raise RuntimeError(f"{name}: {message}")
                row["peer_us"], row["peer_error"] = None, message
            if M <= 32:
                row["gemm_only_us"] = row["ours_preshuffled_sm90_us"]
            best_layout = min(handles, key=lambda l: row[f"ours_{l}_us"])
            best = row[f"ours_{best_layout}_us"]
            row["best_layout"] = best_layout
            row["ours_best_tflops"] = flops / (best * 1e-6) / 1e12
            for layout in handles:
                row[f"ours_{layout}_tflops"] = flops / (row[f"ours_{layout}_us"] * 1e-6) / 1e12
            if row["peer_us"]:
                row["peer_tflops"] = flops / (row["peer_us"] * 1e-6) / 1e12
                row["speedup_vs_peer"] = row["peer_us"] / best
            # Bytes that must move: weight + its scales + xq + x scales + y.
            moved = N * K + nb * groups * 4 + M * K + M * groups * 4 + M * N * 2
            row["bytes_moved"] = moved
            row["ours_best_gbs"] = moved / (best * 1e-6) / 1e9
            row["roof_fraction"] = row["ours_best_gbs"] / copy_gbs
            rows.append(row)
            print(json.dumps(row), flush=True)
            del xq, sx_mmajor, x16, y
    finally:
        for hs in handles.values():
            for h in hs:
                lib.so.fp8gemm_weight_destroy(h)
    return rows


def read_shapes(path, quick):
    shapes = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            set_name, n, k, ms = line.split(",")
            ms = [int(v) for v in ms.split()]
            if set_name == "deepseek-v3":
                ms = sorted(set(ms) | {1, 2, 4, 8, 16, 32, 64, 128})
            shapes.append((set_name, int(n), int(k), ms))
    if quick:
        shapes = [s for s in shapes if s[0] == "deepseek-v3"][:2]
        shapes = [(a, n, k, [1, 16, 64, 256, 4096]) for a, n, k, _ in shapes]
    return shapes


def driver_version():
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        return out.stdout.strip().splitlines()[0]
    except Exception:
        return "unknown"


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    shapes = sorted({(r["N"], r["K"]) for r in rows})
    cols = 4
    nrows = math.ceil(len(shapes) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.3 * nrows), squeeze=False)
    for ax, (N, K) in zip(axes.flat, shapes):
        rs = sorted([r for r in rows if r["N"] == N and r["K"] == K], key=lambda r: r["M"])
        ms = [r["M"] for r in rs]
        ax.plot(ms, [r["ours_plain_tflops"] for r in rs], "o-", label="ours plain")
        ax.plot(ms, [r["ours_preshuffled_sm90_tflops"] for r in rs], "s-", label="ours preshuffled")
        peer = [(r["M"], r.get("peer_tflops")) for r in rs if r.get("peer_tflops")]
        if peer:
            ax.plot([p[0] for p in peer], [p[1] for p in peer], "^--", label="torch scaled_mm")
        ax.set_xscale("log", base=2)
        ax.set_title(f"N={N} K={K}", fontsize=9)
        ax.set_xlabel("M")
        ax.set_ylabel("TFLOP/s")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shapes):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--png")
    ap.add_argument("--calls", type=int, default=20, help="calls per captured graph")
    ap.add_argument("--reps", type=int, default=15, help="timed graph replays (median)")
    ap.add_argument("--warmup-s", type=float, default=2.0,
                    help="seconds of tensor-core load before the first shape")
    ap.add_argument("--rotate-bytes", type=float, default=200e6)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-m", type=int, default=0, help="only rows with M <= this (0: all)")
    args = ap.parse_args()

    torch.manual_seed(0)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(1234)
    lib = Lib(args.lib)
    stream = torch.cuda.current_stream().cuda_stream
    # The fused linear is timed at every M <= 32 ("linear_fused_us"; the
    # library's default takes it where a CTA quantizes at most 32 activation
    # groups). Set here, not at import: bench/cuda_variants.py imports this
    # file and its "default" variants must be the library's default.
    os.environ.setdefault("FP8GEMM_CUDA_FUSED_MAX_M", "32")
    ctxs = {"default": lib.context(stream)}
    for kind, env in (("small", {"FP8GEMM_CUDA_CROSSOVER": "1000000"}),
                      ("large", {"FP8GEMM_CUDA_CROSSOVER": "0"}),
                      # The register-streaming small kernel (the decode kernel before the TMA-ring one).
                      ("registers", {"FP8GEMM_CUDA_CROSSOVER": "1000000",
                                     "FP8GEMM_CUDA_SMALL_KERNEL": "registers"})):
        with environment(env):
            ctxs[kind] = lib.context(stream)

    warm_up_card(args.warmup_s)
    copy_gbs = copy_rate_gbs()
    timer = GraphTimer(lib, ctxs, args.calls, args.reps)
    peer = peer_fn()
    props = torch.cuda.get_device_properties(0)
    meta = {
        "card": torch.cuda.get_device_name(0),
        "sm_count": props.multi_processor_count,
        "driver": driver_version(),
        "cuda_runtime_torch": torch.version.cuda,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device_to_device_copy_gbs": copy_gbs,
        "library_device": lib.so.fp8gemm_context_device(ctxs["default"]).decode(),
        "method": "CUDA graph of --calls calls cycling inputs rotated through copies > L2; "
                  "a row's candidates interleaved, median over --reps rounds of "
                  "(replay time / calls), CUDA events",
        "warmup_s": args.warmup_s,
    }
    print(json.dumps(meta), flush=True)
    rows = []
    for set_name, N, K, ms in read_shapes(args.shapes, args.quick):
        if args.max_m:
            ms = [m for m in ms if m <= args.max_m]
            if not ms:
                continue
        rows += bench_shape(lib, ctxs, set_name, N, K, ms, args, gen, copy_gbs, peer, timer)
        torch.cuda.empty_cache()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    if args.png:
        plot(rows, args.png)
    # Summary: the rows the issues' targets speak of.
    print("\n| M | N | K | ours plain us | ours preshuffled us | peer us | best TF/s | x peer | % roof |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pad = "*" if r.get("peer_padded") else ""
        peer_us = f"{r['peer_us']:.1f}{pad}" if r.get("peer_us") else "-"
        sp = f"{r['speedup_vs_peer']:.2f}" if r.get("speedup_vs_peer") else "-"
        print(f"| {r['M']} | {r['N']} | {r['K']} | {r['ours_plain_us']:.1f} | "
              f"{r['ours_preshuffled_sm90_us']:.1f} | {peer_us} | {r['ours_best_tflops']:.0f} | "
              f"{sp} | {100 * r['roof_fraction']:.0f} |")
    # Decode rows: each small-M kernel forced (preshuffled), against the copy roof.
    print("\n| M | N | K | MB moved | decode us | % roof | registers us | large us | "
          "fused us | two-launch us | peer us |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    fmt = lambda v: f"{v:.1f}" if v else "-"
    for r in rows:
        if "small_kernel_us" not in r:
            continue
        roof = r["bytes_moved"] / (r["small_kernel_us"] * 1e-6) / 1e9 / copy_gbs
        print(f"| {r['M']} | {r['N']} | {r['K']} | {r['bytes_moved'] / 1e6:.1f} | "
              f"{r['small_kernel_us']:.1f} | {100 * roof:.0f} | {fmt(r.get('registers_kernel_us'))} | "
              f"{fmt(r.get('large_kernel_us'))} | {fmt(r.get('linear_fused_us'))} | "
              f"{fmt(r.get('two_launch_us'))} | {fmt(r.get('peer_us'))} |")
    print("* the peer refused the shape as given; timed padded as cuBLASLt requires (M to a "
          "multiple of 4 with zero rows, the weight scales' K groups to a multiple of 4)")
    print(f"device-to-device copy: {copy_gbs:.0f} GB/s")
    for c in ctxs.values():
        lib.so.fp8gemm_context_destroy(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
