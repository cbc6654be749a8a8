/* Large-M GEMM on Hopper (sm_90a): tensor-memory-engine copies, FP8 wgmma,
 * warp-specialized and persistent.
 *
 * Tiles of 128 (M) x 128 or 256 (N) x 128 (K, one scale group). A CTA has
 * three warpgroups: warpgroup 0 produces (one thread issues the copies, its
 * registers are cut to 40 with setmaxnreg), warpgroups 1 and 2 consume
 * (registers raised to 232), each owning 64 rows of the tile.
 *
 * Producer: per K group it waits for a free stage (empty mbarrier), arms the
 * stage's full mbarrier with the byte count, and copies
 *  - the activation tile with a 2-D tensor copy (128B swizzle, rows past M
 *    and columns past K arrive as zeros);
 *  - the weight tile: plain layout, a 2-D tensor copy of the same shape;
 *    preshuffled_sm90, one 1-D bulk copy of R*128 contiguous bytes per
 *    128-row block row, already in the swizzled order (see
 *    src/core/layout_sm90.c). The narrow last K tile of the preshuffled
 *    layout (K % 128 != 0) is written by the producer warp with plain loads
 *    and swizzled stores, zero-filled past K.
 * Consumers: wait for the stage; per 128-column half of the tile, issue
 * four wgmma m64n128k32 (e4m3 x e4m3 -> f32, both operands from shared
 * memory through 128B-swizzle descriptors) into a per-group accumulator,
 * wait, then promote: acc += partial * sx(m, g) * sw(n/128, g); free the
 * stage after the last half. The scales of group g + 1 are loaded from
 * global memory while group g computes. Epilogue (bf16 / f16 out, unsplit):
 * + bias, convert, each consumer warpgroup stages 64 x 128 outputs in shared
 * memory (128B swizzle, conflict-free) and one thread issues tensor stores
 * (the engine clips M and N), which drain while the warpgroup goes on with
 * the next half or tile. Ncu on 4096 x 7168 x 2048 had the old epilogue
 * (stores straight from registers, ~1600 instructions a warp per tile, half
 * of each 32-byte sector used) at 30% of the warps' samples with the tensor
 * cores idle. fp32 out, split-K and unaligned y keep the direct stores
 * (pairs of adjacent columns, masked on M and N).
 *
 * The grid is one CTA per SM; CTAs walk the tile list with a stride of the
 * grid size, and tiles are numbered in groups of 16 M-blocks so the tiles in
 * flight at once share activation and weight panels in L2. When there are
 * fewer 128 x 128 tiles than SMs (M of a few hundred or less), K is split
 * so that tiles x splits <= SMs: every unit then has its own CTA, all
 * resident at once (launched cooperatively),
 * the CTAs of a tile write fp32 partials, wait for each other on a counter,
 * and each adds up (in split order: deterministic) its own slice of rows. */
#include <stdint.h>

#include "cuda_internal.h"
#include "device_common.cuh"
#include "hopper_ptx.cuh"

