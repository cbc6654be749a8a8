/* Decode GEMM (M <= 128 per launch): every weight byte read once, by
 * tensor-memory-engine copies, the work spread over the SMs in one wave.
 *
 * Work: the weight is cut into 16 KiB tiles, (128-row block row b, 128-wide
 * K group g), numbered t = b * groups + g, and each of P <= SMs resident
 * CTAs takes one contiguous range of them (plan_ranges): whole block rows
 * when there are at least as many rows as SMs (or, at M <= 16, enough rows
 * to keep 40% of them busy), else one run of K groups of one block row per
 * CTA (floor(SMs / rows) runs per row). In the preshuffled layout a range
 * is one contiguous run of memory.
 *
 * A CTA is a producer warp and two consumer warpgroups around a ring of
 * stages in shared memory (as many as fit, up to 10: ~160 KiB in flight per
 * SM). The producer's lane 0 waits for a free stage (empty mbarrier), arms
 * its full mbarrier and issues
 *  - the weight tile: one 1-D bulk copy of rows * 128 contiguous bytes
 *    (preshuffled: the tile is stored in the 128B-swizzled order), or a 2-D
 *    tensor copy with the 128B swizzle (plain); the preshuffled layout's
 *    narrow last K tile is written by the producer warp (zeros past K);
 *  - the activation tile: a 2-D tensor copy of 8*MT rows x 128 codes
 *    (rows past M and columns past K arrive as zeros), or for the fused
 *    linear the raw 16-bit x as two 64-column tensor copies.
 * Consumer warpgroup w multiplies weight rows 64w..64w+63 of the tile by
 * the activation with four wgmma m64n(8*MT)k32 (e4m3, both operands from
 * shared memory, the weight as A), waits, promotes the fp32 partial with
 * sx(m, g) * sw(b, g) and releases the stage. (mma.sync has no fp8 path on
 * Hopper: ptxas expands it into fp8 -> f16 unpacks and f16 mma, and a
 * kernel built on it was bound by the consumer's ~250 instructions per
 * 16 KiB tile at about half the HBM rate.)
 *
 * The fused linear quantizes the activation in the kernel: per tile, warp w
 * quantizes rows w, w + 8, ... of the raw x tile into codes and scales in
 * the stage (the arithmetic of the standalone quantizer, so both paths give
 * the same bits), then the consumer warps meet at a named barrier.
 *
 * Scales: the consumers copy sw and sx of 32 tiles at a time into a
 * double-buffered table in shared memory (cp.async, 4 bytes each), one
 * chunk ahead, and meet at a named barrier per chunk, so no scale load
 * (an L2 round trip under full HBM load) sits on a tile's path.
 *
 * Rows cut between CTAs (row splits), wait-free and deterministic: each
 * piece's CTA writes its fp32 partial (register order, float4 per thread)
 * to its own workspace slot and counts itself in the row's counter; the
 * last to arrive adds the row's pieces in CTA order and stores y, and
 * resets the counter for the next launch. No CTA waits for another, so the
 * kernel needs no co-residency (a concurrent launch may hold SMs), and the
 * sum is the same whichever CTA finishes last. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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
constexpr int kTileBytes = 128 * 128;
constexpr int kMaxStages = 10;
constexpr int kRows = 1, kRowSplits = 2;
constexpr int kSmemBudget = 227 * 1024;
constexpr int kScaleChunk = 32; /* tiles per scale-table refill */

/* One ring stage: the weight tile, the activation codes (8*MT rows of 128,
 * swizzled), and for the fused kernel the raw 16-bit x (two 64-column
 * halves of 8*MT rows of 128 bytes, swizzled). All parts 1 KiB aligned, as
 * the 128B swizzle pattern follows address bits 4-9. Per-stage scales of
 * the fused kernel and the mbarriers follow the ring. */
template <int MT, bool kFused>
struct Ring {
  static constexpr int rows = 8 * MT;
  static constexpr int codes_bytes = rows * 128;
  static constexpr int raw_bytes = kFused ? 2 * rows * 128 : 0;
  static constexpr int stage_bytes = kTileBytes + codes_bytes + raw_bytes;
  static constexpr int tail_per_stage = rows * 4 + 16; /* fused scales + two mbarriers */
  /* Scale table: [2 chunks][kScaleChunk tiles][sw, sx of rows 0..rows-1]. */
  static constexpr int scale_stride = 1 + rows;
  static constexpr int scale_bytes = 2 * kScaleChunk * scale_stride * 4;
  static constexpr int fit = (kSmemBudget - 1024 - scale_bytes) / (stage_bytes + tail_per_stage);
  static constexpr int stages = fit < kMaxStages ? fit : kMaxStages;
  static constexpr size_t smem_bytes =
      1024 + (size_t)stages * (stage_bytes + tail_per_stage) + scale_bytes;
};

