/* Decode GEMM (M <= 128 per launch): every weight byte read once, by
 * tensor-memory-engine copies, the work spread over the SMs in one wave.
 *
 * Work: the weight is cut into 16 KiB tiles, (128-row block row b, 128-wide
 * K group g), numbered t = b * groups + g, and each of P <= SMs resident
 * CTAs takes one contiguous range of them (plan_ranges): whole block rows
 * when there are at least as many rows as SMs (or, up to 24 MiB, at M <= 16
 * or K of at most 8 groups, enough rows to keep 40% of them busy), else one
 * run of K groups of one block row per CTA (floor(SMs / rows) runs per
 * row). In the
 * preshuffled layout a range is one contiguous run of memory.
 *
 * Launch: with programmatic dependent launch (FP8GEMM_CUDA_PDL=0: off),
 * so the CTAs take the SMs as the previous kernel's CTAs leave them. The
 * producer issues its first ring of weight copies at once (the weight is
 * read-only while a handle lives; copies carry the L2 evict_first policy,
 * as the weight is read once) and waits for the previous kernel's end
 * (griddepcontrol.wait) before the activation copies; the consumers wait
 * before reading scales or writing anything. Each CTA lets the next kernel
 * launch at its start (griddepcontrol.launch_dependents).
 *
 * A CTA is a producer warp and two consumer warpgroups around a ring of
 * stages in shared memory (as many as fit, up to 10: ~160 KiB in flight per
 * SM). The producer's lane 0 waits for a free stage (empty mbarrier), arms
 * its full mbarrier and issues
 *  - the weight tile: one 1-D bulk copy of rows * 128 contiguous bytes
 *    (preshuffled: the tile is stored in the 128B-swizzled order), or a 2-D
 *    tensor copy with the 128B swizzle (plain); the preshuffled layout's
 *    narrow last K tile is written by the producer warp (zeros past K);
 *  - unless fused, the activation tile: a 2-D tensor copy of 8*MT rows x
 *    128 codes (rows past M and columns past K arrive as zeros).
 * Consumer warpgroup w multiplies weight rows 64w..64w+63 of the tile by
 * the activation with four wgmma m64n(8*MT)k32 (e4m3, both operands from
 * shared memory, the weight as A), waits, promotes the fp32 partial with
 * sx(m, g) * sw(b, g) and releases the stage. (mma.sync has no fp8 path on
 * Hopper: ptxas expands it into fp8 -> f16 unpacks and f16 mma, and a
 * kernel built on it was bound by the consumer's ~250 instructions per
 * 16 KiB tile at about half the HBM rate.)
 *
 * The fused linear quantizes the activation in the kernel, once per CTA:
 * before its first tile, the consumers quantize the K groups of x their
 * range reads (all rows) into codes and scales kept resident in shared
 * memory beside a shorter ring (quantize_resident: the arithmetic of the
 * standalone quantizer, so both paths give the same bits), while the first
 * weight tiles are on their way (where a CTA's range is short, only half
 * of it goes out before: kFusedEarlyTiles). (Quantizing each tile's x on
 * its path, the session-2/3 design, was slower than two launches
 * everywhere.)
 *
 * Scales: the consumers copy sw and sx of 32 tiles at a time into a
 * double-buffered table in shared memory (cp.async, 4 bytes each), one
 * chunk ahead, and meet at a named barrier per chunk, so no scale load
 * (an L2 round trip under full HBM load) sits on a tile's path.
 *
 * Rows cut between CTAs (row splits), deterministic: each piece's CTA
 * writes its fp32 partial (register order, float4 per thread) to its own
 * workspace slot and counts itself in the row's counter. Up to M = 16, and
 * above while a row's pieces x M <= 256, the last to arrive adds the row's
 * pieces in CTA order and stores y, and resets the counter for the next
 * launch: wait-free. Otherwise the launch is
 * cooperative and every piece waits for the others and then adds up its
 * own share of the row (add_share_of_row), so the row's reads and stores
 * are spread over its CTAs. Where a row has two long pieces, they are one
 * thread-block cluster instead: each puts its partial in its own shared
 * memory, the pair meets at a cluster barrier and each adds up half the
 * row from both (cluster_add_row), with no workspace or L2 round trip. The
 * sum's order, and so y, is the same in all three ways and whichever CTA
 * finishes last. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "device_common.cuh"
#include "hopper_ptx.cuh"

namespace {

constexpr int kConsumerWarps = 8;
constexpr int kConsumerThreads = kConsumerWarps * 32;
/* Warpgroup 0 produces (one warp works, its registers cut to 40), warpgroups
 * 1 and 2 consume (registers raised to 232): a 9-warp CTA would be held to
 * 168 registers a thread (3 warps on one SM sub-partition), which spills the
 * M > 32 variants. */
constexpr int kThreads = kConsumerThreads + 128;
static_assert(kThreads == kWarpSpecThreads, "setmaxnreg counts (hopper_ptx.cuh) assume 384 threads");
constexpr int kTileBytes = 128 * 128;
constexpr int kMaxStages = 10;
constexpr int kRows = 1, kRowSplits = 2;
constexpr int kSmemBudget = 227 * 1024;
constexpr int kScaleChunk = 32; /* tiles per scale-table refill */
/* Spread hand-off (plan_ranges) from M = 17 when a row's pieces x M
 * exceed kLastPieceMaxPiecesRows: the last piece alone reads every other piece's slot, which
 * costs more than the meeting as the row's pieces or M grow. Measured on
 * the H100 with programmatic dependent launch, back-to-back calls in a graph
 * (session 9, bench/results/cuda-h100-2026-12-06-s9.md), decode kernel
 * forced, spread / last piece: 4 pieces (4096 x 7168) M = 32 15.1 / 13.3
 * us, M = 64 17.1 / 16.1, M = 128 22.8 / 24.7; 2 pieces (7168 x 16384) M =
 * 64 50.6 / 47.5, (7168 x 2048) M = 64 14.5 / 11.0, M = 128 19.1 / 17.1; 7
 * (2112 x 7168) M = 32 11.6 / 10.4, M = 64 14.3 / 14.8; 16 (1024 x 8192) M
 * = 64 9.9 / 13.5. (The H200 of session 5, before that launch overlap, had
 * favoured spreading at every M >= 17.) */
constexpr size_t kSpreadMinM = 17;
constexpr long long kLastPieceMaxPiecesRows = 256;
/* Cluster hand-off (plan_ranges) where a row has 2 pieces of at least
 * kClusterMinPieceGroups K groups each. H100, session 10, decode kernel
 * forced, last piece / cluster, us: 7168 x 16384 (2 x 64 groups) M = 1 41.6
 * / 40.7, 16 42.3 / 41.4, 32 43.4 / 42.5, 64 47.8 / 46.8; 8192 x 32768 (2
 * x 128) M = 1 89.1 / 88.9, 64 97.8 / 96.2. Slower with short pieces (7168
 * x 2048, 2 x 8 groups: M = 32 8.6 / 9.7, M = 64 10.8 / 11.2) and with 3
 * pieces (4608 x 7168, 3 x 19: M = 1 13.4 / 14.0, M = 64 17.8 / 18.3). The
 * clusters of 4 that 4096 x 7168 would need do not fit (30 of 32 rows).
 * bench/results/cuda-h100-2026-12-06-s10.md. */
constexpr int kClusterPieces = 2;
constexpr int kClusterMinPieceGroups = 32;

/* One ring stage: the weight tile and, unless fused, the activation codes
 * (8*MT rows of 128, swizzled), both 1 KiB aligned (the 128B swizzle
 * pattern follows address bits 4-9). The fused kernel keeps the codes of
 * every K group its range needs resident instead (x_groups of them, with
 * their scales), quantized once at the start. The mbarriers and the
 * double-buffered scale table follow. */
