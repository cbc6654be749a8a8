/* Large-M GEMM on Hopper (sm_90a): tensor-memory-engine copies, FP8 wgmma,
 * warp-specialized, persistent, in thread-block clusters.
 *
 * A CTA computes 128 (M) x BN (N) output tiles, BN = 128, 192 or 256 (224,
 * forced only, for N = 7168 at M of one to three thousand: 32 tiles per
 * 128 rows fill two waves of 132 SMs where 256-wide tiles leave the second
 * one 70% full; not yet measured), one
 * 128-wide K group (one scale group) per pipeline stage. Three warpgroups:
 * warpgroup 0 produces (one warp; registers cut to 40 with setmaxnreg),
 * warpgroups 1 and 2 consume (232 registers), each owning 64 rows.
 *
 * Clusters of two CTAs (optional) compute the same N block for two
 * consecutive M blocks: each loads half of the weight tile and the copy
 * engine writes it into both (multicast), which halves the weight's L2 and
 * DRAM traffic. What each SM takes in stays the same, and that intake
 * (about 47 B per clock measured on an H200) rather than L2 bounds the
 * operand path, so sharing gains a few percent, on the largest K (the
 * weight re-read from DRAM) most (bench/results/cuda-h200-2026-12-04-largem.md).
 * A stage is refilled only when the consumers of both CTAs have released
 * it: consumer warps arrive on the empty barriers of both (a remote
 * mbarrier arrival for the peer), so each counts 8 x 2 arrivals. An M block
 * past the matrix in a cluster's last unit is computed on zero-filled
 * operands and never stored.
 *
 * Producer, per K group: wait for a free stage, arm the stage's full
 * mbarrier with the bytes this CTA will receive, copy its activation slice
 * (2-D tensor copy, 128B swizzle, zeros past M and K) and its weight slice:
 * plain layout, a 2-D tensor copy; preshuffled_sm90, 1-D bulk copies of the
 * 128-byte rows already in swizzled order (src/core/layout_sm90.c), one per
 * block row the slice touches. The preshuffled layout's narrow last K tile
 * (K % 128 != 0) is written by the producer warp with plain loads and
 * swizzled stores into its own CTA, zeros past K.
 *
 * Consumers: per K group, wgmma m64n(P)k32 x4 (e4m3, both operands from
 * shared memory through 128B-swizzle descriptors, built once and advanced
 * by constants) into a partial accumulator of P = 128 or 192 columns (a 256
 * tile takes two 128 pieces in turn), wait, then promotion: acc += partial
 * * sx(m, g) * sw(n/128, g), the weight scale chosen per 8-column group (a
 * 192-wide tile straddles two 128-row weight-scale blocks). The wait before
 * each promotion leaves the tensor cores idle unless the other warpgroup
 * has work queued; a second partial that would hide it does not fit in the
 * registers beside a 64 x 256 accumulator, and the pipelined forms measured
 * (128 x 128 tiles with two partials; 96-column pieces) were not faster
 * (bench/results/cuda-h200-2026-12-04-largem.md). Shortening the path from
 * one batch's completion to the next batch's issue is what moved the time:
 * descriptors built once and advanced by constants, scales loaded a group
 * ahead through pointers advanced by constants (scales staged in shared
 * memory by a producer warp measured slower on short K).
 *
 * Pipelined variants (the default for 256-wide tiles since session 15;
 * FP8GEMM_CUDA_LARGE_CONFIG=128p / 192p / 256p forces one,
 * FP8GEMM_CUDA_LARGE_PIPE=1 / 0 pipelines every built-in width and split
 * / none): batches alternate between two partials that
 * take the registers of one partial otherwise (128: one 128-wide batch per
 * group, two partials of 64; 192: 2 x 96 in 48 each; 256: 4 x 64 in 32
 * each), and each batch is issued before the previous one is promoted, so
 * a warpgroup keeps the tensor cores fed while it promotes; groups run in
 * straight-line bodies of four (two for 128) in which the next group's
 * first batch goes out before the last piece of the one before is
 * promoted; a body drains at its end.
 *
 * Epilogue, bf16 / f16 out, unsplit: + bias, convert, each consumer
 * warpgroup stages 64 rows x 128 or 192 columns at a time in shared memory
 * as 64 x 64 boxes (128B swizzle, conflict-free) and one thread issues
 * tensor stores (the engine clips M and N), which drain while the
 * warpgroup goes on (224-wide tiles: 3 boxes, and the last 32 columns
 * from registers). fp32 out and unaligned y store from registers (pairs of
 * columns, masked).
 *
 * The grid is persistent: as many clusters (of one or two CTAs, one CTA
 * per SM) as can be resident together walk the unit list with a stride of
 * the cluster count,
 * units numbered in groups of 16 M-blocks so the tiles in flight share
 * activation and weight panels in L2. With fewer 128 x 128 tiles than SMs
 * (M of a few hundred or less) K is split so that tiles x splits <= SMs:
 * the CTAs of a tile write fp32 partials in their register layout and the
 * last of them to finish adds them up (in split order: deterministic) and
 * stores the tile; none waits for another.
 *
 * Programmatic dependent launch: each CTA lets the next kernel in the
 * stream launch at its start, and the copy warp issues its first ring of
 * weight copies before waiting for the previous kernel (the weight is
 * read-only while a handle lives); activations, scales, partials and y
 * are touched only after that wait. */
#include <stdint.h>
#include <stdio.h>

#include "cuda_internal.h"
#include "device_common.cuh"
#include "hopper_ptx.cuh"