struct StreamParams {
  const uint8_t *w;
  const float *w_scale;
  int N, K, groups;
  int ctas;
  const float *x_scale;
  size_t sx_stride_m, sx_stride_g;
  fp8gemm_dtype x_dtype; /* fused: bf16 or f16 */
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
  int skip_fixup;         /* FP8GEMM_CUDA_STREAM_NOFIX=1: wrong results, timing probe */
  unsigned long long *trace; /* FP8GEMM_CUDA_STREAM_TRACE=1: per-CTA timestamps (probe) */
};

/* Shared-memory accesses by 32-bit shared address: the ring is reached
 * through an aligned copy of the dynamic shared-memory pointer, through
 * which the compiler no longer knows the state space (generic loads). */
__device__ __forceinline__ uint2 lds64(uint32_t addr) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(addr));
  return v;
}

__device__ __forceinline__ void sts_u32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
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

__device__ __forceinline__ void cp_async4(void *smem_dst, const void *gmem_src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(smem_addr(smem_dst)),
               "l"(gmem_src)
               : "memory");
}

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
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

/* Fused: warp `warp` quantizes activation rows warp, warp + 8, ... (< M) of
 * the stage's raw tile into swizzled codes and per-row scales. Lane l owns
 * values 4l..4l+3 of the group: the same amax, scale and x / scale as
 * quantize_group_warp, so the codes are the standalone quantizer's. */
template <int MT>
__device__ __forceinline__ void quantize_stage(const StreamParams &p, uint32_t raw,
                                               uint32_t codes, uint32_t scales, int width,
                                               int warp, int lane) {
  constexpr int rows = 8 * MT;
#pragma unroll
  for (int i = 0; i < MT; i++) {
    const int m = warp + 8 * i;
    if (m >= p.M) break;
    const int half = lane / 16, chunk = (lane % 16) / 2;
    const uint2 bits =
        lds64(raw + half * rows * 128 + m * 128 + ((chunk ^ (m & 7)) << 4) + (lane % 2) * 8);
    float v[4];
    v[0] = half_bits_to_float(p.x_dtype, bits.x & 0xffffu);
    v[1] = half_bits_to_float(p.x_dtype, bits.x >> 16);
    v[2] = half_bits_to_float(p.x_dtype, bits.y & 0xffffu);
    v[3] = half_bits_to_float(p.x_dtype, bits.y >> 16);
    float amax = 0.0f;
    bool finite = true;
#pragma unroll
    for (int e = 0; e < 4; e++) {
      if (4 * lane + e >= width) v[e] = 0.0f; /* past K: zeros (the copy filled them) */
      if (!isfinite(v[e])) finite = false;
      else amax = fmaxf(amax, fabsf(v[e]));
    }
    amax = warp_max(amax);
    const bool group_finite = __all_sync(0xffffffffu, finite);
    const float scale = group_finite ? fmaxf(amax, FP8GEMM_SCALE_EPS) / FP8GEMM_E4M3_MAX
                                     : __int_as_float(0x7fc00000);
    uint32_t word = 0;
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const uint32_t code = group_finite ? e4m3_from_float(__fdiv_rn(v[e], scale))
                                         : (uint32_t)FP8GEMM_E4M3_NAN_CODE;
      word |= code << (8 * e);
    }
    sts_u32(codes + m * 128 + (((lane / 4) ^ (m & 7)) << 4) + (lane % 4) * 4, word);
    if (lane == 0) sts_f32(scales + 4 * m, scale);
  }
}