template <int MT, bool kFused>
struct Ring {
  static constexpr int rows = 8 * MT;
  static constexpr int codes_bytes = rows * 128;
  static constexpr int stage_bytes = kFused ? kTileBytes : kTileBytes + codes_bytes;
  /* Scale table: [2 chunks][kScaleChunk tiles][sw, and unless fused sx of rows 0..rows-1]. */
  static constexpr int scale_stride = kFused ? 1 : 1 + rows;
  static constexpr int scale_bytes = 2 * kScaleChunk * scale_stride * 4;
  static constexpr int resident_bytes_per_group = codes_bytes + rows * 4;
  static int stages_for(int x_groups) {
    const long long fit = ((long long)kSmemBudget - 1024 - scale_bytes -
                           (long long)x_groups * resident_bytes_per_group) /
                          (stage_bytes + 16);
    return (int)(fit < kMaxStages ? fit : kMaxStages);
  }
  static size_t smem_bytes(int stages, int x_groups) {
    return 1024 + (size_t)stages * (stage_bytes + 16) +
           (size_t)x_groups * resident_bytes_per_group + scale_bytes;
  }
};

/* The fused kernel needs this many ring stages beside its resident
 * activation, else fp8gemm_linear takes two launches. */
constexpr int kMinFusedStages = 4;
/* Fused, a CTA range of at most kFusedEarlyMaxRange tiles: kFusedEarlyTiles
 * of them are issued before the activation is quantized, the rest after
 * (the activation's loads then wait behind less weight). H100, session
 * 10, one launch, whole first ring / 4 early, us: 32768 x 512 (8 tiles a
 * CTA) M = 1 8.6 / 7.3, M = 4 8.7 / 7.6, M = 8 9.0 / 7.5, M = 16 12.1 /
 * 10.2; 2112 x 7168 (8) M = 1 9.4 / 8.5, M = 4 9.6 / 8.7; but 4096 x 7168
 * (14) M = 1 12.6 / 13.0, 24576 x 1536 (24) M = 4 15.4 / 16.6, 7168 x
 * 16384 (64) M = 1 42.7 / 44.7 (bench/results/cuda-h100-2026-12-06-s10.md). */
constexpr int kFusedEarlyMaxRange = 8;
constexpr int kFusedEarlyTiles = 4;

struct StreamParams {
  const uint8_t *w;
  const float *w_scale;
  int N, K, groups;
  int ctas;
  const float *x_scale;
  size_t sx_stride_m, sx_stride_g;
  fp8gemm_dtype x_dtype; /* fused: bf16 or f16 */
  const void *x;          /* fused: raw activation rows (16-byte aligned) */
  size_t ldx;
  int x_groups;           /* fused: K groups of x a CTA keeps resident */
  const float *bias;
  void *y;
  size_t ldy;
  fp8gemm_dtype y_dtype;
  int M;
  float4 *slots;          /* [ctas][MT][256 threads] */
  unsigned int *flags;    /* [ctas], zero between launches */
  int stages;             /* ring depth in use (<= the kernel's; benchmarks lower it) */
  int ranges;             /* kRows or kRowSplits (see plan_ranges) */
  int block_rows;
  int row_splits, split_groups; /* kRowSplits: ranges of split_groups groups of one row */
  int spread_fixup;       /* row pieces meet and each adds up a share (cooperative launch) */
  int cluster_fixup;      /* a row's pieces are one cluster and add up through shared memory */
  int fused_early;        /* fused: weight tiles issued before the activation is quantized */
  int evict_first;        /* weight copies with the L2 evict_first policy (FP8GEMM_CUDA_STREAM_EVICT=0: off) */
  int skip_fixup;         /* FP8GEMM_CUDA_STREAM_NOFIX=1: wrong results, timing probe */
  unsigned long long *trace; /* FP8GEMM_CUDA_STREAM_TRACE=1: per-CTA timestamps (probe) */
};

/* Shared-memory accesses by 32-bit shared address: the ring is reached
 * through an aligned copy of the dynamic shared-memory pointer, through
 * which the compiler no longer knows the state space (generic loads). */

__device__ __forceinline__ void sts64(uint32_t addr, uint32_t lo, uint32_t hi) {
  asm volatile("st.shared.v2.u32 [%0], {%1, %2};" ::"r"(addr), "r"(lo), "r"(hi) : "memory");
}

__device__ __forceinline__ void sts_zero16(uint32_t addr) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};" ::"r"(addr), "r"(0u) : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ unsigned int atomic_add_acq_rel(unsigned int *p, unsigned int v) {
  unsigned int old;
  asm volatile("atom.add.acq_rel.gpu.global.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

__device__ __forceinline__ unsigned int load_acquire(const unsigned int *p) {
  unsigned int v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void cp_async4(void *smem_dst, const void *gmem_src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_addr(smem_dst)),
               "l"(gmem_src)
               : "memory");
}

__device__ __forceinline__ long long range_start(const StreamParams &p, int cta) {
  if (p.ranges == kRows) return (long long)cta * p.block_rows / p.ctas * p.groups;
  return (long long)(cta / p.row_splits) * p.groups +
         min((cta % p.row_splits) * p.split_groups, p.groups);
}

__device__ __forceinline__ float half_bits_to_float(fp8gemm_dtype dtype, uint32_t bits) {
  if (dtype == FP8GEMM_DTYPE_BF16) return __uint_as_float(bits << 16);
  return __half2float(__ushort_as_half((unsigned short)bits));
}

/* Fused: quantizes the activation of K groups g_lo .. g_lo + x_groups - 1
 * (those the CTA's range reads) into the resident codes (swizzled like a
 * tensor copy would leave them, rows past M and columns past K zero) and
 * scales, with the arithmetic of quantize_group_warp, so the codes and
 * scales are the standalone quantizer's bit for bit. A half warp takes one
 * (row, group): lane l16 loads values 8 l16 .. 8 l16 + 7 in one 16-byte
 * load; kBatch of them go out before any is used (each is an L2 round trip
 * under full memory load). */
template <int MT>
__device__ __forceinline__ void quantize_resident(const StreamParams &p, uint32_t codes,
                                                  uint32_t scales, int g_lo, int tid) {
  constexpr int rows = 8 * MT;
  constexpr int kBatch = 2; /* small code: this runs once, from a cold instruction cache */
  for (int i = tid; i < p.x_groups * rows * 8; i += kConsumerThreads) sts_zero16(codes + 16 * i);
  named_bar(1, kConsumerThreads);
  const int warp = tid / 32, lane = tid % 32, half = lane / 16, l16 = lane % 16;
  const int items = p.M * p.x_groups;
  const size_t elem_row = p.ldx * 2;
#pragma unroll 1
  for (int base = warp * 2 * kBatch; base < items; base += kConsumerWarps * 2 * kBatch) {
    uint4 raw[kBatch];
#pragma unroll
    for (int u = 0; u < kBatch; u++) {
      const int it = base + 2 * u + half;
      const int gi = it / p.M, m = it % p.M, g = g_lo + gi;
      const bool valid = it < items && g < p.groups && 8 * l16 < p.K - g * 128;
      raw[u] = valid ? __ldg(reinterpret_cast<const uint4 *>(
                           static_cast<const uint8_t *>(p.x) + (size_t)m * elem_row +
                           ((size_t)g * 128 + 8 * l16) * 2))
                     : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int u = 0; u < kBatch; u++) {
      const int it = base + 2 * u + half;
      const int gi = it / p.M, m = it % p.M, g = g_lo + gi;
      float v[8];
      const uint32_t words[4] = {raw[u].x, raw[u].y, raw[u].z, raw[u].w};
      float amax = 0.0f;
      int bad = 0;
#pragma unroll
      for (int e = 0; e < 8; e++) {
        v[e] = half_bits_to_float(p.x_dtype, e % 2 ? words[e / 2] >> 16 : words[e / 2] & 0xffffu);
        if (!isfinite(v[e])) bad = 1;
        else amax = fmaxf(amax, fabsf(v[e]));
      }
      /* Over the half warp's 16 lanes (the group's 128 values). */
#pragma unroll
      for (int off = 8; off > 0; off >>= 1) {
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
        bad |= __shfl_xor_sync(0xffffffffu, bad, off);
      }
      const float scale = !bad ? fmaxf(amax, FP8GEMM_SCALE_EPS) / FP8GEMM_E4M3_MAX
                               : __int_as_float(0x7fc00000);
      if (it < items && g < p.groups) {
        const int width = min(128, p.K - g * 128);
        uint32_t lo = 0, hi = 0;
#pragma unroll
        for (int e = 0; e < 8; e++) {
          const uint32_t code = 8 * l16 + e >= width ? 0u
                                : !bad ? e4m3_from_float(__fdiv_rn(v[e], scale))
                                       : (uint32_t)FP8GEMM_E4M3_NAN_CODE;
          if (e < 4) lo |= code << (8 * e);
          else hi |= code << (8 * (e - 4));
        }
        if (8 * l16 < width)
          sts64(codes + gi * rows * 128 + m * 128 + (((l16 / 2) ^ (m & 7)) << 4) + (l16 % 2) * 8,
                lo, hi);
        if (l16 == 0) sts_f32(scales + 4 * (gi * rows + m), scale);
      }
    }
  }
  fence_proxy_async(); /* the codes are read by the tensor cores */
  named_bar(1, kConsumerThreads);
}