namespace {

constexpr int kBlockM = 128;
constexpr int kBlockK = 128;
constexpr int kATileBytes = kBlockM * kBlockK; /* 16 KiB */
constexpr int kThreads = kWarpSpecThreads;
constexpr int kConsumerWarps = 8;
constexpr int kGroupM = 16;
constexpr int kSmemLimit = 232448; /* sm_90 opt-in shared memory per block */

template <int kBN, int kCM, bool kPipe = false>
struct Cfg {
  static_assert(kBN == 128 || kBN == 192 || kBN == 224 || kBN == 256, "tile width");
  static_assert(kCM == 1 || kCM == 2, "cluster size");
  static_assert(!kPipe || kCM == 1, "pipelined: no cluster");
  /* Columns per batch of wgmmas: 192 and 128 in one batch, 256 in two;
   * pipelined, batches alternate between two partial accumulators of the
   * registers one partial takes otherwise: 128 (one 128-wide batch per
   * group), 192 (2 x 96), 256 (4 x 64). */
  static constexpr int piece = kPipe ? (kBN == 128 ? 128 : kBN == 192 ? 96 : kBN == 224 ? 56 : 64)
                                     : (kBN == 192 ? 192 : kBN == 224 ? 112 : 128);
  static constexpr int pieces = kBN / piece;
  static constexpr int acc_regs = kBN / 2;
  static constexpr int part_regs = piece / 2;
  static constexpr int b_bytes = kBN * kBlockK;
  static constexpr int stage_bytes = kATileBytes + b_bytes;
  static constexpr int stages = kBN == 128 ? 6 : 4;
  /* Epilogue: per warpgroup, chunks of 64 rows x epi_cols 2-byte outputs
   * staged as 64 x 64 boxes. */
  static constexpr int epi_cols = kBN == 192 ? 192 : 128;
  static constexpr int epi_bytes = 2 * 64 * epi_cols * 2;
  /* Weight-scale rows a tile touches (224: up to three, from column 32, 64 or 96 of a block). */
  static constexpr int scale_blocks = kBN == 128 ? 1 : kBN == 224 ? 3 : 2;
  static constexpr int cluster = kCM;
  static constexpr int b_slice_rows = kBN / kCM;
  static constexpr size_t smem_bytes =
      (size_t)stages * stage_bytes + epi_bytes + 2 * stages * 8;
  static_assert(smem_bytes <= kSmemLimit, "shared memory");
};

struct LargeParams {
  const uint8_t *w; /* preshuffled bytes (bulk-copy path) */
  const float *w_scale;
  const float *x_scale;
  size_t sx_stride_m, sx_stride_g;
  const float *bias;
  void *y;
  size_t ldy;
  fp8gemm_dtype y_dtype;
  int y_paired;
  int M, N, K;
  int m_blocks, n_blocks, k_groups, w_block_rows;
  int m_units;     /* units of CM consecutive M blocks (one cluster's tiles) */
  int group_units; /* M units per rasterization group */
  /* Split-K when there are fewer tiles than SMs (small M, 1x1 clusters):
   * unit u is tile u / splits, groups [s * per_split, (s + 1) * per_split). */
  int splits, groups_per_split;
  float *partial;          /* [tile][split][128 x 128] fp32, register layout */
  int tma_store;           /* 2-byte y written through shared memory by tensor stores */
  unsigned int *counters;  /* one per tile, zero between launches */
};

template <bool kValue>
struct BoolConstant {
  static constexpr bool value = kValue;
};
template <int kValue>
struct IntConstant {
  static constexpr int value = kValue;
};

/* a for even kIndex, b for odd: the partial of a pipelined batch. */
template <int kIndex, int N>
__device__ __forceinline__ float (&pick(float (&a)[N], float (&b)[N]))[N] {
  if constexpr (kIndex % 2 == 0)
    return a;
  else
    return b;
}

/* f(IntConstant<i>()) for i = kBegin .. kEnd - 1, unrolled at compile time
 * (register arrays chosen by i stay registers). */
template <int kBegin, int kEnd, typename F>
__device__ __forceinline__ void static_for(F &&f) {
  if constexpr (kBegin < kEnd) {
    f(IntConstant<kBegin>());
    static_for<kBegin + 1, kEnd>(f);
  }
}

__device__ __forceinline__ uint32_t pack2(fp8gemm_dtype dtype, float a, float b) {
  if (dtype == FP8GEMM_DTYPE_BF16) {
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&v);
  }
  __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t *>(&v);
}

/* The cluster unit `unit` -> its M and N unit, rasterized in groups of
 * group_units M units so consecutive units share weight panels. */
__device__ __forceinline__ void unit_coords(const LargeParams &p, int unit, int *mu, int *nu) {
  const int per_group = p.group_units * p.n_blocks;
  const int group = unit / per_group;
  const int first = group * p.group_units;
  const int rows = min(p.group_units, p.m_units - first);
  const int in_group = unit % per_group;
  *mu = first + in_group % rows;
  *nu = in_group / rows;
}

/* acc[4i + e] += part[4i + e] * scale for the 8-column groups i < kCount of
 * a piece; groups i < kSplit take the first weight-scale block, the rest
 * the second (e < 2: row0, else row1). */
template <int kCount, int kSplit>
__device__ __forceinline__ void promote(float *acc, const float *part, float lo0, float lo1,
                                        float hi0, float hi1) {
#pragma unroll
  for (int i = 0; i < kCount; i++) {
    const float s0 = i < kSplit ? lo0 : hi0, s1 = i < kSplit ? lo1 : hi1;
    acc[4 * i + 0] = fmaf(part[4 * i + 0], s0, acc[4 * i + 0]);
    acc[4 * i + 1] = fmaf(part[4 * i + 1], s0, acc[4 * i + 1]);
    acc[4 * i + 2] = fmaf(part[4 * i + 2], s1, acc[4 * i + 2]);
    acc[4 * i + 3] = fmaf(part[4 * i + 3], s1, acc[4 * i + 3]);
  }
}

/* acc += piece kH (columns kH * kPiece ...) of a tile whose first column
 * lies kPhase columns into a 128-row weight-scale block: the piece's 8-column
 * groups take the scale of the block they fall in (a piece spans at most
 * two blocks; sw[j] is block j counted from the tile's first). */
template <int kPhase, int kPiece, int kH, int kScaleBlocks>
__device__ __forceinline__ void promote_piece(float *acc, const float *part,
                                              const float (&sw)[kScaleBlocks], float sx0, float sx1) {
  constexpr int first = kPhase + kH * kPiece, last = first + kPiece - 1;
  constexpr int lo = first / 128, hi = last / 128;
  static_assert(hi <= lo + 1 && hi < kScaleBlocks, "scale blocks of a piece");
  constexpr int split = lo == hi ? kPiece / 8 : (128 * (lo + 1) - first) / 8;
  const float lo0 = sx0 * sw[lo], lo1 = sx1 * sw[lo], hi0 = sx0 * sw[hi], hi1 = sx1 * sw[hi];
  promote<kPiece / 8, split>(acc + kH * kPiece / 2, part, lo0, lo1, hi0, hi1);
}