namespace {

constexpr int kBlockM = 128;
constexpr int kBlockK = 128;
constexpr int kTileBytes = kBlockM * kBlockK; /* 16 KiB: A, and each 128-row half of B */
constexpr int kThreads = 384;
constexpr int kConsumerWarps = 8;
constexpr int kGroupM = 16;

/* The tile is 128 x kBN (kBN = 128 or 256). A 128 x 256 tile halves the
 * activation bytes each FLOP pulls from L2 (the limit of 128 x 128 tiles on
 * H100); its two 128-column halves are computed one after the other into
 * the same 64 partial registers and promoted separately (each half is one
 * weight-scale block), so a consumer thread holds 128 + 64 accumulators. */
template <int kBN>
struct Tile {
  static constexpr int halves = kBN / 128;
  static constexpr int stage_bytes = kTileBytes * (1 + halves);
  static constexpr int stages = kBN == 128 ? 6 : 4;
  /* Epilogue staging: per consumer warpgroup 64 rows x 128 columns of a
   * 2-byte output (two 64 x 64 boxes of 128-byte rows, 128B swizzle). */
  static constexpr int epi_bytes = 2 * 2 * 64 * 64 * 2;
  static constexpr size_t smem_bytes =
      (size_t)stages * stage_bytes + epi_bytes + 1024 /* alignment */ + 256;
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
  int m_blocks, n_blocks, k_groups;
  int group_m; /* M-blocks per rasterization group */
  /* Split-K when there are fewer tiles than SMs (small M): unit u is tile
   * u / splits, groups [s * per_split, (s + 1) * per_split) of it. */
  int splits, groups_per_split;
  float *partial;          /* [splits][M][N] fp32 */
  int tma_store;           /* 2-byte y written through shared memory by tensor stores */
  unsigned int *counters;  /* one per tile, zero between launches */
};

__device__ __forceinline__ uint32_t pack2(fp8gemm_dtype dtype, float a, float b) {
  if (dtype == FP8GEMM_DTYPE_BF16) {
    __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
    return *reinterpret_cast<uint32_t *>(&v);
  }
  __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t *>(&v);
}

/* d (+)= A[64x32] * B[128x32]^T; accumulate = 0 overwrites d (the first
 * k-step of a group), which keeps ordinary instructions from defining the
 * accumulators. */
__device__ __forceinline__ void wgmma_m64n128k32(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                                 int accumulate) {
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]),
        "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]),
        "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]),
        "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),
        "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]),
        "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]),
        "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
}

__device__ __forceinline__ void tile_coords(const LargeParams &p, int tile, int *mb, int *nb) {
  const int per_group = p.group_m * p.n_blocks;
  const int group = tile / per_group;
  const int first_m = group * p.group_m;
  const int group_rows = min(p.group_m, p.m_blocks - first_m);
  const int in_group = tile % per_group;
  *mb = first_m + in_group % group_rows;
  *nb = in_group / group_rows;
}