/* Counts a piece of cut row b in (release/acquire); 1 if it was the last.
 * The last resets the counter for the next launch. */
__device__ __forceinline__ int arrive_piece(const StreamParams &p, int b) {
  const int last = atomic_add_acq_rel(p.flags + b, 1u) == (unsigned)(p.row_splits - 1);
  if (last) p.flags[b] = 0u;
  return last;
}

/* The last piece of cut row b adds the row's slots in CTA order (the
 * same order whoever is last, so the same bits) and stores y. Every
 * consumer thread takes its own accumulator positions. */
template <int MT>
__device__ __forceinline__ void add_row_and_store(const StreamParams &p, int b, int tid) {
  const int first_cta = b * p.row_splits, pieces = p.row_splits;
  float acc[MT][4];
#pragma unroll
  for (int j = 0; j < MT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
  /* Several slots in flight at once (each load is an L2 round trip). */
  constexpr int kAhead = 32 / MT;
  for (int c0 = 0; c0 < pieces; c0 += kAhead) {
    float4 v[kAhead][MT];
#pragma unroll
    for (int u = 0; u < kAhead; u++) {
      const int c = c0 + u;
      const float4 *piece =
          p.slots + (size_t)(first_cta + min(c, pieces - 1)) * MT * kConsumerThreads + tid;
#pragma unroll
      for (int j = 0; j < MT; j++)
        v[u][j] = c < pieces ? __ldcg(piece + j * kConsumerThreads)
                             : make_float4(0.f, 0.f, 0.f, 0.f);
    }
#pragma unroll
    for (int u = 0; u < kAhead; u++)
#pragma unroll
      for (int j = 0; j < MT; j++) {
        acc[j][0] += v[u][j].x;
        acc[j][1] += v[u][j].y;
        acc[j][2] += v[u][j].z;
        acc[j][3] += v[u][j].w;
      }
  }
  const int lane = tid % 32, r0 = (tid / 32) * 16 + lane / 4, tig = lane % 4;
#pragma unroll
  for (int e = 0; e < 4; e++) {
    const int n = b * 128 + r0 + 8 * (e >> 1);
    if (n >= p.N) continue;
    const float bias = p.bias ? __ldg(p.bias + n) : 0.0f;
#pragma unroll
    for (int j = 0; j < MT; j++) {
      const int m = 8 * j + 2 * tig + (e & 1);
      if (m < p.M) store_element(p.y_dtype, p.y, (size_t)m * p.ldy + n, acc[j][e] + bias);
    }
  }
}

/* Spread hand-off of block row b (cooperative launch: every piece's CTA is
 * resident): each piece's CTA, its slot written, waits until all row_splits
 * pieces have arrived, then adds up its own share of the row's float4 units
 * (unit u = j * 256 + thread, the slot layout) over all pieces in CTA order
 * and stores those outputs. The row's reads and y stores are spread over
 * row_splits SMs instead of one; the order of the sum, and so every bit of
 * y, is the one-adder path's. The last CTA to leave resets both counters. */
template <int MT>
__device__ __forceinline__ void add_share_of_row(const StreamParams &p, int b, int tid) {
  unsigned int *arrived = p.flags + b;
  unsigned int *left = p.flags + FP8GEMM_CUDA_SPLIT_COUNTERS / 2 + b;
  const unsigned int pieces = (unsigned)p.row_splits;
  if (tid == 0) {
    atomic_add_acq_rel(arrived, 1u);
    while (load_acquire(arrived) < pieces) __nanosleep(32);
  }
  named_bar(1, kConsumerThreads);
  const int first_cta = b * p.row_splits, share = blockIdx.x - first_cta;
  constexpr int kUnits = MT * kConsumerThreads;
  const int u_begin = share * kUnits / p.row_splits, u_end = (share + 1) * kUnits / p.row_splits;
  for (int u = u_begin + tid; u < u_end; u += kConsumerThreads) {
    float4 sum = make_float4(0.f, 0.f, 0.f, 0.f);
    const float4 *unit = p.slots + (size_t)first_cta * kUnits + u;
    constexpr int kAhead = 8;
    for (int c0 = 0; c0 < p.row_splits; c0 += kAhead) {
      float4 v[kAhead];
#pragma unroll
      for (int c = 0; c < kAhead; c++)
        v[c] = c0 + c < p.row_splits ? __ldcg(unit + (size_t)(c0 + c) * kUnits)
                                     : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
      for (int c = 0; c < kAhead; c++) {
        sum.x += v[c].x;
        sum.y += v[c].y;
        sum.z += v[c].z;
        sum.w += v[c].w;
      }
    }
    /* The unit's owner thread t held acc[j][e]: m = 8j + 2 (t % 4) + (e & 1),
     * n = 128b + 16 (t / 32) + (t % 32) / 4 + 8 (e >> 1). */
    const int j = u / kConsumerThreads, t = u % kConsumerThreads;
    const float vals[4] = {sum.x, sum.y, sum.z, sum.w};
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int n = b * 128 + 16 * (t / 32) + (t % 32) / 4 + 8 * (e >> 1);
      const int m = 8 * j + 2 * (t % 4) + (e & 1);
      if (n < p.N && m < p.M)
        store_element(p.y_dtype, p.y, (size_t)m * p.ldy + n,
                      vals[e] + (p.bias ? __ldg(p.bias + n) : 0.0f));
    }
  }
  named_bar(1, kConsumerThreads);
  if (tid == 0 && atomic_add_acq_rel(left, 1u) == pieces - 1) {
    *arrived = 0u;
    *left = 0u;
  }
}

/* Partials of the cluster hand-off: [m][128 weight rows] fp32, rows padded
 * to 132 floats (a warp's stores of one accumulator register hit 32
 * different banks), in the ring (idle by then). */
constexpr int kClusterRowFloats = 132;

/* Cluster hand-off of block row b (the launch's clusters are its rows; CTA
 * rank r of a cluster holds piece r): each CTA puts its partial in its own
 * shared memory, the cluster meets, and each CTA adds up its share of the
 * row's (token, 8 outputs) runs over the pieces' shared memory in rank
 * order, the order of the other hand-offs (0 + piece 0 + piece 1 ..), so
 * the same bits. No workspace, no global counter; a cluster's CTAs are
 * resident together by construction, so the meeting cannot wait for a CTA
 * that has no SM (unlike a plain launch beside another stream's). */