template <bool kPreshuffled, int kBN, int kCM, bool kPipe>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_large_kernel(const __grid_constant__ CUtensorMap map_x,
                      const __grid_constant__ CUtensorMap map_w,
                      const __grid_constant__ CUtensorMap map_y, const LargeParams p) {
  using C = Cfg<kBN, kCM, kPipe>;
  /* Only 128-wide tiles of unclustered launches split K (the host's rule). */
  constexpr bool kSplitCapable = kBN == 128 && kCM == 1;
  /* The dynamic shared memory starts 1 KiB-aligned (the 128B swizzle's
   * atom); the trap below would catch a runtime that broke that. */
  extern __shared__ __align__(1024) uint8_t smem[];
  uint8_t *epi_smem = smem + C::stages * C::stage_bytes;
  uint64_t *full_bar = reinterpret_cast<uint64_t *>(epi_smem + C::epi_bytes);
  uint64_t *empty_bar = full_bar + C::stages;

  const int warpgroup = threadIdx.x / 128;
  const int warp_in_group = (threadIdx.x / 32) % 4;
  const int lane = threadIdx.x % 32;
  const uint32_t rank = C::cluster > 1 ? cluster_ctarank() : 0;
  const int rm = (int)rank;

  if (threadIdx.x == 0) {
    if (smem_addr(smem) % 1024 != 0) __trap();
    for (int s = 0; s < C::stages; s++) {
      mbar_init(smem_addr(full_bar + s), 1);
      mbar_init(smem_addr(empty_bar + s), kConsumerWarps * C::cluster);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    fence_proxy_async();
  }
  /* Peers multicast into this CTA's stages and arrive on its barriers. */
  if constexpr (C::cluster > 1)
    cluster_sync_all();
  else
    __syncthreads();

  /* The next kernel in the stream may be scheduled as SMs free up (one CTA
   * fills an SM, so only as this grid's CTAs leave); what it reads of this
   * one's output waits for this grid's end (griddep_wait). */
  griddep_launch_dependents();

  const int units = p.m_units * p.n_blocks * p.splits;
  const int cluster_id = blockIdx.x / C::cluster, clusters = gridDim.x / C::cluster;

  if (warpgroup == 0) {
    producer_release_registers();
    if (warp_in_group == 0) {
      /* The copy warp; every CTA of the cluster shares the weight tile. */
      const uint16_t mask_b = (uint16_t)((1u << kCM) - 1);
      /* The weight is read-only while a handle lives: the first ring's worth
       * of weight copies go out before the wait for the previous kernel in
       * the stream (programmatic dependent launch; a no-op without it), the
       * activation copies of those stages after it. */
      int early = 0, early_mb = 0, early_g = 0;
      if (cluster_id < units) {
        int mu, nu;
        unit_coords(p, cluster_id / p.splits, &mu, &nu);
        early_mb = mu * kCM + rm;
        early_g = (cluster_id % p.splits) * p.groups_per_split;
        early = min(C::stages, min(p.k_groups, early_g + p.groups_per_split) - early_g);
      }
      if (early == 0) griddep_wait();
      int stage = 0, issued = 0;
      uint32_t phase = 0;
      for (int unit = cluster_id; unit < units; unit += clusters) {
        int mu, nu;
        unit_coords(p, unit / p.splits, &mu, &nu);
        const int mb = mu * kCM + rm, nb = nu;
        const int g_begin = (unit % p.splits) * p.groups_per_split;
        const int g_end = min(p.k_groups, g_begin + p.groups_per_split);
        const int col0 = nb * kBN; /* first weight row (output column) of the tile */
        const int b_rows = max(0, min(kBN, p.N - col0));
        for (int g = g_begin; g < g_end; g++) {
          mbar_wait(smem_addr(empty_bar + stage), phase ^ 1);
          uint8_t *stage_a = smem + stage * C::stage_bytes;
          uint8_t *stage_b = stage_a + kATileBytes;
          const uint32_t bar = smem_addr(full_bar + stage);
          const int width = min(kBlockK, p.K - g * kBlockK);
          if (kPreshuffled && width < kBlockK) {
            /* Narrow last K tile: every row of the tile into this CTA, block
             * row by block row (a 192-wide tile starts mid block). */
            for (int t = 0; t < kBN;) {
              const int col = col0 + t, br = col / 128, r = col % 128, n = min(kBN - t, 128 - r);
              const int rows = max(0, min(128, p.N - br * 128));
              const uint8_t *src = p.w + (size_t)br * 128 * p.K + (size_t)g * kBlockK * rows;
              copy_narrow_tile(stage_b + t * 128, src + (size_t)r * width, max(0, rows - r), width,
                               lane, n);
              t += n;
            }
            fence_proxy_async();
            __syncwarp();
          }
          if (lane == 0) {
            uint32_t bytes = kATileBytes;
            if (!kPreshuffled)
              bytes += C::b_bytes; /* tensor copies count their zero fill */
            else if (width == kBlockK)
              bytes += (uint32_t)b_rows * kBlockK;
            mbar_arrive_expect_tx(bar, bytes);
            if (issued >= early) tma_load_2d(smem_addr(stage_a), &map_x, g * kBlockK, mb * kBlockM, bar);
            const int t_begin = rm * C::b_slice_rows, t_end = t_begin + C::b_slice_rows;
            if (!kPreshuffled) {
              const uint32_t b_dst = smem_addr(stage_b + t_begin * 128);
              if constexpr (kCM > 1)
                tma_load_2d_multicast(b_dst, &map_w, g * kBlockK, col0 + t_begin, bar, mask_b);
              else
                tma_load_2d(b_dst, &map_w, g * kBlockK, col0 + t_begin, bar);
            } else if (width == kBlockK) {
              /* The slice's rows, block row by block row (each contiguous). */
              for (int t = t_begin; t < min(t_end, b_rows);) {
                const int col = col0 + t, br = col / 128, r = col % 128;
                const int rows = min(128, p.N - br * 128);
                const int n = min(t_end - t, rows - r);
                const uint8_t *src =
                    p.w + (size_t)br * 128 * p.K + (size_t)g * kBlockK * rows + (size_t)r * 128;
                const uint32_t dst = smem_addr(stage_b + t * 128);
                if constexpr (kCM > 1)
                  bulk_load_multicast(dst, src, (uint32_t)n * 128, bar, mask_b);
                else
                  bulk_load(dst, src, (uint32_t)n * 128, bar);
                t += n;
              }
            }
            if (issued == early - 1) {
              griddep_wait();
              for (int e = 0; e < early; e++)
                tma_load_2d(smem_addr(smem + e * C::stage_bytes), &map_x, (early_g + e) * kBlockK,
                            early_mb * kBlockM, smem_addr(full_bar + e));
            }
          }
          issued++;
          __syncwarp();
          if (++stage == C::stages) {
            stage = 0;
            phase ^= 1;
          }
        }
      }
    }
  } else {
    consumer_take_registers();
    griddep_wait(); /* scales, partials, counters and y come after the previous kernel */
    /* Warp-uniform, so the A descriptors live in uniform registers. */
    const int consumer = __shfl_sync(0xffffffffu, warpgroup, 0) - 1;
    const bool leader = warp_in_group == 0 && lane == 0;
    int stage = 0;
    uint32_t phase = 0;
    float acc[C::acc_regs];
    /* Operand descriptors of stage 0 (this warpgroup's 64 rows of A; B);
     * stage s and k-step kk add (s * stage_bytes + 32 kk) / 16 to the
     * start-address field, which stays below 2^14 (shared memory < 256 KiB).
     * The current stage's descriptors and full barrier are carried from
     * group to group (one add, a reset at the ring's end) rather than
     * rebuilt from the stage index: the path between one batch's
     * completion and the next batch's issue is the kernel's critical path. */
    const uint32_t smem_base = smem_addr(smem);
    const uint64_t desc_a0 = smem_desc_sw128(smem_base + consumer * 64 * kBlockK);
    const uint64_t desc_b0 = smem_desc_sw128(smem_base + kATileBytes);
    const uint32_t bar_full0 = smem_addr(full_bar);
    constexpr uint64_t kStageDesc = C::stage_bytes / 16;
    constexpr uint64_t kStageBack = (uint64_t)0 - (C::stages - 1) * kStageDesc; /* mod 2^64 */
    uint64_t da = desc_a0, db = desc_b0;
    uint32_t bar_full = bar_full0;
    /* This thread's two rows of the tile: lr and lr + 8. */
    const int lr = consumer * 64 + warp_in_group * 16 + lane / 4;

    /* A consumer warp frees a stage in every CTA of its cluster (lane j
     * arrives on CTA rank ^ j), since each of them multicasts into it. */
    auto release = [&](uint32_t empty) {
      if constexpr (C::cluster == 1) {
        if (lane == 0) mbar_arrive(empty);
      } else {
        if (lane < C::cluster) mbar_arrive_cluster(cluster_map(empty, rank ^ (uint32_t)lane));
      }
    };

    for (int unit = cluster_id; unit < units; unit += clusters) {
      int mu, nu;
      const int tile = unit / p.splits, split = unit % p.splits;
      unit_coords(p, tile, &mu, &nu);
      const int mb = mu * kCM + rm, nb = nu;
      const int g_begin = split * p.groups_per_split;
      const int g_end = min(p.k_groups, g_begin + p.groups_per_split);
      const int col0 = nb * kBN;
      const int row0 = mb * kBlockM + lr;
      const int row1 = row0 + 8;
      const bool row0_ok = row0 < p.M, row1_ok = row1 < p.M;
      /* Where in the tile the second weight-scale block begins (192: 128 or 64). */
      const int scale_split = 128 - col0 % 128;
#pragma unroll
      for (int i = 0; i < C::acc_regs; i++) acc[i] = 0.0f;

      /* Scales through pointers clamped into the arrays (rows past M and
       * weight blocks past N read a valid neighbour; those outputs are never
       * stored), advanced one K group at a time, each group's loaded while
       * the one before computes: no 64-bit index arithmetic on the path
       * between two batches of wgmmas. */
      const float *sw_ptr[C::scale_blocks];
#pragma unroll
      for (int j = 0; j < C::scale_blocks; j++)
        sw_ptr[j] = p.w_scale + (size_t)min(col0 / 128 + j, p.w_block_rows - 1) * p.k_groups + g_begin;
      const float *sx0_ptr =
          p.x_scale + (size_t)min(row0, p.M - 1) * p.sx_stride_m + (size_t)g_begin * p.sx_stride_g;
      const float *sx1_ptr =
          p.x_scale + (size_t)min(row1, p.M - 1) * p.sx_stride_m + (size_t)g_begin * p.sx_stride_g;
      const size_t sx_step = p.sx_stride_g;
      float sw_next[C::scale_blocks], sx0_next, sx1_next;
      auto load_scales = [&]() {
#pragma unroll
        for (int j = 0; j < C::scale_blocks; j++) sw_next[j] = __ldg(sw_ptr[j]++);
        sx0_next = __ldg(sx0_ptr);
        sx1_next = __ldg(sx1_ptr);
        sx0_ptr += sx_step;
        sx1_ptr += sx_step;
      };
      if (g_begin < g_end) load_scales();

      /* The K loop, compiled twice: for tiles inside N (every piece, no
       * per-group test) and for the last tile of an N that is not a
       * multiple of the width (a 256 tile skips its second piece past N). */
      float part[C::part_regs];
      auto k_loop = [&](auto whole_tile, auto tile_phase) {
        constexpr bool kWhole = decltype(whole_tile)::value;
        const int pieces_present =
            kWhole || C::pieces == 1 ? C::pieces
                                     : max(1, min(C::pieces, (p.N - col0 + C::piece - 1) / C::piece));
        for (int g = g_begin; g < g_end; g++) {
          float sw[C::scale_blocks];
#pragma unroll
          for (int j = 0; j < C::scale_blocks; j++) sw[j] = sw_next[j];
          const float sx0 = sx0_next, sx1 = sx1_next;
          mbar_wait(bar_full, phase);
          /* This stage's descriptors and empty barrier; the next stage's
           * are computed before the wait below, off the critical path (one
           * add of a constant, or a step back at the ring's end). */
          const uint64_t da_now = da, db_now = db;
          const uint32_t empty_now = bar_full + 8 * C::stages;
          const bool wrap = ++stage == C::stages;
          if (wrap) {
            stage = 0;
            phase ^= 1;
          }
          da += wrap ? kStageBack : kStageDesc;
          db += wrap ? kStageBack : kStageDesc;
          bar_full += wrap ? -8 * (C::stages - 1) : 8;
#pragma unroll
          for (int h = 0; h < C::pieces; h++) {
            if (h < pieces_present) {
              wgmma_fence();
#pragma unroll
              for (int kk = 0; kk < kBlockK / 32; kk++)
                Wgmma<C::piece>::run(part, da_now + 2 * kk, db_now + h * (C::piece * 128 / 16) + 2 * kk,
                                     kk);
              wgmma_commit();
              /* The next group's scales load while this batch runs. */
              if (h == 0 && g + 1 < g_end) load_scales();
              wgmma_wait_all();
              if (h == pieces_present - 1) release(empty_now);
              if constexpr (kBN == 192) {
                /* The second weight-scale block starts at column 128 or 64.
                 * (Written out rather than through promote_piece: the
                 * helper computes the four scale products in each branch,
                 * two FMULs more per group in this default kernel.) */
                const float lo0 = sx0 * sw[0], lo1 = sx1 * sw[0], hi0 = sx0 * sw[1], hi1 = sx1 * sw[1];
                if (scale_split == 128)
                  promote<24, 16>(acc, part, lo0, lo1, hi0, hi1);
                else
                  promote<24, 8>(acc, part, lo0, lo1, hi0, hi1);
              } else {
                /* Piece h of two at most; 224 tiles start 0, 32, 64 or 96
                 * columns into a weight-scale block (tile_phase, compiled
                 * in), 128 and 256 tiles at 0. */
                static_assert(kPipe || C::pieces <= 2, "unpipelined tiles have one or two pieces");
                constexpr int kPhase = decltype(tile_phase)::value;
                if (h == 0)
                  promote_piece<kPhase, C::piece, 0>(acc, part, sw, sx0, sx1);
                else if constexpr (C::pieces == 2)
                  promote_piece<kPhase, C::piece, 1>(acc, part, sw, sx0, sx1);
              }
            }
          }
        }
      };
      /* Pipelined K loop: the batches of a body (piece h of its group u)
       * alternate between two partials, batch u * pieces + h in partial
       * (u * pieces + h) % 2, and each batch is issued before the one
       * before it is promoted (wait_group 1), so a warpgroup keeps a batch
       * queued on the tensor cores while it promotes. Groups run in
       * straight-line bodies of kBodyGroups that drain at their end.
       * (ptxas serializes every wgmma when a batch is in flight across a
       * loop's back edge while other instructions read partials, C7514; a
       * straight-line body with the full-barrier spin inside compiles
       * clean.) Every piece is computed, also past N: those columns are
       * never stored, and a preshuffled stage past N holds stale bytes that
       * reach only them. */
      auto k_loop_pipelined = [&](auto tile_phase) {
        /* tile_phase: how many columns into a weight-scale block the tile
         * starts (192: 0 or 64; 224: 0, 32, 64 or 96), compiled in. */
        constexpr int kPhase = decltype(tile_phase)::value;
        /* 128-wide: bodies of 4 spill three values per body in the consumer. */
        constexpr int kBodyGroups = kBN == 128 ? 2 : 4;
        float part0[C::part_regs], part1[C::part_regs];
        /* The previous group's scales and stage, while its last piece is in flight. */
        float sw_prev[C::scale_blocks], sx0_prev = 0.0f, sx1_prev = 0.0f;
        uint32_t empty_prev = 0;
        auto issue = [&](float(&part)[C::part_regs], uint64_t a, uint64_t b) {
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < kBlockK / 32; kk++) Wgmma<C::piece>::run(part, a + 2 * kk, b + 2 * kk, kk);
          wgmma_commit();
        };
        auto promote_batch = [&](const float *part, auto piece, const float(&sw)[C::scale_blocks],
                                 float sx0, float sx1) {
          promote_piece<kPhase, C::piece, decltype(piece)::value>(acc, part, sw, sx0, sx1);
        };
        /* Group g, the u-th of its body; kLast: drain (wait for every
         * batch and promote the last piece). */
        auto group = [&](int g, auto u, auto last) {
          constexpr int kU = decltype(u)::value;
          constexpr bool kLast = decltype(last)::value;
          constexpr int kBatch0 = kU * C::pieces; /* this group's first batch in the body */
          float sw[C::scale_blocks];
#pragma unroll
          for (int j = 0; j < C::scale_blocks; j++) sw[j] = sw_next[j];
          const float sx0 = sx0_next, sx1 = sx1_next;
          mbar_wait(bar_full, phase);
          const uint64_t da_now = da, db_now = db;
          const uint32_t empty_now = bar_full + 8 * C::stages;
          const bool wrap = ++stage == C::stages;
          if (wrap) {
            stage = 0;
            phase ^= 1;
          }
          da += wrap ? kStageBack : kStageDesc;
          db += wrap ? kStageBack : kStageDesc;
          bar_full += wrap ? -8 * (C::stages - 1) : 8;

          issue(pick<kBatch0>(part0, part1), da_now, db_now);
          if (g + 1 < g_end) load_scales();
          if constexpr (kU > 0) {
            /* The previous group's last piece. */
            wgmma_wait_one();
            fence_registers(pick<kBatch0 - 1>(part0, part1));
            release(empty_prev);
            promote_batch(pick<kBatch0 - 1>(part0, part1), IntConstant<C::pieces - 1>(), sw_prev,
                          sx0_prev, sx1_prev);
          }
          static_for<1, C::pieces>([&](auto piece) {
            constexpr int h = decltype(piece)::value;
            issue(pick<kBatch0 + h>(part0, part1), da_now, db_now + h * (C::piece * 128 / 16));
            wgmma_wait_one();
            fence_registers(pick<kBatch0 + h - 1>(part0, part1));
            promote_batch(pick<kBatch0 + h - 1>(part0, part1), IntConstant<h - 1>(), sw, sx0, sx1);
          });
          if constexpr (kLast) {
            wgmma_wait_all();
            release(empty_now);
            fence_registers(pick<kBatch0 + C::pieces - 1>(part0, part1));
            promote_batch(pick<kBatch0 + C::pieces - 1>(part0, part1), IntConstant<C::pieces - 1>(),
                          sw, sx0, sx1);
          } else {
#pragma unroll
            for (int j = 0; j < C::scale_blocks; j++) sw_prev[j] = sw[j];
            sx0_prev = sx0;
            sx1_prev = sx1;
            empty_prev = empty_now;
          }
        };
        int g = g_begin;
        for (; g + kBodyGroups <= g_end; g += kBodyGroups) {
          static_for<0, kBodyGroups>([&](auto u) {
            group(g + decltype(u)::value, u, BoolConstant<decltype(u)::value == kBodyGroups - 1>());
          });
        }
        for (; g < g_end; g++) group(g, IntConstant<0>(), BoolConstant<true>());
      };
      /* The tile's phase in its weight-scale block, compiled in where the
       * promotion depends on it (192 pipelined, 224). */
      auto with_phase = [&](auto f) {
        if constexpr (kBN == 224) {
          const int phase_cols = col0 % 128;
          if (phase_cols == 0)
            f(IntConstant<0>());
          else if (phase_cols == 32)
            f(IntConstant<32>());
          else if (phase_cols == 64)
            f(IntConstant<64>());
          else
            f(IntConstant<96>());
        } else if constexpr (kBN == 192 && kPipe) {
          if (col0 % 128 == 0)
            f(IntConstant<0>());
          else
            f(IntConstant<64>());
        } else {
          f(IntConstant<0>());
        }
      };
      if constexpr (kPipe) {
        with_phase([&](auto tile_phase) { k_loop_pipelined(tile_phase); });
      } else if (C::pieces == 1 || col0 + kBN <= p.N) {
        with_phase([&](auto tile_phase) { k_loop(BoolConstant<true>(), tile_phase); });
      } else {
        with_phase([&](auto tile_phase) { k_loop(BoolConstant<false>(), tile_phase); });
      }

      /* acc[4i + e]: row row0 (e < 2) or row1, column
       * col0 + 8i + 2 (lane % 4) + (e & 1). */
      constexpr int kGroups = kBN / 8;
      if (kSplitCapable && p.splits > 1) {
        /* Split-K: each CTA of a tile writes its fp32 accumulators as they
         * sit in its registers (float4 i of thread t at i * 256 + t: every
         * warp store is 512 contiguous bytes), then arrives on the tile's
         * counter; the last to arrive adds the partials up in split order
         * (deterministic: the same sum whichever CTA is last), in the same
         * fragment layout, and stores the tile through the epilogue below.
         * No CTA waits for another, so the launch needs no co-residency. */
        constexpr int kQuads = C::acc_regs / 4;
        const int t = threadIdx.x - 128;
        float4 *tile_partials = reinterpret_cast<float4 *>(p.partial) + (size_t)tile * p.splits * kQuads * 256;
#pragma unroll
        for (int i = 0; i < kQuads; i++)
          __stcg(tile_partials + ((size_t)split * kQuads + i) * 256 + t,
                 make_float4(acc[4 * i], acc[4 * i + 1], acc[4 * i + 2], acc[4 * i + 3]));
        __threadfence();
        int last = 0;
        named_bar(1, 256); /* the two consumer warpgroups' partials are out */
        if (threadIdx.x == 128)
          last = atomicAdd(p.counters + tile, 1u) == (unsigned)(p.splits - 1);
        if (!named_bar_or(1, 256, last)) continue;
        if (threadIdx.x == 128) p.counters[tile] = 0; /* every CTA of the tile has arrived */
        __threadfence();
        /* kBatch quads' loads of one split in flight at once: one L2
         * round trip per split and batch, where a load per quad and split
         * in turn cost ~5 us on 64 x 7168 x 2048 (2 splits). */
        constexpr int kBatch = kQuads % 8 == 0 ? 8 : 4; /* 224: 28 quads */
#pragma unroll
        for (int i0 = 0; i0 < kQuads; i0 += kBatch) {
          float4 sum[kBatch];
#pragma unroll
          for (int j = 0; j < kBatch; j++) sum[j] = make_float4(0.f, 0.f, 0.f, 0.f);
          for (int sp = 0; sp < p.splits; sp++) {
            float4 v[kBatch];
            if (sp == split) {
#pragma unroll
              for (int j = 0; j < kBatch; j++)
                v[j] = make_float4(acc[4 * (i0 + j)], acc[4 * (i0 + j) + 1], acc[4 * (i0 + j) + 2],
                                   acc[4 * (i0 + j) + 3]);
            } else {
#pragma unroll
              for (int j = 0; j < kBatch; j++)
                v[j] = __ldcg(tile_partials + ((size_t)sp * kQuads + i0 + j) * 256 + t);
            }
#pragma unroll
            for (int j = 0; j < kBatch; j++) {
              sum[j].x += v[j].x;
              sum[j].y += v[j].y;
              sum[j].z += v[j].z;
              sum[j].w += v[j].w;
            }
          }
#pragma unroll
          for (int j = 0; j < kBatch; j++) {
            acc[4 * (i0 + j)] = sum[j].x;
            acc[4 * (i0 + j) + 1] = sum[j].y;
            acc[4 * (i0 + j) + 2] = sum[j].z;
            acc[4 * (i0 + j) + 3] = sum[j].w;
          }
        }
      }
      /* 8-column group gi of the tile (this thread's two rows, a pair of
       * columns each) straight from registers to y, masked on M and N. */
      auto store_group_direct = [&](int gi) {
        const int col = col0 + 8 * gi + 2 * (lane % 4);
        if (col >= p.N) return;
        const bool second = col + 1 < p.N;
        const float b0 = p.bias ? __ldg(p.bias + col) : 0.0f;
        const float b1 = (p.bias && second) ? __ldg(p.bias + col + 1) : 0.0f;
        const float *a = acc + 4 * gi;
        if (row0_ok)
          store_pair(p.y_dtype, p.y, (size_t)row0 * p.ldy + col, a[0] + b0, a[1] + b1, second,
                     p.y_paired);
        if (row1_ok)
          store_pair(p.y_dtype, p.y, (size_t)row1 * p.ldy + col, a[2] + b0, a[3] + b1, second,
                     p.y_paired);
      };
      if (p.tma_store) {
        /* Each consumer warpgroup stages its 64 rows x epi_cols columns in
         * shared memory as 64 x 64 boxes with the 128B swizzle (16-byte
         * chunk c of row r at c ^ (r % 8): the warp's 32 four-byte stores
         * hit 32 banks) and one thread hands them to the tensor-store
         * engine. The stores run while the warpgroup goes on; the buffer is
         * rewritten only once the engine has read it. A 224-wide tile's
         * last 32 columns fill no box (a 64-wide box would overwrite the
         * next tile): direct stores. */
        constexpr int kChunkGroups = C::epi_cols / 8;
        uint8_t *buf = epi_smem + consumer * (C::epi_bytes / 2);
        const uint32_t buf_addr = smem_addr(buf);
        const int wr = warp_in_group * 16 + lane / 4; /* row0 in the warpgroup's 64 rows */
#pragma unroll
        for (int h = 0; h < (kBN + C::epi_cols - 1) / C::epi_cols; h++) { /* 224: 128 + 96 */
          if (col0 + C::epi_cols * h < p.N) {
            if (leader) bulk_wait_read0();
            named_bar(2 + consumer, 128);
#pragma unroll
            for (int i = 0; i < kChunkGroups; i++) {
              const int gi = kChunkGroups * h + i; /* 8-column group of the tile */
              const int col = col0 + C::epi_cols * h + 8 * i + 2 * (lane % 4);
              if (kBN == 224 && gi >= 24) {
                if (gi < kGroups) store_group_direct(gi);
                continue;
              }
              float b0 = 0.0f, b1 = 0.0f;
              if (p.bias) {
                b0 = col < p.N ? __ldg(p.bias + col) : 0.0f;
                b1 = col + 1 < p.N ? __ldg(p.bias + col + 1) : 0.0f;
              }
              const float *a = acc + 4 * gi;
              const uint32_t off = (i / 8) * 8192 + (((i % 8) ^ (wr % 8)) * 16) + (lane % 4) * 4;
              *reinterpret_cast<uint32_t *>(buf + wr * 128 + off) =
                  pack2(p.y_dtype, a[0] + b0, a[1] + b1);
              *reinterpret_cast<uint32_t *>(buf + (wr + 8) * 128 + off) =
                  pack2(p.y_dtype, a[2] + b0, a[3] + b1);
            }
            fence_proxy_async();
            named_bar(2 + consumer, 128);
            if (leader) {
              const int c0 = col0 + C::epi_cols * h, r0 = mb * kBlockM + consumer * 64;
              if (r0 < p.M) {
#pragma unroll
                for (int b = 0; b < C::epi_cols / 64; b++)
                  if (C::epi_cols * h + 64 * (b + 1) <= kBN && c0 + 64 * b < p.N) tma_store_2d(&map_y, buf_addr + b * 8192, c0 + 64 * b, r0);
              }
              bulk_commit();
            }
          }
        }
        continue;
      }
#pragma unroll
      for (int i = 0; i < kGroups; i++) store_group_direct(i);
    }
    /* Tensor stores read shared memory until they complete. */
    if (p.tma_store && leader) bulk_wait0();
  }
  /* No CTA leaves while a peer may still arrive on its barriers. */
  if constexpr (C::cluster > 1) cluster_sync_all();
}