template <int MT, bool kPreshuffled, bool kFused>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_stream_kernel(const __grid_constant__ CUtensorMap map_x,
                       const __grid_constant__ CUtensorMap map_w, const StreamParams p) {
  using R = Ring<MT, kFused>;
  constexpr int kN = 8 * MT;
  extern __shared__ uint8_t smem_raw[];
  uint8_t *smem = reinterpret_cast<uint8_t *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  float *stage_scales = reinterpret_cast<float *>(smem + R::stages * R::stage_bytes); /* fused */
  uint64_t *full_bar = reinterpret_cast<uint64_t *>(stage_scales + R::stages * R::rows);
  uint64_t *empty_bar = full_bar + R::stages;
  float *scale_table = reinterpret_cast<float *>(empty_bar + R::stages);

  const int lane = threadIdx.x % 32;
  if (threadIdx.x == 0) {
    for (int s = 0; s < R::stages; s++) {
      mbar_init(smem_addr(full_bar + s), 1);
      mbar_init(smem_addr(empty_bar + s), kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    fence_proxy_async();
  }
  __syncthreads();

  const long long t_begin = range_start(p, blockIdx.x);
  const long long t_end = range_start(p, blockIdx.x + 1);

  if (threadIdx.x < 128) {
    /* Producer warp (the rest of warpgroup 0 only gives up its registers). */
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (threadIdx.x >= 32) return;
    if (p.trace && threadIdx.x == 0) p.trace[blockIdx.x * 8 + 1] = global_ns();
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
      mbar_wait(smem_addr(empty_bar + stage), phase ^ 1);
      uint8_t *stage_w = smem + stage * R::stage_bytes;
      uint8_t *stage_x = stage_w + kTileBytes + (kFused ? R::codes_bytes : 0);
      const uint32_t bar = smem_addr(full_bar + stage);
      uint32_t bytes = R::rows * 128 * (kFused ? 2 : 1);
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
        mbar_arrive_expect_tx(bar, bytes);
        tma_load_2d(smem_addr(stage_x), &map_x, g * 128, 0, bar);
        if (kFused) tma_load_2d(smem_addr(stage_x + R::rows * 128), &map_x, g * 128 + 64, 0, bar);
        if (!kPreshuffled) {
          tma_load_2d(smem_addr(stage_w), &map_w, g * 128, b * 128, bar);
        } else if (width == 128) {
          bulk_load(smem_addr(stage_w), w_src, rows * 128, bar);
        }
      }
      __syncwarp();
      if (++stage == p.stages) {
        stage = 0;
        phase ^= 1;
      }
    }
    return;
  }

  /* Consumer warpgroups. */
  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  const uint32_t smem_s = smem_addr(smem), table_s = smem_addr(scale_table),
                 scales_s = smem_addr(stage_scales);
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

  int stage = 0;
  uint32_t phase = 0;
  long long t = t_begin;
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
#pragma unroll
        for (int i = 0; i < 2 * MT; i++) {
          const int m = 8 * (i / 2) + 2 * tig + (i % 2);
          sx[u][i] = m < p.M ? lds_f32(table + 4 * (1 + m)) : 0.0f;
        }
      }
#pragma unroll
      for (int u = 0; u < kTiles; u++)
        if (u < count) mbar_wait(smem_addr(full_bar + stages_of[u]), phases_of[u]);
      if (p.trace && threadIdx.x == 128 && !traced_first) {
        traced_first = true;
        p.trace[blockIdx.x * 8 + 2] = global_ns();
      }
      if (kFused) {
#pragma unroll
        for (int u = 0; u < kTiles; u++) {
          if (u < count) {
            const uint32_t codes = smem_s + stages_of[u] * R::stage_bytes + kTileBytes;
            quantize_stage<MT>(p, codes + R::codes_bytes, codes, scales_s + 4 * stages_of[u] * R::rows,
                               min(128, p.K - (g + u) * 128), warp, lane);
          }
        }
        fence_proxy_async(); /* the codes are read by the tensor cores */
        named_bar(1, kConsumerThreads);
#pragma unroll
        for (int u = 0; u < kTiles; u++)
#pragma unroll
          for (int i = 0; i < 2 * MT; i++) {
            const int m = 8 * (i / 2) + 2 * tig + (i % 2);
            sx[u][i] = m < p.M ? lds_f32(scales_s + 4 * (stages_of[u] * R::rows + m)) : 0.0f;
          }
      }
      float part[kTiles][4 * MT];
      wgmma_fence();