template <bool kPreshuffled, int kBN>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_large_kernel(const __grid_constant__ CUtensorMap map_x,
                      const __grid_constant__ CUtensorMap map_w,
                      const __grid_constant__ CUtensorMap map_y, const LargeParams p) {
  using T = Tile<kBN>;
  extern __shared__ uint8_t smem_raw[];
  uint8_t *smem = reinterpret_cast<uint8_t *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  uint8_t *epi_smem = smem + T::stages * T::stage_bytes;
  uint64_t *full_bar = reinterpret_cast<uint64_t *>(epi_smem + T::epi_bytes);
  uint64_t *empty_bar = full_bar + T::stages;

  const int warpgroup = threadIdx.x / 128;
  const int warp_in_group = (threadIdx.x / 32) % 4;
  const int lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < T::stages; s++) {
      mbar_init(smem_addr(full_bar + s), 1);
      mbar_init(smem_addr(empty_bar + s), kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    fence_proxy_async();
  }
  __syncthreads();

  const int units = p.m_blocks * p.n_blocks * p.splits;

  if (warpgroup == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (warp_in_group != 0) return;
    int stage = 0;
    uint32_t phase = 0;
    for (int unit = blockIdx.x; unit < units; unit += gridDim.x) {
      int mb, nb;
      tile_coords(p, unit / p.splits, &mb, &nb);
      const int g_begin = (unit % p.splits) * p.groups_per_split;
      const int g_end = min(p.k_groups, g_begin + p.groups_per_split);
      for (int g = g_begin; g < g_end; g++) {
        mbar_wait(smem_addr(empty_bar + stage), phase ^ 1);
        uint8_t *stage_a = smem + stage * T::stage_bytes;
        uint8_t *stage_b = stage_a + kTileBytes;
        const uint32_t bar = smem_addr(full_bar + stage);
        const int width = min(kBlockK, p.K - g * kBlockK);
        if (kPreshuffled) {
          /* One bulk copy per 128-row block row of the weight present. */
          uint32_t bytes = kTileBytes;
          for (int h = 0; h < T::halves; h++) {
            const int block_row = nb * T::halves + h;
            const int rows = min(128, p.N - block_row * 128);
            if (rows > 0 && width == kBlockK) bytes += rows * kBlockK;
          }
          if (width < kBlockK) {
            for (int h = 0; h < T::halves; h++) {
              const int block_row = nb * T::halves + h;
              const int rows = max(0, min(128, p.N - block_row * 128));
              const uint8_t *tile_src =
                  p.w + (size_t)block_row * 128 * p.K + (size_t)g * kBlockK * rows;
              copy_narrow_tile(stage_b + h * kTileBytes, tile_src, rows, width, lane);
            }
            fence_proxy_async();
            __syncwarp();
          }
          if (lane == 0) {
            mbar_arrive_expect_tx(bar, bytes);
            tma_load_2d(smem_addr(stage_a), &map_x, g * kBlockK, mb * kBlockM, bar);
            if (width == kBlockK) {
              for (int h = 0; h < T::halves; h++) {
                const int block_row = nb * T::halves + h;
                const int rows = min(128, p.N - block_row * 128);
                if (rows > 0)
                  bulk_load(smem_addr(stage_b + h * kTileBytes),
                            p.w + (size_t)block_row * 128 * p.K + (size_t)g * kBlockK * rows,
                            rows * kBlockK, bar);
              }
            }
          }
        } else if (lane == 0) {
          mbar_arrive_expect_tx(bar, T::stage_bytes);
          tma_load_2d(smem_addr(stage_a), &map_x, g * kBlockK, mb * kBlockM, bar);
          tma_load_2d(smem_addr(stage_b), &map_w, g * kBlockK, nb * kBN, bar);
        }
        __syncwarp();
        if (++stage == T::stages) {
          stage = 0;
          phase ^= 1;
        }
      }
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
  const int consumer = warpgroup - 1;
  int stage = 0;
  uint32_t phase = 0;
  float acc[64 * T::halves];
  float part[64];
  for (int unit = blockIdx.x; unit < units; unit += gridDim.x) {
    int mb, nb;
    const int tile = unit / p.splits, split = unit % p.splits;
    tile_coords(p, tile, &mb, &nb);
    const int g_begin = split * p.groups_per_split;
    const int g_end = min(p.k_groups, g_begin + p.groups_per_split);
    const int row0 = mb * kBlockM + consumer * 64 + warp_in_group * 16 + lane / 4;
    const int row1 = row0 + 8;
    const bool row0_ok = row0 < p.M, row1_ok = row1 < p.M;
    /* Halves past N (the last tile of N = 2112 with 256-wide tiles) are skipped. */
    const int halves_present = min(T::halves, (p.N - nb * kBN + 127) / 128);
#pragma unroll
    for (int i = 0; i < 64 * T::halves; i++) acc[i] = 0.0f;

    /* The scales of group g + 1 are loaded while group g computes. */
    float sw_next[T::halves], sx0_next = 0.0f, sx1_next = 0.0f;
    auto load_scales = [&](int g) {
#pragma unroll
      for (int h = 0; h < T::halves; h++)
        sw_next[h] = h < halves_present
                         ? __ldg(p.w_scale + (size_t)(nb * T::halves + h) * p.k_groups + g)
                         : 0.0f;
      sx0_next = row0_ok ? __ldg(p.x_scale + (size_t)row0 * p.sx_stride_m + (size_t)g * p.sx_stride_g) : 0.0f;
      sx1_next = row1_ok ? __ldg(p.x_scale + (size_t)row1 * p.sx_stride_m + (size_t)g * p.sx_stride_g) : 0.0f;
    };
    if (g_begin < g_end) load_scales(g_begin);
    for (int g = g_begin; g < g_end; g++) {
      float sw[T::halves];
#pragma unroll
      for (int h = 0; h < T::halves; h++) sw[h] = sw_next[h];
      const float sx0 = sx0_next, sx1 = sx1_next;
      if (g + 1 < g_end) load_scales(g + 1);
      mbar_wait(smem_addr(full_bar + stage), phase);
      const uint32_t a_base = smem_addr(smem + stage * T::stage_bytes) + consumer * 64 * kBlockK;
      const uint32_t b_base = smem_addr(smem + stage * T::stage_bytes + kTileBytes);
#pragma unroll
      for (int h = 0; h < T::halves; h++) {
        if (h < halves_present) {
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < kBlockK / 32; kk++)
            wgmma_m64n128k32(part, smem_desc_sw128(a_base + kk * 32),
                             smem_desc_sw128(b_base + h * kTileBytes + kk * 32), kk);
          wgmma_commit();
          wgmma_wait_all();
          if (h == halves_present - 1 && lane == 0) mbar_arrive(smem_addr(empty_bar + stage));
          const float s0 = sx0 * sw[h], s1 = sx1 * sw[h];
#pragma unroll
          for (int i = 0; i < 16; i++) {
            acc[64 * h + 4 * i + 0] = fmaf(part[4 * i + 0], s0, acc[64 * h + 4 * i + 0]);
            acc[64 * h + 4 * i + 1] = fmaf(part[4 * i + 1], s0, acc[64 * h + 4 * i + 1]);
            acc[64 * h + 4 * i + 2] = fmaf(part[4 * i + 2], s1, acc[64 * h + 4 * i + 2]);
            acc[64 * h + 4 * i + 3] = fmaf(part[4 * i + 3], s1, acc[64 * h + 4 * i + 3]);
          }
        }
      }
      if (++stage == T::stages) {
        stage = 0;
        phase ^= 1;
      }
    }

    /* acc[64h + 4i + e]: row row0 (e < 2) or row1, column nb*kBN + 128h + 8i + 2*(lane%4) + (e & 1). */
    if (p.splits > 1) {
      /* Split-K: fp32 partial of this K range, then the last of the tile's
       * units adds the partials in split order (deterministic). */
      float *mine = p.partial + (size_t)split * p.M * p.N;
#pragma unroll
      for (int h = 0; h < T::halves; h++)
#pragma unroll
        for (int i = 0; i < 16; i++) {
          const int col = nb * kBN + 128 * h + 8 * i + 2 * (lane % 4);
          const float *a = acc + 64 * h + 4 * i;
          if (col < p.N && row0_ok) mine[(size_t)row0 * p.N + col] = a[0];
          if (col + 1 < p.N && row0_ok) mine[(size_t)row0 * p.N + col + 1] = a[1];
          if (col < p.N && row1_ok) mine[(size_t)row1 * p.N + col] = a[2];
          if (col + 1 < p.N && row1_ok) mine[(size_t)row1 * p.N + col + 1] = a[3];
        }
      /* Every unit of a split launch has its own CTA (units <= SMs), all
       * resident at once (cooperative launch), so the tile's CTAs wait for
       * each other and then each adds up its own slice of rows: the
       * reduction runs in parallel. */
      __threadfence();
      asm volatile("bar.sync 1, 256;" ::: "memory"); /* the two consumer warpgroups */
      if (threadIdx.x == 128) {
        atomicAdd(p.counters + tile, 1u);
        while (*reinterpret_cast<volatile unsigned int *>(p.counters + tile) < (unsigned)p.splits)
          __nanosleep(64);
      }
      asm volatile("bar.sync 1, 256;" ::: "memory");
      __threadfence();
      const int rows = min(kBlockM, p.M - mb * kBlockM), cols = min(kBN, p.N - nb * kBN);
      const int r_begin = split * rows / p.splits, r_end = (split + 1) * rows / p.splits;
      const int t = threadIdx.x - 128;
      if (p.N % 4 == 0) {
        /* float4 columns; each thread's outputs gathered over all splits at once. */
        const int quads = (cols + 3) / 4, items = (r_end - r_begin) * quads;
        for (int base = 0; base < items; base += 256 * 4) {
          float4 sum[4];
#pragma unroll
          for (int u = 0; u < 4; u++) sum[u] = make_float4(0.f, 0.f, 0.f, 0.f);
          for (int sp = 0; sp < p.splits; sp++) {
#pragma unroll
            for (int u = 0; u < 4; u++) {
              const int idx = base + u * 256 + t;
              if (idx < items) {
                const int row = mb * kBlockM + r_begin + idx / quads, col = nb * kBN + 4 * (idx % quads);
                const float4 v = __ldcg(reinterpret_cast<const float4 *>(
                    p.partial + ((size_t)sp * p.M + row) * p.N + col));
                sum[u].x += v.x;
                sum[u].y += v.y;
                sum[u].z += v.z;
                sum[u].w += v.w;
              }
            }
          }
#pragma unroll
          for (int u = 0; u < 4; u++) {
            const int idx = base + u * 256 + t;
            if (idx < items) {
              const int row = mb * kBlockM + r_begin + idx / quads, col = nb * kBN + 4 * (idx % quads);
              const float v[4] = {sum[u].x, sum[u].y, sum[u].z, sum[u].w};
              for (int e = 0; e < 4 && col + e < p.N; e++)
                store_element(p.y_dtype, p.y, (size_t)row * p.ldy + col + e,
                              v[e] + (p.bias ? __ldg(p.bias + col + e) : 0.0f));
            }
          }
        }
      } else {
        for (int idx = t; idx < (r_end - r_begin) * cols; idx += 256) {
          const int row = mb * kBlockM + r_begin + idx / cols, col = nb * kBN + idx % cols;
          float sum = 0.0f;
          for (int sp = 0; sp < p.splits; sp++)
            sum += __ldcg(p.partial + ((size_t)sp * p.M + row) * p.N + col);
          store_element(p.y_dtype, p.y, (size_t)row * p.ldy + col,
                        sum + (p.bias ? __ldg(p.bias + col) : 0.0f));
        }
      }
      /* The last CTA of the tile to finish resets both counters for the next launch. */
      asm volatile("bar.sync 1, 256;" ::: "memory");
      if (threadIdx.x == 128 &&
          atomicAdd(p.counters + FP8GEMM_CUDA_SPLIT_COUNTERS / 2 + tile, 1u) == (unsigned)(p.splits - 1)) {
        p.counters[tile] = 0;
        p.counters[FP8GEMM_CUDA_SPLIT_COUNTERS / 2 + tile] = 0;
      }
      continue;
    }
    if (p.tma_store) {
      /* Each consumer warpgroup stages its 64 rows x 128 columns (one half)
       * in shared memory as two 64 x 64 boxes with the 128B swizzle (16-byte
       * chunk c of row r at c ^ (r % 8): the warp's 32 four-byte stores hit
       * 32 banks) and one thread hands them to the tensor-store engine. The
       * stores run while the warpgroup goes on with the next half or tile;
       * the buffer is only rewritten once the engine has read it. */
      uint8_t *buf = epi_smem + consumer * (T::epi_bytes / 2);
      const uint32_t buf_addr = smem_addr(buf);
      const bool leader = warp_in_group == 0 && lane == 0;
      const int lr = warp_in_group * 16 + lane / 4; /* row0 in the warpgroup's 64 rows */
#pragma unroll
      for (int h = 0; h < T::halves; h++) {
        if (h < halves_present) {
          if (leader) bulk_wait_read0();
          named_bar(2 + consumer, 128);
#pragma unroll
          for (int i = 0; i < 16; i++) {
            const int col = nb * kBN + 128 * h + 8 * i + 2 * (lane % 4);
            float b0 = 0.0f, b1 = 0.0f;
            if (p.bias) {
              b0 = col < p.N ? __ldg(p.bias + col) : 0.0f;
              b1 = col + 1 < p.N ? __ldg(p.bias + col + 1) : 0.0f;
            }
            const float *a = acc + 64 * h + 4 * i;
            const uint32_t off = (i / 8) * 8192 + (((i % 8) ^ (lr % 8)) * 16) + (lane % 4) * 4;
            *reinterpret_cast<uint32_t *>(buf + lr * 128 + off) = pack2(p.y_dtype, a[0] + b0, a[1] + b1);
            *reinterpret_cast<uint32_t *>(buf + (lr + 8) * 128 + off) =
                pack2(p.y_dtype, a[2] + b0, a[3] + b1);
          }
          fence_proxy_async();
          named_bar(2 + consumer, 128);
          if (leader) {
            const int c0 = nb * kBN + 128 * h, r0 = mb * kBlockM + consumer * 64;
            if (r0 < p.M) {
              tma_store_2d(&map_y, buf_addr, c0, r0);
              if (c0 + 64 < p.N) tma_store_2d(&map_y, buf_addr + 8192, c0 + 64, r0);
            }
            bulk_commit();
          }
        }
      }
      continue;
    }
#pragma unroll
    for (int h = 0; h < T::halves; h++)
#pragma unroll
      for (int i = 0; i < 16; i++) {
        const int col = nb * kBN + 128 * h + 8 * i + 2 * (lane % 4);
        if (col >= p.N) continue;
        const bool second = col + 1 < p.N;
        const float b0 = p.bias ? __ldg(p.bias + col) : 0.0f;
        const float b1 = (p.bias && second) ? __ldg(p.bias + col + 1) : 0.0f;
        const float *a = acc + 64 * h + 4 * i;
        if (row0_ok)
          store_pair(p.y_dtype, p.y, (size_t)row0 * p.ldy + col, a[0] + b0, a[1] + b1, second,
                     p.y_paired);
        if (row1_ok)
          store_pair(p.y_dtype, p.y, (size_t)row1 * p.ldy + col, a[2] + b0, a[3] + b1, second,
                     p.y_paired);
      }
  }
  /* Tensor stores read shared memory until they complete. */
  if (p.tma_store && warp_in_group == 0 && lane == 0) bulk_wait0();
}

template <bool kPreshuffled, int kBN>
fp8gemm_status raise_smem_limit() {
  return fp8gemm_cuda_check(
      cudaFuncSetAttribute(reinterpret_cast<const void *>(gemm_large_kernel<kPreshuffled, kBN>),
                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                           (int)Tile<kBN>::smem_bytes),
      "large-M kernel: shared-memory limit");
}

/* Splits K over the units of a launch with fewer tiles than SMs. */
void plan_large_splits(int sm_count, long long tiles, int k_groups, int *splits, int *per_split) {
  int want = 1;
  /* units = tiles * splits <= SMs: each unit gets its own resident CTA. */
  if (tiles < sm_count && tiles <= FP8GEMM_CUDA_SPLIT_COUNTERS / 2) want = (int)(sm_count / tiles);
  if (want > k_groups) want = k_groups;
  *per_split = (k_groups + want - 1) / want;
  *splits = (k_groups + *per_split - 1) / *per_split;
}

template <bool kPreshuffled, int kBN>
fp8gemm_status launch(fp8gemm_cuda_state *s, const CUtensorMap &map_x, const CUtensorMap &map_w,
                      const CUtensorMap &map_y, LargeParams p) {
  p.n_blocks = (p.N + kBN - 1) / kBN;
  const long long units = (long long)p.m_blocks * p.n_blocks * p.splits;
  if (units > 0x7fffffffLL)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "large-M GEMM: %lld tiles", units);
  const unsigned grid = (unsigned)(units < s->sm_count ? units : s->sm_count);
  /* A split launch's CTAs wait for each other (see the split-K epilogue):
   * launched cooperatively, they are all resident at once even when
   * another launch on a concurrent stream holds some SMs. */
  cudaLaunchAttribute cooperative;
  cooperative.id = cudaLaunchAttributeCooperative;
  cooperative.val.cooperative = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(grid);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = Tile<kBN>::smem_bytes;
  config.stream = s->stream;
  config.attrs = &cooperative;
  config.numAttrs = p.splits > 1 ? 1 : 0;
  FP8GEMM_CUDA_TRY(cudaLaunchKernelEx(&config, gemm_large_kernel<kPreshuffled, kBN>, map_x, map_w,
                                      map_y, p),
                   "large-M GEMM kernel launch");
  return fp8gemm_cuda_check(cudaGetLastError(), "large-M GEMM kernel launch");
}

}  // namespace