/* One instantiation: its launch and its one-time set-up. */
template <bool kPre, int kBN, int kCM, bool kPipe>
struct Large {
  using C = Cfg<kBN, kCM, kPipe>;
  static const void *fn() {
    return reinterpret_cast<const void *>(gemm_large_kernel<kPre, kBN, kCM, kPipe>);
  }
  static fp8gemm_status prepare() {
    return fp8gemm_cuda_check(cudaFuncSetAttribute(fn(), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   (int)C::smem_bytes),
                              "large-M kernel: shared-memory limit");
  }
  static fp8gemm_status launch(fp8gemm_cuda_state *s, const CUtensorMap &map_x,
                               const CUtensorMap &map_w, const CUtensorMap &map_y, LargeParams p) {
    const long long units = (long long)p.m_units * p.n_blocks * p.splits;
    const int max_clusters = C::cluster == 1 ? s->sm_count : s->large_max_clusters;
    if (max_clusters < 1)
      return fp8gemm_set_error(FP8GEMM_ERROR_BACKEND,
                               "large-M GEMM: no cluster of %d CTAs fits on the device", C::cluster);
    const unsigned grid = (unsigned)(units < max_clusters ? units : max_clusters) * C::cluster;
    fp8gemm_cuda_launch launch;
    fp8gemm_cuda_launch_init(&launch, s, grid, kThreads, C::smem_bytes, C::cluster, 0);
    FP8GEMM_CUDA_TRY(cudaLaunchKernelEx(&launch.config, gemm_large_kernel<kPre, kBN, kCM, kPipe>,
                                        map_x, map_w, map_y, p),
                     "large-M GEMM kernel launch");
    return fp8gemm_cuda_check(cudaGetLastError(), "large-M GEMM kernel launch");
  }
};