#pragma unroll
      for (int u = 0; u < kTiles; u++) {
        const uint32_t stage_w = smem_s + stages_of[u] * R::stage_bytes;
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
          Wgmma<kN>::run(part[u], smem_desc_sw128(stage_w + a_offset + kk * 32),
                         smem_desc_sw128(stage_w + kTileBytes + kk * 32), kk);
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
      /* One of the row's row_splits pieces (CTAs b * row_splits ..): every
       * piece goes to its slot, and the last to arrive adds all of them in
       * CTA order and stores y. Nobody waits for
       * another CTA, and the sum's order does not depend on who is last. */
      if (p.skip_fixup) continue; /* timing probe only */
      /* Slot layout [cta][j][thread]: a warp's store covers 512 contiguous
       * bytes (thread-major [thread][j] made 32 partial lines per store). */
      float4 *slot = p.slots + (size_t)blockIdx.x * MT * kConsumerThreads + tid;
#pragma unroll
      for (int j = 0; j < MT; j++)
        __stcg(slot + j * kConsumerThreads, make_float4(acc[j][0], acc[j][1], acc[j][2], acc[j][3]));
      /* Release/acquire through one thread (no fence in every thread): the
       * barrier orders every thread's slot stores before tid 0's release
       * add, and tid 0's acquire before every thread's loads below. */
      named_bar(1, kConsumerThreads);
      int last = 0;
      if (tid == 0) {
        last = atomic_add_acq_rel(p.flags + b, 1u) == (unsigned)(p.row_splits - 1);
        if (last) p.flags[b] = 0u; /* every piece has arrived: ready for the next launch */
      }
      /* Same value in every thread; through a shuffle ptxas knows it is
       * uniform and keeps the loop's indices in uniform registers. */
      last = __shfl_sync(0xffffffffu, named_bar_or(1, kConsumerThreads, last), 0);
      if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 5] = global_ns();
      if (!last) continue;
      /* The sum reads every slot, this CTA's own too (written above), so
       * no second copy of the accumulators stays live. */
      const int first_cta = b * p.row_splits;