template <int MT>
__device__ __forceinline__ void cluster_add_row(const StreamParams &p, int b, int tid,
                                                uint32_t partial, const float (&acc)[MT][4]) {
  const int lane = tid % 32, gid = lane / 4, tig = lane % 4, r0 = (tid / 32) * 16 + gid;
  named_bar(1, kConsumerThreads); /* both warpgroups' wgmmas are done with the ring */
#pragma unroll
  for (int j = 0; j < MT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int m = 8 * j + 2 * tig + (e & 1);
      if (m < p.M) sts_f32(partial + 4 * (m * kClusterRowFloats + r0 + 8 * (e >> 1)), acc[j][e]);
    }
  cluster_sync_all();
  const int pieces = p.row_splits, rank = (int)cluster_ctarank();
  const int units = p.M * 16; /* (m, run of 8 outputs) */
  const int u_end = (rank + 1) * units / pieces;
  for (int u = rank * units / pieces + tid; u < u_end; u += kConsumerThreads) {
    const int m = u / 16, c = u % 16;
    const uint32_t at = partial + 4 * (m * kClusterRowFloats + 8 * c);
    float sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    constexpr int kAhead = 4;
    for (int q0 = 0; q0 < pieces; q0 += kAhead) {
      float4 v[kAhead][2];
#pragma unroll
      for (int q = 0; q < kAhead; q++) {
        const uint32_t remote = cluster_map(at, (uint32_t)min(q0 + q, pieces - 1));
        v[q][0] = ld_cluster_f4(remote);
        v[q][1] = ld_cluster_f4(remote + 16);
      }
#pragma unroll
      for (int q = 0; q < kAhead; q++) {
        if (q0 + q >= pieces) break;
        sum[0] += v[q][0].x; sum[1] += v[q][0].y; sum[2] += v[q][0].z; sum[3] += v[q][0].w;
        sum[4] += v[q][1].x; sum[5] += v[q][1].y; sum[6] += v[q][1].z; sum[7] += v[q][1].w;
      }
    }
    const int n = b * 128 + 8 * c;
    if (n < p.N) store_run8(p.y_dtype, p.y, p.ldy, p.N, p.bias, m, n, sum);
  }
  cluster_sync_all(); /* no CTA leaves while another reads its shared memory */
}