typedef fp8gemm_cuda_large_config LargeConfig;

template <bool kPre>
struct LargeTable {
  typedef fp8gemm_status (*launch_fn)(fp8gemm_cuda_state *, const CUtensorMap &,
                                      const CUtensorMap &, const CUtensorMap &, LargeParams);
  struct Entry {
    LargeConfig config;
    launch_fn launch;
    fp8gemm_status (*prepare)();
    const void *(*fn)();
    int cluster;
    size_t smem;
  };
  template <int kBN, int kCM, bool kPipe = false>
  static constexpr Entry entry() {
    using L = Large<kPre, kBN, kCM, kPipe>;
    return Entry{{kBN, kCM, kPipe}, &L::launch, &L::prepare, &L::fn, kCM, L::C::smem_bytes};
  }
  static const Entry *entries(int *count) {
    static const Entry table[] = {
        entry<128, 1>(),       entry<192, 1>(), entry<192, 2>(), entry<256, 1>(), entry<256, 2>(),
        entry<128, 1, true>(), entry<192, 1, true>(), entry<256, 1, true>(),
        entry<224, 1>(),       entry<224, 1, true>(),
    };
    *count = (int)(sizeof table / sizeof table[0]);
    return table;
  }
  static const Entry *find(const LargeConfig &c) {
    int n;
    const Entry *e = entries(&n);
    for (int i = 0; i < n; i++)
      if (e[i].config.bn == c.bn && e[i].config.cm == c.cm && e[i].config.pipelined == c.pipelined)
        return e + i;
    return nullptr;
  }
};