extern "C" int fp8gemm_cuda_large_supported(const fp8gemm_cuda_problem *p) {
  /* The tensor-memory engine needs 16-byte aligned bases and row strides. */
  if ((uintptr_t)p->xq % 16 != 0 || p->ldq % 16 != 0) return 0;
  if ((uintptr_t)p->w % 16 != 0) return 0;
  if (p->M > 0x7fffffffu || p->N > 0x7fffffffu || p->K > 0x7fffffffu) return 0;
  return 1;
}

extern "C" fp8gemm_status fp8gemm_cuda_large_prepare(void) {
  FP8GEMM_RETURN_IF_ERROR((raise_smem_limit<true, 128>()));
  FP8GEMM_RETURN_IF_ERROR((raise_smem_limit<false, 128>()));
  FP8GEMM_RETURN_IF_ERROR((raise_smem_limit<true, 256>()));
  FP8GEMM_RETURN_IF_ERROR((raise_smem_limit<false, 256>()));
  return FP8GEMM_OK;
}

extern "C" size_t fp8gemm_cuda_large_workspace(const fp8gemm_cuda_state *s, size_t M, size_t N,
                                               size_t K) {
  const long long tiles = (long long)((M + kBlockM - 1) / kBlockM) * (long long)((N + 127) / 128);
  int splits, per_split;
  plan_large_splits(s->sm_count, tiles, (int)((K + kBlockK - 1) / kBlockK), &splits, &per_split);
  return splits > 1 ? (size_t)splits * M * N * sizeof(float) : 0;
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
  /* 256-wide tiles when they still give every SM a tile, else 128 (and
   * split K when even those are fewer than the SMs). */
  const long long wide_tiles = (long long)p.m_blocks * ((p.N + 255) / 256);
  const int bn = s->large_bn == 128 || s->large_bn == 256 ? s->large_bn
                 : wide_tiles >= s->sm_count                ? 256
                                                            : 128;
  p.group_m = s->large_group_m > 0 ? s->large_group_m : kGroupM;
  p.splits = 1;
  p.groups_per_split = p.k_groups;
  p.partial = static_cast<float *>(workspace);
  p.counters = s->split_counters;
  if (bn == 128) {
    plan_large_splits(s->sm_count, (long long)p.m_blocks * ((p.N + 127) / 128), p.k_groups,
                      &p.splits, &p.groups_per_split);
    if (p.splits > 1 && (!workspace || workspace_bytes < (size_t)p.splits * prob->M * prob->N * sizeof(float))) {
      p.splits = 1; /* no room for partials: unsplit, same result */
      p.groups_per_split = p.k_groups;
    }
  }

  CUtensorMap map_x, map_w, map_y;
  FP8GEMM_RETURN_IF_ERROR(
      fp8gemm_cuda_encode_2d(s, &map_x, CU_TENSOR_MAP_DATA_TYPE_UINT8, prob->xq, prob->K, prob->M,
                             prob->ldq, kBlockK, kBlockM, "large-M GEMM xq"));
  if (prob->w_preshuffled)
    map_w = map_x; /* unused: the weight comes by bulk copies */
  else
    FP8GEMM_RETURN_IF_ERROR(
        fp8gemm_cuda_encode_2d(s, &map_w, CU_TENSOR_MAP_DATA_TYPE_UINT8, prob->w, prob->K, prob->N,
                               prob->K, kBlockK, (unsigned)bn, "large-M GEMM weight"));
  /* 2-byte outputs of unsplit launches go out through tensor stores (the
   * engine needs a 16-byte aligned base and row pitch). */
  p.tma_store = p.splits == 1 && y_elem == 2 && (uintptr_t)prob->y % 16 == 0 &&
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
  if (prob->w_preshuffled)
    return bn == 256 ? launch<true, 256>(s, map_x, map_w, map_y, p)
                     : launch<true, 128>(s, map_x, map_w, map_y, p);
  return bn == 256 ? launch<false, 256>(s, map_x, map_w, map_y, p)
                   : launch<false, 128>(s, map_x, map_w, map_y, p);
}