#pragma unroll
      for (int j = 0; j < MT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;
      /* Several slots in flight at once (each load is an L2 round trip). */
      constexpr int kAhead = 32 / MT;
      for (int c0 = 0; c0 < p.row_splits; c0 += kAhead) {
        float4 v[kAhead][MT];
#pragma unroll
        for (int u = 0; u < kAhead; u++) {
          const int c = c0 + u;
          const float4 *piece = p.slots + (size_t)(first_cta + c) * MT * kConsumerThreads + tid;
#pragma unroll
          for (int j = 0; j < MT; j++)
            v[u][j] = c < p.row_splits ? __ldcg(piece + j * kConsumerThreads)
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
      if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 7] = global_ns();
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
  if (p.trace && threadIdx.x == 128) p.trace[blockIdx.x * 8 + 4] = global_ns();
}

typedef void (*stream_kernel_fn)(const CUtensorMap, const CUtensorMap, const StreamParams);

template <int MT>
stream_kernel_fn pick(bool preshuffled, bool fused, size_t *smem, int *stages) {
  if (fused) {
    if constexpr (MT > 4) {
      return nullptr; /* the fused linear covers M <= 32 */
    } else {
      *smem = Ring<MT, true>::smem_bytes;
      *stages = Ring<MT, true>::stages;
      return preshuffled ? gemm_stream_kernel<MT, true, true> : gemm_stream_kernel<MT, false, true>;
    }
  }
  *smem = Ring<MT, false>::smem_bytes;
  *stages = Ring<MT, false>::stages;
  return preshuffled ? gemm_stream_kernel<MT, true, false> : gemm_stream_kernel<MT, false, false>;
}

int tiles_for(size_t M) {
  int mt = 1;
  while ((size_t)8 * mt < M) mt *= 2;
  return mt;
}

stream_kernel_fn select(int mt, bool preshuffled, bool fused, size_t *smem, int *stages) {
  switch (mt) {
    case 1: return pick<1>(preshuffled, fused, smem, stages);
    case 2: return pick<2>(preshuffled, fused, smem, stages);
    case 4: return pick<4>(preshuffled, fused, smem, stages);
    case 8: return pick<8>(preshuffled, fused, smem, stages);
    default: return pick<16>(preshuffled, fused, smem, stages);
  }
}

/* How the tiles are cut into the CTAs' ranges:
 *  - kRows (block rows >= SMs): whole block rows, rows * c / P ..;
 *  - kRowSplits (fewer block rows than SMs): each block row cut into
 *    floor(SMs / rows) runs of K groups, one per CTA, every CTA's piece at
 *    its end.
 * Measured on H100 (bench/results/cuda-h100-2026-11-25-decode.md): stream-K
 * ranges (equal tile counts, rows cut anywhere, so partials handed over in
 * the middle of a CTA's range) cost 3-15 us a call more than these, more
 * than the imbalance of whole rows (e.g. 192 rows on 132 SMs: 16.6 us
 * against 19.6) or of a wave with a few SMs idle; they were removed.
 * FP8GEMM_CUDA_STREAM_ALIGN=1/2 forces rows / row splits (benchmarks). */
void plan_ranges(const fp8gemm_cuda_state *s, size_t M, size_t N, size_t K, int *mode, int *ctas,
                 int *row_splits, int *split_groups) {
  const long long rows = (long long)((N + 127) / 128);
  const int groups = (int)((K + 127) / 128);
  const char *env = getenv("FP8GEMM_CUDA_STREAM_ALIGN");
  int m = env && *env ? atoi(env) : -1;
  if (m < kRows || m > kRowSplits) m = rows >= s->sm_count ? kRows : kRowSplits;
  *row_splits = 1;
  *split_groups = groups;
  long long n;
  if (m == kRows) {
    n = rows < s->sm_count ? rows : s->sm_count;
  } else {
    long long want = s->sm_count / rows;
    /* Whole rows when they already keep >= 40% of the SMs streaming, the
     * weight is at most 128 MiB and M <= 16: measured on H100 (session 3),
     * the hand-off of split rows costs more than the extra streams gain
     * there (7168 x 16384 M=1 41.6 vs 44.4 us, 7168 x 2048 8.2 vs 9.4,
     * 8192 x 1024 6.1 vs 6.9), but not on 8192 x 32768 (268 MB: 96.4 vs
     * 91.5), at M = 64 (7168 x 16384: 66.4 vs 54.0) or with 36 rows
     * (4608 x 7168: 19.1 vs 16.2). */
    if (rows * 5 >= (long long)s->sm_count * 2 && M <= 16 &&
        (double)rows * 128.0 * (double)K <= 128.0 * 1024 * 1024)
      want = 1;
    const char *splits = getenv("FP8GEMM_CUDA_STREAM_SPLITS"); /* benchmarks: at most this many */
    if (splits && *splits && atoi(splits) > 0) {
      const long long forced = atoi(splits), most = s->sm_count / rows;
      want = forced < most ? forced : most;
    }
    if (want < 1) want = 1;
    if (want > groups) want = groups;
    *split_groups = (int)((groups + want - 1) / want);
    *row_splits = (groups + *split_groups - 1) / *split_groups;
    n = rows * *row_splits;
    if (n > s->sm_count) { /* more rows than SMs: whole rows */
      m = kRows;
      *row_splits = 1;
      *split_groups = groups;
      n = s->sm_count;
    }
  }
  if (n > FP8GEMM_CUDA_SPLIT_COUNTERS / 2) n = FP8GEMM_CUDA_SPLIT_COUNTERS / 2;
  *mode = m;
  *ctas = (int)n;
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
  unsigned long long origin = ~0ull;
  for (int c = 0; c < p.ctas; c++)
    if (host[8 * c] && host[8 * c] < origin) origin = host[8 * c];
  /* In the order they happen; min/mean/max over the CTAs that stamped. */
  static const int order[] = {0, 1, 6, 2, 3, 5, 7, 4};
  static const char *names[] = {"consumer start", "producer start", "first data", "last tile",
                                "end", "piece handed off", "first scales", "row summed"};
  fprintf(stderr, "trace N=%d K=%d M=%d ctas=%d:", p.N, p.K, p.M, p.ctas);
  for (int k = 0; k < 8; k++) {
    const int i = order[k];
    double lo = 1e30, hi = 0, sum = 0;
    int n = 0;
    for (int c = 0; c < p.ctas; c++) {
      if (!host[8 * c + i]) continue;
      const double v = ((double)host[8 * c + i] - (double)origin) / 1000.0;
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
      sum += v;
      n++;
    }
    if (n) fprintf(stderr, " | %s %.2f/%.2f/%.2f", names[i], lo, sum / n, hi);
  }
  fprintf(stderr, "\n");
  return FP8GEMM_OK;
}

extern "C" fp8gemm_status fp8gemm_cuda_stream_prepare(void) {
  static const int mts[] = {1, 2, 4, 8, 16};
  for (int i = 0; i < 5; i++)
    for (int pre = 0; pre < 2; pre++)
      for (int fused = 0; fused < 2; fused++) {
        size_t smem = 0;
        int stages = 0;
        stream_kernel_fn fn = select(mts[i], pre, fused, &smem, &stages);
        if (!fn) continue;
        FP8GEMM_CUDA_TRY(cudaFuncSetAttribute(reinterpret_cast<const void *>(fn),
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)smem),
                         "decode GEMM: shared-memory limit");
      }
  return FP8GEMM_OK;
}