/* The split-K partials: every split of every 128 x 128 tile, fp32. */
size_t split_partial_bytes(long long tiles, int splits) {
  return (size_t)tiles * (size_t)splits * kBlockM * 128 * sizeof(float);
}

/* Splits K over the units of a launch with fewer tiles than SMs. */
void plan_large_splits(const fp8gemm_cuda_state *s, long long tiles, int k_groups, int *splits,
                       int *per_split) {
  const int sm_count = s->sm_count;
  int want = 1;
  /* units = tiles * splits <= SMs: each unit gets its own resident CTA.
   * Short K runs unsplit: 64 x 7168 x 2048 (16 K groups) took 16.9 us in
   * 2 splits against 11.8 unsplit, where 64 x 4096 x 7168 (56) took 24.4
   * in 4 against 30.5 and 64 x 2112 x 7168 28.7 in 7 against 30.1 (H100,
   * session 8); FP8GEMM_CUDA_SPLIT_MIN_GROUPS moves the bound (tests). */
  if (tiles < sm_count && tiles <= FP8GEMM_CUDA_SPLIT_COUNTERS / 2 &&
      k_groups >= s->split_min_k_groups)
    want = (int)(sm_count / tiles);
  if (want > k_groups) want = k_groups;
  *per_split = (k_groups + want - 1) / want;
  *splits = (k_groups + *per_split - 1) / *per_split;
}