template <int MT, bool kPreshuffled, bool kFused>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_stream_kernel(const __grid_constant__ CUtensorMap map_x,
                       const __grid_constant__ CUtensorMap map_w, const StreamParams p) {
  using R = Ring<MT, kFused>;
  constexpr int kN = 8 * MT;
  extern __shared__ uint8_t smem_raw[];
  uint8_t *smem = reinterpret_cast<uint8_t *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  /* Layout (Ring): p.stages stages, the fused kernel's resident codes and
   * scales (x_groups of each; none otherwise), mbarriers, scale table. */
  uint8_t *x_codes = smem + p.stages * R::stage_bytes;
  float *x_scales = reinterpret_cast<float *>(x_codes + p.x_groups * R::codes_bytes);
  uint64_t *full_bar = reinterpret_cast<uint64_t *>(x_scales + p.x_groups * R::rows);
  uint64_t *empty_bar = full_bar + p.stages;
  float *scale_table = reinterpret_cast<float *>(empty_bar + p.stages);

  const int lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < p.stages; s++) {
      mbar_init(smem_addr(full_bar + s), 1);
      mbar_init(smem_addr(empty_bar + s), kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    fence_proxy_async();
  }
  __syncthreads();

  const long long t_begin = range_start(p, blockIdx.x);
  const long long t_end = range_start(p, blockIdx.x + 1);
  /* The next kernel in the stream may be scheduled as SMs free up; what it
   * reads of this one's output waits for this grid's end (griddep_wait). */
  griddep_launch_dependents();

  if (threadIdx.x < 128) {
    /* Producer warp (the rest of warpgroup 0 only gives up its registers). */
    producer_release_registers();
    if (threadIdx.x >= 32) return;
    if (p.trace && threadIdx.x == 0) p.trace[blockIdx.x * 8 + 1] = global_ns();
    /* The weight is read-only while a handle lives, so the copies of the
     * first ring's worth of weight tiles go out before the wait for the
     * previous kernel in the stream (programmatic dependent launch; a no-op
     * without it); the activation copies of those stages follow the wait. */
    const int early = (int)min((long long)p.stages, t_end - t_begin);
    const uint64_t policy = l2_policy_evict_first();
    auto issue_x = [&](int stage, int g) {
      if (kFused) return; /* the fused kernel's activation is resident */
      tma_load_2d(smem_addr(smem + stage * R::stage_bytes + kTileBytes), &map_x, g * 128, 0,
                  smem_addr(full_bar + stage));
    };
    int stage = 0;
    uint32_t phase = 0;
    int b = (int)(t_begin / p.groups), g = (int)(t_begin % p.groups) - 1;
    for (long long t = t_begin; t < t_end; t++) {
      if (++g == p.groups) {
        g = 0;
        b++;
      }
      const int rows = min(128, p.N - b * 128);
      const int width = min(128, p.K - g * 128);
      const int i = (int)(t - t_begin);
      /* Fused: the rest of the ring waits until the consumers have
       * quantized the activation (barrier 2: this warp and the consumers). */
      if (kFused && i == p.fused_early) named_bar(2, 32 + kConsumerThreads);
      mbar_wait(smem_addr(empty_bar + stage), phase ^ 1);
      uint8_t *stage_w = smem + stage * R::stage_bytes;
      const uint32_t bar = smem_addr(full_bar + stage);
      uint32_t bytes = kFused ? 0 : R::codes_bytes;
      const uint8_t *w_src = p.w + (size_t)b * 128 * p.K + (size_t)g * 128 * rows;
      if (!kPreshuffled) {
        bytes += kTileBytes;
      } else if (width == 128) {
        bytes += rows * 128;
      } else {
        /* The narrow last K tile is not swizzled in memory: written here,
         * then made visible to the tensor cores' (async) reads. */
        copy_narrow_tile(stage_w, w_src, rows, width, lane);
        fence_proxy_async();
      }
      __syncwarp();
      if (lane == 0) {
        /* Armed for both copies: the stage completes when the activation
         * (issued now or after the wait) has landed too. */
        mbar_arrive_expect_tx(bar, bytes);
        if (!kPreshuffled) {
          if (p.evict_first) tma_load_2d_hint(smem_addr(stage_w), &map_w, g * 128, b * 128, bar, policy);
          else tma_load_2d(smem_addr(stage_w), &map_w, g * 128, b * 128, bar);
        } else if (width == 128) {
          if (p.evict_first) bulk_load_hint(smem_addr(stage_w), w_src, rows * 128, bar, policy);
          else bulk_load(smem_addr(stage_w), w_src, rows * 128, bar);
        }
        if (i >= early) issue_x(stage, g);
        if (!kFused && i == early - 1) {
          griddep_wait();
          for (int e = 0; e < early; e++) issue_x(e, (int)((t_begin + e) % p.groups));
        }
      }
      __syncwarp();
      if (++stage == p.stages) {
        stage = 0;
        phase ^= 1;
      }
    }
    if (kFused && t_end - t_begin <= p.fused_early) named_bar(2, 32 + kConsumerThreads);
    return;
  }

  /* Consumer warpgroups. */
  consumer_take_registers();
  griddep_wait(); /* activation scales, workspace and y come after the previous kernel */
  const uint32_t smem_s = smem_addr(smem), table_s = smem_addr(scale_table),
                 xcodes_s = smem_addr(x_codes), xscales_s = smem_addr(x_scales);
  if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 0] = global_ns();
  bool traced_first = false;
  const int tid = threadIdx.x - 128, warp = tid / 32;
  /* Warpgroup tid / 128 owns weight rows 64 (tid / 128) ..; this thread's
   * accumulators (wgmma layout) are rows r0 and r0 + 8, columns (token m)
   * 8j + 2 (lane % 4) + {0, 1}. */
  const int gid = lane / 4, tig = lane % 4;
  const int r0 = warp * 16 + gid;
  const uint32_t a_offset = (tid / 128) * 64 * 128;

  float acc[MT][4];
  /* Copies sw and sx of the range's tiles [chunk * 32, chunk * 32 + 32) into
   * table half chunk % 2 (not committed here). w_scale[b * groups + g] is
   * w_scale[t]: a range's weight scales are contiguous. */
  auto fill_scales = [&](int chunk) {
    float *dst = scale_table + (chunk % 2) * kScaleChunk * R::scale_stride;
    const int per_tile = kFused ? 1 : 1 + p.M;
    const long long first = t_begin + (long long)chunk * kScaleChunk;
    if (first >= t_end) return;
    const int g_first = (int)(first % p.groups);
    for (int i = tid; i < kScaleChunk * per_tile; i += kConsumerThreads) {
      const int tl = i / per_tile, e = i % per_tile;
      const long long tt = first + tl;
      if (tt >= t_end) break;
      const int g = (g_first + tl) % p.groups;
      cp_async4(dst + tl * R::scale_stride + e,
                e == 0 ? p.w_scale + tt
                       : p.x_scale + (size_t)(e - 1) * p.sx_stride_m + (size_t)g * p.sx_stride_g);
    }
  };
  fill_scales(0);
  cp_async_commit();
  /* Fused: the first resident K group (row splits: the range's own run;
   * whole rows: all of them). Quantized while the first tiles are on the
   * way (the ring's copies went out before this). */
  const int g_lo = p.ranges == kRowSplits ? (int)(t_begin % p.groups) : 0;
  if (kFused) {
    quantize_resident<MT>(p, xcodes_s, xscales_s, g_lo, tid);
    asm volatile("bar.arrive 2, %0;" ::"n"(32 + kConsumerThreads) : "memory");
  }

  int stage = 0;
  uint32_t phase = 0;
  long long t = t_begin;
  int pending = -1; /* the row of this range's cut piece (its last segment) */
  while (t < t_end) {
    const int b = (int)(t / p.groups);
    const int g_first = (int)(t % p.groups);
    const long long row_end = (long long)(b + 1) * p.groups;
    const long long seg_end = row_end < t_end ? row_end : t_end;
#pragma unroll
    for (int j = 0; j < MT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;

    /* Two tiles per step where registers allow: their wgmmas go out
     * together and one wait covers both, so the tensor-core latency and the
     * promotion are paid once per 32 KiB. A step never straddles a segment
     * or a scale chunk; a step with one tile issues that tile's wgmmas for
     * both slots (no conditional wgmma issue, which ptxas would serialize)
     * and drops the second result. */
    constexpr int kTiles = MT <= 8 ? 2 : 1;
    for (int g = g_first; t < seg_end;) {
      const int i_tile = (int)(t - t_begin);
      const int slot = i_tile % kScaleChunk;
      const int chunk = i_tile / kScaleChunk;
      if (slot == 0) {
        /* This chunk's table has landed (own copies by the wait, the
         * others' by the barrier); then the next chunk's copies go out,
         * into the half whose last reader has passed this barrier. */
        cp_async_wait<0>();
        named_bar(1, kConsumerThreads);
        if (p.trace && threadIdx.x == 128 && chunk == 0 && !traced_first)
          p.trace[blockIdx.x * 8 + 6] = global_ns();
        fill_scales(chunk + 1);
        cp_async_commit();
      }
      const int count = kTiles == 2 && t + 1 < seg_end && slot + 1 < kScaleChunk ? 2 : 1;
      int stages_of[kTiles];
      uint32_t phases_of[kTiles];
      float sw[kTiles], sx[kTiles][2 * MT];
#pragma unroll
      for (int u = 0; u < kTiles; u++) {
        const int uu = u < count ? u : 0;
        stages_of[u] = stage + uu;
        phases_of[u] = phase;
        if (stages_of[u] >= p.stages) {
          stages_of[u] -= p.stages;
          phases_of[u] ^= 1;
        }
        const uint32_t table = table_s + 4 * ((chunk % 2) * kScaleChunk * R::scale_stride +
                                              (slot + uu) * R::scale_stride);
        sw[u] = lds_f32(table);
        /* Unless fused, sx sits beside sw in the table; fused, in the
         * resident scales of group g + uu. */
        const uint32_t sx_row = kFused ? xscales_s + 4 * (g + uu - g_lo) * R::rows : table + 4;
#pragma unroll
        for (int i = 0; i < 2 * MT; i++) {
          const int m = 8 * (i / 2) + 2 * tig + (i % 2);
          sx[u][i] = m < p.M ? lds_f32(sx_row + 4 * m) : 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kTiles; u++)
        if (u < count) mbar_wait(smem_addr(full_bar + stages_of[u]), phases_of[u]);
      if (p.trace && threadIdx.x == 128 && !traced_first) {
        traced_first = true;
        p.trace[blockIdx.x * 8 + 2] = global_ns();
      }
      float part[kTiles][4 * MT];
      wgmma_fence();
#pragma unroll
      for (int u = 0; u < kTiles; u++) {
        const uint32_t stage_w = smem_s + stages_of[u] * R::stage_bytes;
        const uint32_t x_tile = kFused ? xcodes_s + (g + (u < count ? u : 0) - g_lo) * R::codes_bytes
                                       : stage_w + kTileBytes;
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
          Wgmma<kN>::run(part[u], smem_desc_sw128(stage_w + a_offset + kk * 32),
                         smem_desc_sw128(x_tile + kk * 32), kk);
      }
      wgmma_commit();
      wgmma_wait_all();
      __syncwarp();
      if (lane == 0)
#pragma unroll
        for (int u = 0; u < kTiles; u++)
          if (u < count) mbar_arrive(smem_addr(empty_bar + stages_of[u]));
#pragma unroll
      for (int u = 0; u < kTiles; u++) {
        if (u < count) {
#pragma unroll
          for (int j = 0; j < MT; j++) {
            const float s0 = sw[u] * sx[u][2 * j], s1 = sw[u] * sx[u][2 * j + 1];
            acc[j][0] = fmaf(part[u][4 * j + 0], s0, acc[j][0]);
            acc[j][1] = fmaf(part[u][4 * j + 1], s1, acc[j][1]);
            acc[j][2] = fmaf(part[u][4 * j + 2], s0, acc[j][2]);
            acc[j][3] = fmaf(part[u][4 * j + 3], s1, acc[j][3]);
          }
        }
      }
      stage += count;
      if (stage >= p.stages) {
        stage -= p.stages;
        phase ^= 1;
      }
      t += count;
      g += count;
    }

    if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 3] = global_ns();
    /* acc[j][e]: m = 8j + 2tig + (e & 1), n = 128b + r0 + 8 (e >> 1). */
    if (g_first != 0 || seg_end < row_end) {
      /* One of the row's pieces (row_pieces): every piece goes to its slot,
       * and the last to arrive adds all of them in CTA order and stores y.
       * Nobody waits for another CTA, and the sum's order does not depend
       * on who is last. */
      if (p.skip_fixup) continue; /* timing probe only */
      if (p.cluster_fixup) {
        pending = b; /* every CTA of a clustered launch holds one piece */
        continue;
      }
      /* Slot layout [cta][j][thread]: a warp's store covers 512 contiguous
       * bytes (thread-major [thread][j] made 32 partial lines per store). */
      float4 *slot = p.slots + (size_t)blockIdx.x * MT * kConsumerThreads + tid;
#pragma unroll
      for (int j = 0; j < MT; j++)
        __stcg(slot + j * kConsumerThreads, make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]));
      if (p.spread_fixup) {
        named_bar(1, kConsumerThreads);
        add_share_of_row<MT>(p, b, tid);
        continue;
      }
      pending = b; /* a cut row's piece is its range's last segment */
      continue;
    }
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int n = b * 128 + r0 + 8 * (e >> 1);
      if (n >= p.N) continue;
      const float bias = p.bias ? __ldg(p.bias + n) : 0.0f;