extern "C" int fp8gemm_cuda_stream_supported(const fp8gemm_cuda_state *s,
                                             const fp8gemm_cuda_problem *p) {
  if (!s->encode_tiled || p->M == 0) return 0;
  if (p->N > 0x7fffffffu || p->K > 0x7fffffffu || p->K % 16 != 0) return 0;
  if ((uintptr_t)p->w % 16 != 0) return 0;
  if (p->fused) {
    if (p->M > 32) return 0;
    /* Raw x through the tensor engine: 16-bit elements, 16-byte rows. */
    if (p->x_dtype != FP8GEMM_DTYPE_BF16 && p->x_dtype != FP8GEMM_DTYPE_F16) return 0;
    if ((uintptr_t)p->x % 16 != 0 || (p->ldx * 2) % 16 != 0) return 0;
    return 1;
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

extern "C" fp8gemm_status fp8gemm_cuda_gemm_stream(fp8gemm_cuda_state *s,
                                                   const fp8gemm_cuda_problem *prob,
                                                   void *workspace, size_t workspace_bytes) {
  StreamParams p;
  p.w = prob->w;
  p.w_scale = prob->w_scale;
  p.N = (int)prob->N;
  p.K = (int)prob->K;
  p.groups = (int)((prob->K + 127) / 128);
  p.block_rows = (int)((prob->N + 127) / 128);
  p.trace = NULL;
  const char *trace = getenv("FP8GEMM_CUDA_STREAM_TRACE");
  if (trace && *trace == '1') {
    static unsigned long long *buffer = NULL;
    if (!buffer) FP8GEMM_CUDA_TRY(cudaMalloc((void **)&buffer, 8 * 2048 * sizeof(*buffer)), "trace");
    FP8GEMM_CUDA_TRY(cudaMemsetAsync(buffer, 0, 8 * 2048 * sizeof(*buffer), s->stream), "trace");
    p.trace = buffer;
  }
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
    plan_ranges(s, rows, prob->N, prob->K, &p.ranges, &p.ctas, &p.row_splits, &p.split_groups);
    p.y = static_cast<uint8_t *>(prob->y) + m0 * prob->ldy * y_elem;
    CUtensorMap map_x;
    if (prob->fused) {
      p.x_scale = NULL;
      FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_encode_2d(
          s, &map_x, CU_TENSOR_MAP_DATA_TYPE_UINT16,
          static_cast<const uint8_t *>(prob->x) + m0 * prob->ldx * 2, prob->K, rows,
          prob->ldx * 2, 64, 8 * mt, "decode GEMM x"));
    } else {
      p.x_scale = prob->x_scale + m0 * prob->scale_stride_m;
      FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_encode_2d(s, &map_x, CU_TENSOR_MAP_DATA_TYPE_UINT8,
                                                     prob->xq + m0 * prob->ldq, prob->K, rows,
                                                     prob->ldq, 128, 8 * mt, "decode GEMM xq"));
    }
    if (prob->w_preshuffled) map_w = map_x; /* unused: bulk copies */
    size_t smem = 0;
    int stages = 0;
    stream_kernel_fn fn = select(mt, prob->w_preshuffled != 0, prob->fused != 0, &smem, &stages);
    p.stages = want_stages > 0 && want_stages < stages ? want_stages : stages;
    fn<<<(unsigned)p.ctas, kThreads, smem, s->stream>>>(map_x, map_w, p);
    FP8GEMM_CUDA_TRY(cudaGetLastError(), "decode GEMM kernel launch");
    if (p.trace) print_trace(s, p);
  }
  return FP8GEMM_OK;
}