/* The built-in choice for an unsplit launch: the tile width whose tiles
 * take the fewest columns' worth of waves over the SMs (waves x width),
 * ties to the wider tile (fewer bytes per FLOP into each SM), one CTA per
 * cluster. A 128-wide column counts 1.3: per K group and column those
 * tiles ran 1.3x as long as 192 and 256 ones (H100, 4096 x 7168 x 2048 and
 * x 16384, session 8), so 2048 x 7168 x 2048 takes 192 (63.8 us) rather
 * than 128 (71.7). Measured on an H200 (bench/results/cuda-h200-2026-12-04-largem.md)
 * this picks the fastest width, or one within run-to-run noise, on the
 * DeepSeek-V3 shapes at M = 1024 and 4096 and on 8192^3; e.g. N = 2112:
 * 192 (3 waves of 192 columns; 256-wide tiles leave a short last wave)
 * 115 us vs 145. Clusters sharing the weight tile (FP8GEMM_CUDA_LARGE_CONFIG
 * 256/2x1, 192/2x1) measured from 8% faster to 10% slower, so they are
 * not the default. */
LargeConfig default_config(const fp8gemm_cuda_state *s, int m_blocks, int N, int k_groups) {
  /* From K = 4096 a 256-wide column counts 0.95: pipelined (below), its
   * tiles run long K faster per column than 192-wide ones. That turns
   * 8192^3 (16 waves of 256 against 21 of 192), 2048-4096 x 32768 x 8192
   * and 6144 x 7168 x 16384 to 256: 0.5-7.2% faster than 192 in two runs,
   * both layouts, on an H100, but for one cell at -0.4% (8192^3 1004-1039
   * us against 1033-1088);
   * 6144 x 4608 x 7168 moved -2.4 / +3.0% (plain / preshuffled) and
   * 6144 x 1024 x 8192 gained 7-8% over 128 (session 15,
   * bench/results/cuda-h100-2026-12-07-s15.md section 7). Short K keeps
   * the plain count: at K = 512 the 192-wide tiles won (4096 x 32768 x
   * 512: 185 us against 203). FP8GEMM_CUDA_LARGE_PIPE=0 (no tile
   * pipelined) drops the discount with the loop it stands for. */
  const bool long_k_256 = k_groups >= 32 && s->large_pipelined != 0;
  auto cost = [&](int bn) {
    const long long tiles = (long long)m_blocks * ((N + bn - 1) / bn);
    const long long waves = (tiles + s->sm_count - 1) / s->sm_count;
    const long long columns = waves * bn * 100;
    if (bn == 128) return columns * 13 / 10;
    if (bn == 256 && long_k_256) return columns * 95 / 100;
    return columns;
  };
  /* 224-wide tiles stay forced-only: 1024 x 7168 x 16384 ran 222.4 us
   * against 238.9 for 256 on an H200 but 232.6 against 227.1 on an H100
   * (session 8), and they lose at K = 2048 and at M >= 4096. */
  /* 256-wide tiles run the pipelined consumer loop: against the unpipelined
   * one (FP8GEMM_CUDA_LARGE_PIPE=0) it took 0.8-5.5% off every DeepSeek-V3
   * shape that takes them, both layouts, in two calls on an H100 (4096 x
   * 7168 x 16384: 853-871 us against 891-911;
   * bench/results/cuda-h100-2026-12-07-s15.md). 192p lost on 4096 x
   * 2112 x 7168 preshuffled (139 us against 124) and 4096 x 32768 x 512
   * plain (192 against 180); 128-wide launches (split-K, narrow N) were
   * not measured pipelined against not. Both stay unpipelined. */
  LargeConfig c = {256, 1, 1};
  if (cost(192) < cost(c.bn)) c = LargeConfig{192, 1, 0};
  if (cost(128) < cost(c.bn)) c = LargeConfig{128, 1, 0};
  return c;
}

}  // namespace

extern "C" int fp8gemm_cuda_large_supported(const fp8gemm_cuda_problem *p) {
  /* The tensor-memory engine needs 16-byte aligned bases and row strides. */
  if ((uintptr_t)p->xq % 16 != 0 || p->ldq % 16 != 0) return 0;
  if ((uintptr_t)p->w % 16 != 0) return 0;
  if (p->M > 0x7fffffffu || p->N > 0x7fffffffu || p->K > 0x7fffffffu) return 0;
  return 1;
}

extern "C" fp8gemm_status fp8gemm_cuda_large_prepare(fp8gemm_cuda_state *s) {
  int n;
  const LargeTable<true>::Entry *pre = LargeTable<true>::entries(&n);
  const LargeTable<false>::Entry *plain = LargeTable<false>::entries(&n);
  for (int i = 0; i < n; i++) {
    FP8GEMM_RETURN_IF_ERROR(pre[i].prepare());
    FP8GEMM_RETURN_IF_ERROR(plain[i].prepare());
  }
  /* How many clusters of 2 CTAs (one per SM) the device holds at once, for
   * the instantiation with the most shared memory: the size of the
   * persistent grid of clustered launches. */
  s->large_max_clusters = 0;
  for (int i = 0; i < n; i++) {
    if (plain[i].cluster != 2) continue;
    int clusters = 0;
    FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_max_active_clusters(
        s, plain[i].fn(), kThreads, plain[i].smem, 2, &clusters,
        "large-M kernel: clusters per device"));
    if (s->large_max_clusters == 0 || clusters < s->large_max_clusters)
      s->large_max_clusters = clusters;
  }
  return FP8GEMM_OK;
}