#pragma unroll
      for (int j = 0; j < MT; j++) {
        const int m = 8 * j + 2 * tig + (e & 1);
        if (m < p.M) store_element(p.y_dtype, p.y, (size_t)m * p.ldy + n, acc[j][e] + bias);
      }
    }
  }
  if (pending >= 0 && p.cluster_fixup) {
    if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 5] = global_ns();
    cluster_add_row<MT>(p, pending, tid, smem_s, acc);
    if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 7] = global_ns();
  } else if (pending >= 0) {
    /* Release/acquire through one thread (no fence in every thread): the
     * barrier orders every thread's slot stores before tid 0's release
     * adds, and tid 0's acquire before every thread's loads below. */
    named_bar(1, kConsumerThreads);
    int last = tid == 0 ? arrive_piece(p, pending) : 0;
    /* Same value in every thread; through a shuffle ptxas knows it is
     * uniform and keeps the loops' indices in uniform registers. */
    last = __shfl_sync(0xffffffffu, named_bar_or(1, kConsumerThreads, last), 0);
    if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 5] = global_ns();
    if (last) add_row_and_store<MT>(p, pending, tid);
    if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 7] = global_ns();
  }
  if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 4] = global_ns();
}

typedef void (*stream_kernel_fn)(const CUtensorMap, const CUtensorMap, const StreamParams);

/* The kernel for MT, its ring depth and dynamic shared memory; x_groups:
 * the fused kernel's resident K groups (0 unless fused). */
template <int MT>
stream_kernel_fn pick(bool preshuffled, bool fused, int x_groups, size_t *smem, int *stages) {
  if (fused) {
    if constexpr (MT > 4) {
      return nullptr; /* the fused linear covers M <= 32 */
    } else {
      *stages = Ring<MT, true>::stages_for(x_groups);
      *smem = Ring<MT, true>::smem_bytes(*stages, x_groups);
      return preshuffled ? gemm_stream_kernel<MT, true, true> : gemm_stream_kernel<MT, false, true>;
    }
  }
  *stages = Ring<MT, false>::stages_for(0);
  *smem = Ring<MT, false>::smem_bytes(*stages, 0);
  return preshuffled ? gemm_stream_kernel<MT, true, false> : gemm_stream_kernel<MT, false, false>;
}

int tiles_for(size_t M) {
  int mt = 1;
  while ((size_t)8 * mt < M) mt *= 2;
  return mt;
}

stream_kernel_fn select(int mt, bool preshuffled, bool fused, int x_groups, size_t *smem,
                        int *stages) {
  switch (mt) {
    case 1: return pick<1>(preshuffled, fused, x_groups, smem, stages);
    case 2: return pick<2>(preshuffled, fused, x_groups, smem, stages);
    case 4: return pick<4>(preshuffled, fused, x_groups, smem, stages);
    case 8: return pick<8>(preshuffled, fused, x_groups, smem, stages);
    default: return pick<16>(preshuffled, fused, x_groups, smem, stages);
  }
}

/* How the tiles are cut into the CTAs' ranges:
 *  - kRows (block rows >= SMs): whole block rows, rows * c / P ..;
 *  - kRowSplits (fewer block rows than SMs): each block row cut into
 *    floor(SMs / rows) runs of K groups, one per CTA, every CTA's piece at
 *    its end.
 * Even ranges (equal tile counts, rows cut anywhere) lost on both cards:
 * on the H100 (session 2) by 3-15 us a call; on the H200 (this code's
 * wait-free hand-off, arrivals deferred to the range's end) by 1-4 us, e.g.
 * 24576 x 1536 M = 1 16.3 us against 12.6 (192 whole rows on 132 SMs):
 * CTAs with equal tile counts end as far apart as with uneven ones (traces:
 * last tile 9.5-12.0 us), the memory system, not the count, sets the pace
 * (bench/results/cuda-h200-2026-12-04-decode.md).
 * FP8GEMM_CUDA_STREAM_ALIGN=1/2 forces rows / row splits (benchmarks). */
struct StreamPlan {
  int mode, ctas, row_splits, split_groups, spread, cluster;
};

StreamPlan plan_ranges(const fp8gemm_cuda_state *s, size_t M, size_t N, size_t K) {
  const long long rows = (long long)((N + 127) / 128);
  const int groups = (int)((K + 127) / 128);
  StreamPlan plan;
  const char *env = getenv("FP8GEMM_CUDA_STREAM_ALIGN");
  int m = env && *env ? atoi(env) : -1;
  if (m < kRows || m > kRowSplits) m = rows >= s->sm_count ? kRows : kRowSplits;
  plan.row_splits = 1;
  plan.split_groups = groups;
  long long n;
  if (m == kRows) {
    n = rows < s->sm_count ? rows : s->sm_count;
  } else {
    /* As many K-runs per row as fill the SMs. (On the H100, whole rows won
     * at M <= 16 up to 128 MiB when they kept >= 40% of the SMs busy; on the
     * H200 they lose on large weights: 7168 x 16384 M = 1 40.5 us against
     * 32.0 with two runs a row, bench/results/cuda-h200-2026-12-04-decode.md.) */
    long long want = s->sm_count / rows;
    /* Except small weights (<= 24 MiB) with rows for >= 40% of the SMs, at
     * M <= 16, or at any M when K has at most 8 groups (runs of 4 or fewer):
     * there whole rows win (H200, session 5: 7168 x 2048 M = 1 8.0 us against
     * 8.2, 8192 x 1024 5.7 / 6.6, M = 16 6.4 / 7.1; H100, session 9, M = 64:
     * 8192 x 1024 7.9 against 8.6, 7168 x 256 4.4 / 7.2, but 7168 x 2048
     * 11.6 / 11.0). */
    if (rows * 5 >= (long long)s->sm_count * 2 && (M <= 16 || groups <= 8) &&
        (double)rows * 128.0 * (double)K <= 24.0 * 1024 * 1024)
      want = 1;
    const char *splits = getenv("FP8GEMM_CUDA_STREAM_SPLITS"); /* benchmarks: at most this many */
    if (splits && *splits && atoi(splits) > 0) {
      const long long cap = atoi(splits), most = s->sm_count / rows;
      want = cap < most ? cap : most;
    }
    if (want < 1) want = 1;
    if (want > groups) want = groups;
    plan.split_groups = (int)((groups + want - 1) / want);
    plan.row_splits = (groups + plan.split_groups - 1) / plan.split_groups;
    n = rows * plan.row_splits;
    if (n > s->sm_count) { /* more rows than SMs: whole rows */
      m = kRows;
      plan.row_splits = 1;
      plan.split_groups = groups;
      n = s->sm_count;
    }
  }
  if (n > FP8GEMM_CUDA_SPLIT_COUNTERS / 2) n = FP8GEMM_CUDA_SPLIT_COUNTERS / 2;
  plan.mode = m;
  plan.ctas = (int)n;
  /* Who adds up a cut row: its last piece alone, every piece a share
   * through the workspace, or every piece a share through the cluster's
   * shared memory (FP8GEMM_CUDA_STREAM_FIXUP=last|spread|cluster forces
   * one; benchmarks, tests). Clusters need a row's pieces to fit one
   * cluster (<= 8) and every row's cluster resident at once. */
  const char *fixup = getenv("FP8GEMM_CUDA_STREAM_FIXUP");
  const int cluster_fits = plan.row_splits >= 2 && plan.row_splits <= 8 &&
                           (long long)s->stream_max_clusters[plan.row_splits] * plan.row_splits >=
                               plan.ctas;
  plan.cluster = 0;
  if (fixup && strcmp(fixup, "last") == 0) plan.spread = 0;
  else if (fixup && strcmp(fixup, "spread") == 0) plan.spread = 1;
  else if (fixup && strcmp(fixup, "cluster") == 0) plan.spread = 0, plan.cluster = cluster_fits;
  else if (cluster_fits && plan.row_splits == kClusterPieces &&
           plan.split_groups >= kClusterMinPieceGroups)
    plan.spread = 0, plan.cluster = 1;
  else plan.spread = M >= kSpreadMinM && plan.row_splits * (long long)M > kLastPieceMaxPiecesRows;
  if (plan.row_splits < 2) plan.spread = 0;
  return plan;
}