extern "C" int fp8gemm_cuda_parse_large_config(const char *text, fp8gemm_cuda_large_config *out) {
  LargeConfig c = {0, 1, 0};
  int used = 0;
  if (sscanf(text, "%d%n", &c.bn, &used) != 1) return 0;
  text += used;
  if (*text == 'p') {
    c.pipelined = 1;
    text++;
  }
  if (*text == '/') {
    if (sscanf(text, "/%dx1%n", &c.cm, &used) != 1) return 0;
    text += used;
  }
  if (*text != '\0' || !LargeTable<false>::find(c)) return 0;
  *out = c;
  return 1;
}

extern "C" void fp8gemm_cuda_large_config_names(char *buf, size_t size) {
  int n;
  const LargeTable<false>::Entry *e = LargeTable<false>::entries(&n);
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && used < size; i++) {
    const LargeConfig &c = e[i].config;
    char cluster[8] = "";
    if (c.cm > 1) snprintf(cluster, sizeof cluster, "/%dx1", c.cm);
    const int w = snprintf(buf + used, size - used, "%s%d%s%s", i ? ", " : "", c.bn,
                           c.pipelined ? "p" : "", cluster);
    if (w < 0) break;
    used += (size_t)w;
  }
}

extern "C" size_t fp8gemm_cuda_large_workspace(const fp8gemm_cuda_state *s, size_t M, size_t N,
                                               size_t K) {
  const long long tiles = (long long)((M + kBlockM - 1) / kBlockM) * (long long)((N + 127) / 128);
  int splits, per_split;
  plan_large_splits(s, tiles, (int)((K + kBlockK - 1) / kBlockK), &splits, &per_split);
  return splits > 1 ? split_partial_bytes(tiles, splits) : 0;
}

extern "C" fp8gemm_status fp8gemm_cuda_gemm_large(fp8gemm_cuda_state *s,
                                                  const fp8gemm_cuda_problem *prob,
                                                  void *workspace, size_t workspace_bytes) {
  if (!s->encode_tiled)
    return fp8gemm_set_error(FP8GEMM_ERROR_BACKEND,
                             "large-M GEMM: cuTensorMapEncodeTiled is not available from the driver");
  LargeParams p;
  p.w = prob->w;
  p.w_scale = prob->w_scale;
  p.x_scale = prob->x_scale;
  p.sx_stride_m = prob->scale_stride_m;
  p.sx_stride_g = prob->scale_stride_g;
  p.bias = prob->bias;
  p.y = prob->y;
  p.ldy = prob->ldy;
  p.y_dtype = prob->y_dtype;
  const size_t y_elem = prob->y_dtype == FP8GEMM_DTYPE_F32 ? 4 : 2;
  p.y_paired = ((uintptr_t)prob->y % (2 * y_elem) == 0) && prob->ldy % 2 == 0;
  p.M = (int)prob->M;
  p.N = (int)prob->N;
  p.K = (int)prob->K;
  p.m_blocks = (int)((prob->M + kBlockM - 1) / kBlockM);
  p.k_groups = (int)((prob->K + kBlockK - 1) / kBlockK);
  p.w_block_rows = (int)((prob->N + 127) / 128);
  p.splits = 1;
  p.groups_per_split = p.k_groups;
  p.partial = static_cast<float *>(workspace);
  p.counters = s->split_counters;

  /* FP8GEMM_CUDA_LARGE_CONFIG (benchmarks, tests) forces one configuration,
   * unsplit; else fewer 128 x 128 tiles than SMs split K over 128-wide
   * tiles, one CTA each. */
  LargeConfig config = default_config(s, p.m_blocks, p.N, p.k_groups);
  const long long narrow_tiles = (long long)p.m_blocks * p.w_block_rows;
  if (s->large_config.bn != 0) {
    config = s->large_config;
  } else if (narrow_tiles < s->sm_count) {
    config = LargeConfig{128, 1, 0};
    plan_large_splits(s, narrow_tiles, p.k_groups, &p.splits, &p.groups_per_split);
    if (p.splits > 1 &&
        (!workspace || workspace_bytes < split_partial_bytes(narrow_tiles, p.splits))) {
      p.splits = 1; /* no room for partials: unsplit, same result */
      p.groups_per_split = p.k_groups;
    }
  }

  /* FP8GEMM_CUDA_LARGE_PIPE=1 / 0: the same widths and splits, every one
   * pipelined / none. */
  if (s->large_config.bn == 0 && s->large_pipelined >= 0 && config.cm == 1)
    config.pipelined = s->large_pipelined;
  const int bn = config.bn;
  p.n_blocks = (p.N + bn - 1) / bn;
  p.m_units = (p.m_blocks + config.cm - 1) / config.cm;
  const int group_m = s->large_group_m > 0 ? s->large_group_m : kGroupM;
  p.group_units = group_m / config.cm > 0 ? group_m / config.cm : 1;
  if ((long long)p.m_units * p.n_blocks * p.splits > 0x7fffffffLL)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "large-M GEMM: %d x %d tiles",
                             p.m_blocks, p.n_blocks);

  CUtensorMap map_x, map_w, map_y;
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_encode_2d(s, &map_x, CU_TENSOR_MAP_DATA_TYPE_UINT8,
                                                 prob->xq, prob->K, prob->M, prob->ldq, kBlockK,
                                                 kBlockM, "large-M GEMM xq"));
  if (prob->w_preshuffled)
    map_w = map_x; /* unused: the weight comes by bulk copies */
  else
    FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_encode_2d(s, &map_w, CU_TENSOR_MAP_DATA_TYPE_UINT8, prob->w,
                                                   prob->K, prob->N, prob->K, kBlockK,
                                                   (unsigned)(bn / config.cm), "large-M GEMM weight"));
  /* 2-byte outputs go out through tensor stores (split launches too: the
   * last CTA of a tile stores it; the engine needs a 16-byte aligned base
   * and row pitch). */
  p.tma_store = y_elem == 2 && (uintptr_t)prob->y % 16 == 0 &&
                (prob->ldy * 2) % 16 == 0 && !(s->large_variant & 1);
  map_y = map_x;
  if (p.tma_store) {
    const cuuint64_t dims[2] = {(cuuint64_t)prob->N, (cuuint64_t)prob->M};
    const cuuint64_t strides[1] = {(cuuint64_t)(prob->ldy * 2)};
    const cuuint32_t box[2] = {64, 64};
    const cuuint32_t element_strides[2] = {1, 1};
    const CUresult r = s->encode_tiled(&map_y, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, prob->y, dims,
                                       strides, box, element_strides,
                                       CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                       CU_TENSOR_MAP_L2_PROMOTION_NONE,
                                       CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) p.tma_store = 0; /* the direct stores serve any y */
  }
  if (prob->w_preshuffled) {
    const LargeTable<true>::Entry *e = LargeTable<true>::find(config);
    if (!e)
      return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                               "large-M GEMM: no kernel built for tile %d%s, cluster %d",
                               config.bn, config.pipelined ? "p" : "", config.cm);
    return e->launch(s, map_x, map_w, map_y, p);
  }
  const LargeTable<false>::Entry *e = LargeTable<false>::find(config);
  if (!e)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "large-M GEMM: no kernel built for tile %d%s, cluster %d", config.bn,
                             config.pipelined ? "p" : "", config.cm);
  return e->launch(s, map_x, map_w, map_y, p);
}