/* The K groups a fused CTA keeps resident: its run (row splits), or all
 * of them (whole rows). */
int fused_x_groups(const StreamPlan &plan, size_t K) {
  return plan.mode == kRowSplits ? plan.split_groups : (int)((K + 127) / 128);
}

}  // namespace

/* FP8GEMM_CUDA_STREAM_TRACE=1 (a probe; synchronizes): per-CTA times of the
 * last launch relative to the first CTA's start, in us. */
fp8gemm_status print_trace(fp8gemm_cuda_state *s, const StreamParams &p) {
  unsigned long long host[8 * 2048];
  FP8GEMM_CUDA_TRY(cudaMemcpyAsync(host, p.trace, 8 * p.ctas * sizeof(host[0]),
                                   cudaMemcpyDeviceToHost, s->stream),
                   "trace");
  FP8GEMM_CUDA_TRY(cudaStreamSynchronize(s->stream), "trace");
  /* In the order they happen. */
  static const int order[] = {0, 1, 6, 2, 3, 5, 7, 4};
  static const char *names[] = {"consumer start", "producer start", "first data", "last tile",
                                "end", "piece handed off", "first scales", "row summed"};
  fprintf(stderr, "trace N=%d K=%d M=%d ctas=%d pieces=%d hand-off=%s (clusters of 2..8 resident:",
          p.N, p.K, p.M, p.ctas, p.row_splits,
          p.cluster_fixup ? "cluster" : p.spread_fixup ? "spread" : "last");
  for (int P = 2; P <= 8; P++) fprintf(stderr, " %d", s->stream_max_clusters[P]);
  fprintf(stderr, "):");
  fp8gemm_cuda_print_trace_events(host, p.ctas, 8, order, names, 8);
  fprintf(stderr, "\n");
  return FP8GEMM_OK;
}

extern "C" fp8gemm_status fp8gemm_cuda_stream_prepare(fp8gemm_cuda_state *s) {
  static const int mts[] = {1, 2, 4, 8, 16};
  for (int i = 0; i < 5; i++)
    for (int pre = 0; pre < 2; pre++)
      for (int fused = 0; fused < 2; fused++) {
        size_t smem = 0;
        int stages = 0;
        stream_kernel_fn fn = select(mts[i], pre, fused, 0, &smem, &stages);
        if (!fn) continue;
        /* The fused kernel's size depends on the launch (Ring::smem_bytes <= the budget). */
        FP8GEMM_CUDA_TRY(cudaFuncSetAttribute(reinterpret_cast<const void *>(fn),
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              fused ? kSmemBudget : (int)smem),
                         "decode GEMM: shared-memory limit");
      }
  /* Clusters of P decode CTAs (one per SM, whichever instantiation: the
   * registers alone allow one) the device holds at once, for the cluster
   * hand-off; GPCs of 16-18 SMs leave some SMs out for P > 2. */
  size_t smem = 0;
  int stages = 0;
  stream_kernel_fn fn = select(16, true, false, 0, &smem, &stages);
  for (int P = 0; P <= 8; P++) s->stream_max_clusters[P] = 0;
  for (int P = 2; P <= 8; P++)
    FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_max_active_clusters(
        s, reinterpret_cast<const void *>(fn), kThreads, smem, P, &s->stream_max_clusters[P],
        "decode GEMM: clusters per device"));
  return FP8GEMM_OK;
}

extern "C" int fp8gemm_cuda_stream_supported(const fp8gemm_cuda_state *s,
                                             const fp8gemm_cuda_problem *p) {
  if (!s->encode_tiled || p->M == 0) return 0;
  if (p->N > 0x7fffffffu || p->K > 0x7fffffffu || p->K % 16 != 0) return 0;
  if ((uintptr_t)p->w % 16 != 0) return 0;
  if (p->fused) {
    if (p->M > 32) return 0;
    /* Raw x in 16-byte loads: 16-bit elements, 16-byte aligned rows. */
    if (p->x_dtype != FP8GEMM_DTYPE_BF16 && p->x_dtype != FP8GEMM_DTYPE_F16) return 0;
    if ((uintptr_t)p->x % 16 != 0 || (p->ldx * 2) % 16 != 0) return 0;
    /* The resident activation leaves room for a ring deep enough. */
    const StreamPlan plan = plan_ranges(s, p->M, p->N, p->K);
    size_t smem = 0;
    int stages = 0;
    select(tiles_for(p->M), p->w_preshuffled != 0, true, fused_x_groups(plan, p->K), &smem,
           &stages);
    return stages >= kMinFusedStages;
  }
  return (uintptr_t)p->xq % 16 == 0 && p->ldq % 16 == 0;
}

extern "C" size_t fp8gemm_cuda_stream_workspace(const fp8gemm_cuda_state *s, size_t M, size_t N,
                                                size_t K) {
  const size_t rows = M < FP8GEMM_CUDA_SMALL_M_MAX ? M : FP8GEMM_CUDA_SMALL_M_MAX;
  /* One slot per CTA; never more CTAs than tiles or SMs. */
  const long long tiles = (long long)((N + 127) / 128) * (long long)((K + 127) / 128);
  const size_t ctas = (size_t)(tiles < s->sm_count ? tiles : s->sm_count);
  return ctas * kConsumerThreads * tiles_for(rows) * sizeof(float4);
}

extern "C" size_t fp8gemm_cuda_stream_fused_items(const fp8gemm_cuda_state *s, size_t M,
                                                   size_t N, size_t K) {
  return M * (size_t)fused_x_groups(plan_ranges(s, M, N, K), K);
}

/* Row slices or panels (gemm_slice.cu) instead of this kernel's 128-row
 * blocks: FP8GEMM_CUDA_DECODE_SLICES=1 wherever the slice kernel runs, =0
 * never, unset the built-in rule: the panels where they measured fastest
 * (fp8gemm_cuda_panels_preferred, at any M <= 64), else the row slices,
 * from interleaved A/B runs on the H100 (sessions
 * 16 and 18, bench/results/cuda-h100-2026-12-07-s16.md and -s18.md), us,
 * this kernel / slices with stages of several K groups (session 18, two
 * runs):
 *  - M = 33..64 only. At M = 64 slices win on every measured shape in the
 *    plain layout (4096 x 7168 16.5-16.8 / 14.2, 4608 x 7168 18.8-19.0 /
 *    15.0-15.1, 2112 x 7168 14.4-14.7 / 11.8-12.2, 7168 x 2304 12.4-12.6 /
 *    8.8-8.9, 24576 x 1536 19.6-19.8 / 17.6-17.9, 7168 x 16384 46.4-46.9 /
 *    42.1-43.0); at M = 32 they tie (4096 x 7168 14.0-14.3 / 13.9) or lose
 *    (24576 x 1536 15.1 / 17.6); at M <= 16 they lose (4096 x 7168 11.7-12.6
 *    / 13.6-14.7, 2112 x 7168 8.3-9.4 / 12.4-12.7).
 *  - Preshuffled, up to 18 K groups or from 512 KiB of weight a slice: at
 *    M = 64 7168 x 2304 11.8-12.2 / 9.0-9.4, 24576 x 1536 18.9-19.2 /
 *    17.1-17.4, 7168 x 16384 (917 KiB a slice) 46.0-46.9 / 44.0-45.9
 *    (session 19: 46.2 / 44.0), but 4096 x 7168 (224 KiB) 16.4-16.6 /
 *    17.3-17.5, 4608 x 7168 (280 KiB) 17.6 / 19.0, 2112 x 7168 14.2-14.4 /
 *    16.3-16.4. Not from the read pattern (bench/tma_roof.cu reads the
 *    preshuffled tiles as the slices do at 2.9 TB/s, session 19), from the
 *    L2 evict_first hint (off: no faster), or from every CTA reading the
 *    same tile column at once (each CTA starting at its own K step changed
 *    nothing); a fixed cost that long slices amortize.
 *  - Slices of at least M / 4 rows (every CTA reads all of x: M x K codes
 *    against S x K of weight; 2112 x 7168 with 16-row slices was the
 *    smallest measured) and a launch that fills 90% of the SMs. */
constexpr size_t kSliceLongBytes = 512 * 1024;
static bool slices_chosen(const fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *prob) {
  if (prob->fused || !fp8gemm_cuda_slice_supported(s, prob)) return false;
  const char *env = getenv("FP8GEMM_CUDA_DECODE_SLICES");
  if (env && *env == '1') return true;
  if (env && *env == '0') return false;
  if (fp8gemm_cuda_panels_preferred(s, prob)) return true;
  const long long rows = fp8gemm_cuda_slice_rows(s, prob->N);
  const long long ctas = ((long long)prob->N + rows - 1) / rows;
  const size_t groups = (prob->K + 127) / 128;
  const bool long_slices = (size_t)rows * prob->K >= kSliceLongBytes;
  return prob->M > 32 && (size_t)rows * 4 >= prob->M && ctas * 10 >= (long long)s->sm_count * 9 &&
         (!prob->w_preshuffled || groups <= 18 || long_slices);
}

extern "C" fp8gemm_status fp8gemm_cuda_gemm_stream(fp8gemm_cuda_state *s,
                                                   const fp8gemm_cuda_problem *prob,
                                                   void *workspace, size_t workspace_bytes) {
  if (slices_chosen(s, prob)) return fp8gemm_cuda_gemm_slice(s, prob);
  StreamParams p;
  p.w = prob->w;
  p.w_scale = prob->w_scale;
  p.N = (int)prob->N;
  p.K = (int)prob->K;
  p.groups = (int)((prob->K + 127) / 128);
  p.block_rows = (int)((prob->N + 127) / 128);
  p.trace = NULL;
  const char *trace = getenv("FP8GEMM_CUDA_STREAM_TRACE");
  if (trace && *trace == '1') FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_trace_buffer(s, 8 * 2048, &p.trace));
  const char *evict = getenv("FP8GEMM_CUDA_STREAM_EVICT");
  p.evict_first = !(evict && *evict == '0');
  const char *nofix = getenv("FP8GEMM_CUDA_STREAM_NOFIX");
  p.skip_fixup = nofix && *nofix == '1';
  p.sx_stride_m = prob->scale_stride_m;
  p.sx_stride_g = prob->scale_stride_g;
  p.x_dtype = prob->x_dtype;
  p.bias = prob->bias;
  p.y_dtype = prob->y_dtype;
  p.ldy = prob->ldy;
  p.flags = s->split_counters;
  p.slots = static_cast<float4 *>(workspace);
  /* Benchmark knobs, read per call (host only). */
  const char *env = getenv("FP8GEMM_CUDA_STREAM_STAGES");
  const int want_stages = env && *env ? atoi(env) : 0;
  const size_t y_elem = prob->y_dtype == FP8GEMM_DTYPE_F32 ? 4 : 2;
  const size_t need = fp8gemm_cuda_stream_workspace(s, prob->M, prob->N, prob->K);
  if (!workspace || workspace_bytes < need)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "decode GEMM: workspace of %zu bytes, needs %zu", workspace_bytes,
                             need);
  CUtensorMap map_w;
  if (!prob->w_preshuffled)
    FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_encode_2d(s, &map_w, CU_TENSOR_MAP_DATA_TYPE_UINT8,
                                                   prob->w, prob->K, prob->N, prob->K, 128, 128,
                                                   "decode GEMM weight"));
  for (size_t m0 = 0; m0 < prob->M; m0 += FP8GEMM_CUDA_SMALL_M_MAX) {
    const size_t rows = prob->M - m0 < FP8GEMM_CUDA_SMALL_M_MAX ? prob->M - m0
                                                                 : FP8GEMM_CUDA_SMALL_M_MAX;
    const int mt = tiles_for(rows);
    p.M = (int)rows;
    const StreamPlan plan = plan_ranges(s, rows, prob->N, prob->K);
    p.ranges = plan.mode;
    p.ctas = plan.ctas;
    p.row_splits = plan.row_splits;
    p.split_groups = plan.split_groups;
    p.spread_fixup = plan.spread;
    p.cluster_fixup = plan.cluster;
    /* Fused: where a CTA's range is short, half its tiles go out before the
     * activation is quantized and the rest after; else the whole first ring
     * (FP8GEMM_CUDA_FUSED_EARLY=n forces n; benchmarks). */
    const long long range_tiles =
        plan.mode == kRowSplits ? plan.split_groups
                                : (p.block_rows + plan.ctas - 1) / plan.ctas * (long long)p.groups;
    const char *early = getenv("FP8GEMM_CUDA_FUSED_EARLY");
    p.fused_early = early && *early ? atoi(early)
                    : range_tiles <= kFusedEarlyMaxRange ? kFusedEarlyTiles
                                                         : 1 << 30;
    p.y = static_cast<uint8_t *>(prob->y) + m0 * prob->ldy * y_elem;
    CUtensorMap map_x;
    p.x = NULL;
    p.ldx = 0;
    p.x_groups = 0;
    if (prob->fused) {
      /* Quantized in the kernel from x itself (no tensor map). */
      p.x_scale = NULL;
      p.x = static_cast<const uint8_t *>(prob->x) + m0 * prob->ldx * 2;
      p.ldx = prob->ldx;
      p.x_groups = fused_x_groups(plan, prob->K);
      memset(&map_x, 0, sizeof map_x);
    } else {
      p.x_scale = prob->x_scale + m0 * prob->scale_stride_m;
      FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_encode_2d(s, &map_x, CU_TENSOR_MAP_DATA_TYPE_UINT8,
                                                     prob->xq + m0 * prob->ldq, prob->K, rows,
                                                     prob->ldq, 128, 8 * mt, "decode GEMM xq"));
    }
    if (prob->w_preshuffled) map_w = map_x; /* unused: bulk copies */
    size_t smem = 0;
    int stages = 0;
    stream_kernel_fn fn =
        select(mt, prob->w_preshuffled != 0, prob->fused != 0, p.x_groups, &smem, &stages);
    if (!fn || (prob->fused && stages < kMinFusedStages))
      return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                               "decode GEMM: no fused kernel for M=%zu N=%zu K=%zu", rows, prob->N,
                               prob->K);
    p.stages = want_stages > 0 && want_stages < stages ? want_stages : stages;
    /* The cluster hand-off's partials go in the ring. */
    if (p.cluster_fixup && (size_t)p.stages * kTileBytes < (size_t)8 * mt * kClusterRowFloats * 4)
      p.cluster_fixup = 0;
    /* The spread hand-off waits for the row's other pieces: launched
     * cooperatively, all CTAs are resident at once even when a launch on a
     * concurrent stream holds SMs. */
    fp8gemm_cuda_launch launch;
    fp8gemm_cuda_launch_init(&launch, s, (unsigned)p.ctas, kThreads, smem,
                             p.cluster_fixup ? (unsigned)p.row_splits : 1u, p.spread_fixup);
    FP8GEMM_CUDA_TRY(cudaLaunchKernelEx(&launch.config, fn, map_x, map_w, p), "decode GEMM kernel launch");
    FP8GEMM_CUDA_TRY(cudaGetLastError(), "decode GEMM kernel launch");
    if (p.trace) print_trace(s, p);
  }
  return FP8GEMM_OK;
}
