/* Large-M GEMM on Hopper (sm_90a): tensor-memory-engine copies, FP8 wgmma,
 * warp-specialized and persistent.
 *
 * Tiles of 128 (M) x 128 (N) x 128 (K, one scale group). A CTA has three
 * warpgroups: warpgroup 0 produces (one thread issues the copies, its
 * registers are cut to 40 with setmaxnreg), warpgroups 1 and 2 consume
 * (registers raised to 232), each owning 64 rows of the tile.
 *
 * Producer: per K group it waits for a free stage (empty mbarrier), arms the
 * stage's full mbarrier with the byte count, and copies
 *  - the activation tile with a 2-D tensor copy (128B swizzle, rows past M
 *    and columns past K arrive as zeros);
 *  - the weight tile: plain layout, a 2-D tensor copy of the same shape;
 *    preshuffled_sm90, one 1-D bulk copy of R*128 contiguous bytes, already
 *    in the swizzled order (see src/core/layout_sm90.c). The narrow last K
 *    tile of the preshuffled layout (K % 128 != 0) is written by the
 *    producer warp with plain loads and swizzled stores, zero-filled past K.
 * Consumers: wait for the stage, issue four wgmma m64n128k32 (e4m3 x e4m3 ->
 * f32, both operands from shared memory through 128B-swizzle descriptors)
 * into a per-group accumulator, wait, free the stage, then promote:
 * acc += partial * sx(m, g) * sw(n/128, g). The scales are read from global
 * memory before the wait so their latency hides behind the copies.
 * Epilogue: + bias, convert, store straight from registers (pairs of
 * adjacent columns), masked on M and N.
 *
 * The grid is one CTA per SM; CTAs walk the tile list with a stride of the
 * grid size, and tiles are numbered in groups of 16 M-blocks so the tiles in
 * flight at once share activation and weight panels in L2. */
#include <stdint.h>

#include "cuda_internal.h"
#include "device_common.cuh"

namespace {

constexpr int kBlockM = 128;
constexpr int kBlockN = 128;
constexpr int kBlockK = 128;
constexpr int kStages = 6;
constexpr int kTileBytes = kBlockM * kBlockK; /* 16 KiB, same for A and B */
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kThreads = 384;
constexpr int kConsumerWarps = 8;
constexpr int kGroupM = 16;
constexpr size_t kSmemBytes = (size_t)kStages * kStageBytes + 1024 /* alignment */ + 256;

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
};

/* ---- PTX wrappers ---------------------------------------------------------- */

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
  return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap *map, int c0, int c1,
                                            uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], "
      "[%1, {%2, %3}], [%4];" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

__device__ __forceinline__ void bulk_load(uint32_t dst, const void *src, uint32_t bytes,
                                          uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}

__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/* K-major operand, 128B swizzle: rows of 128 bytes, 8-row groups 1024 bytes
 * apart (stride byte offset), tile 1024-aligned. */
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t addr) {
  uint64_t desc = (uint64_t)((addr & 0x3FFFF) >> 4);
  desc |= (uint64_t)1 << 16;            /* leading byte offset (unused with swizzle) */
  desc |= (uint64_t)(1024 >> 4) << 32;  /* stride byte offset */
  desc |= (uint64_t)1 << 62;            /* 128B swizzle */
  return desc;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_wait_all() {
  asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory");
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
  const int per_group = kGroupM * p.n_blocks;
  const int group = tile / per_group;
  const int first_m = group * kGroupM;
  const int group_rows = min(kGroupM, p.m_blocks - first_m);
  const int in_group = tile % per_group;
  *mb = first_m + in_group % group_rows;
  *nb = in_group / group_rows;
}

/* The preshuffled layout's narrow last K tile (rows x width bytes, rows of
 * `width` bytes) written by one warp into the swizzled stage, zeros past K. */
__device__ __forceinline__ void copy_narrow_tile(uint8_t *stage_b, const uint8_t *src, int rows,
                                                 int width, int lane) {
  for (int i = lane; i < kBlockN * 8; i += 32) {
    const int row = i / 8, pos = i % 8;
    const int chunk = pos ^ (row & 7);
    uint4 v = make_uint4(0, 0, 0, 0);
    if (row < rows && chunk * 16 < width)
      v = *reinterpret_cast<const uint4 *>(src + (size_t)row * width + chunk * 16);
    *reinterpret_cast<uint4 *>(stage_b + row * 128 + pos * 16) = v;
  }
}

template <bool kPreshuffled>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_large_kernel(const __grid_constant__ CUtensorMap map_x,
                      const __grid_constant__ CUtensorMap map_w, const LargeParams p) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t *smem = reinterpret_cast<uint8_t *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  uint64_t *full_bar = reinterpret_cast<uint64_t *>(smem + kStages * kStageBytes);
  uint64_t *empty_bar = full_bar + kStages;

  const int warpgroup = threadIdx.x / 128;
  const int warp_in_group = (threadIdx.x / 32) % 4;
  const int lane = threadIdx.x % 32;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; s++) {
      mbar_init(smem_addr(full_bar + s), 1);
      mbar_init(smem_addr(empty_bar + s), kConsumerWarps);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    fence_proxy_async();
  }
  __syncthreads();

  const int tiles = p.m_blocks * p.n_blocks;

  if (warpgroup == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
    if (warp_in_group != 0) return;
    int stage = 0;
    uint32_t phase = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
      int mb, nb;
      tile_coords(p, tile, &mb, &nb);
      const int rows_in_block = min(kBlockN, p.N - nb * kBlockN);
      for (int g = 0; g < p.k_groups; g++) {
        mbar_wait(smem_addr(empty_bar + stage), phase ^ 1);
        uint8_t *stage_a = smem + stage * kStageBytes;
        uint8_t *stage_b = stage_a + kTileBytes;
        const uint32_t bar = smem_addr(full_bar + stage);
        const int width = min(kBlockK, p.K - g * kBlockK);
        if (kPreshuffled) {
          const uint8_t *tile_src =
              p.w + (size_t)nb * kBlockN * p.K + (size_t)g * kBlockK * rows_in_block;
          if (width == kBlockK) {
            if (lane == 0) {
              mbar_arrive_expect_tx(bar, kTileBytes + rows_in_block * kBlockK);
              tma_load_2d(smem_addr(stage_a), &map_x, g * kBlockK, mb * kBlockM, bar);
              bulk_load(smem_addr(stage_b), tile_src, rows_in_block * kBlockK, bar);
            }
          } else {
            copy_narrow_tile(stage_b, tile_src, rows_in_block, width, lane);
            fence_proxy_async();
            __syncwarp();
            if (lane == 0) {
              mbar_arrive_expect_tx(bar, kTileBytes);
              tma_load_2d(smem_addr(stage_a), &map_x, g * kBlockK, mb * kBlockM, bar);
            }
          }
        } else if (lane == 0) {
          mbar_arrive_expect_tx(bar, 2 * kTileBytes);
          tma_load_2d(smem_addr(stage_a), &map_x, g * kBlockK, mb * kBlockM, bar);
          tma_load_2d(smem_addr(stage_b), &map_w, g * kBlockK, nb * kBlockN, bar);
        }
        __syncwarp();
        if (++stage == kStages) {
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
  float acc[64];
  float part[64];
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    int mb, nb;
    tile_coords(p, tile, &mb, &nb);
    const int row0 = mb * kBlockM + consumer * 64 + warp_in_group * 16 + lane / 4;
    const int row1 = row0 + 8;
    const bool row0_ok = row0 < p.M, row1_ok = row1 < p.M;
#pragma unroll
    for (int i = 0; i < 64; i++) acc[i] = 0.0f;

    for (int g = 0; g < p.k_groups; g++) {
      const float sw = __ldg(p.w_scale + (size_t)nb * p.k_groups + g);
      const float sx0 = row0_ok ? __ldg(p.x_scale + (size_t)row0 * p.sx_stride_m + (size_t)g * p.sx_stride_g) : 0.0f;
      const float sx1 = row1_ok ? __ldg(p.x_scale + (size_t)row1 * p.sx_stride_m + (size_t)g * p.sx_stride_g) : 0.0f;
      mbar_wait(smem_addr(full_bar + stage), phase);
      const uint32_t a_base = smem_addr(smem + stage * kStageBytes) + consumer * 64 * kBlockK;
      const uint32_t b_base = smem_addr(smem + stage * kStageBytes + kTileBytes);
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBlockK / 32; kk++)
        wgmma_m64n128k32(part, smem_desc_sw128(a_base + kk * 32), smem_desc_sw128(b_base + kk * 32),
                         kk);
      wgmma_commit();
      wgmma_wait_all();
      if (lane == 0) mbar_arrive(smem_addr(empty_bar + stage));
      if (++stage == kStages) {
        stage = 0;
        phase ^= 1;
      }
      const float s0 = sx0 * sw, s1 = sx1 * sw;
#pragma unroll
      for (int i = 0; i < 16; i++) {
        acc[4 * i + 0] = fmaf(part[4 * i + 0], s0, acc[4 * i + 0]);
        acc[4 * i + 1] = fmaf(part[4 * i + 1], s0, acc[4 * i + 1]);
        acc[4 * i + 2] = fmaf(part[4 * i + 2], s1, acc[4 * i + 2]);
        acc[4 * i + 3] = fmaf(part[4 * i + 3], s1, acc[4 * i + 3]);
      }
    }

    /* acc[4i + e]: row row0 (e < 2) or row1, column nb*128 + 8i + 2*(lane%4) + (e & 1). */
#pragma unroll
    for (int i = 0; i < 16; i++) {
      const int col = nb * kBlockN + 8 * i + 2 * (lane % 4);
      if (col >= p.N) continue;
      const bool second = col + 1 < p.N;
      const float b0 = p.bias ? __ldg(p.bias + col) : 0.0f;
      const float b1 = (p.bias && second) ? __ldg(p.bias + col + 1) : 0.0f;
      if (row0_ok)
        store_pair(p.y_dtype, p.y, (size_t)row0 * p.ldy + col, acc[4 * i] + b0, acc[4 * i + 1] + b1,
                   second, p.y_paired);
      if (row1_ok)
        store_pair(p.y_dtype, p.y, (size_t)row1 * p.ldy + col, acc[4 * i + 2] + b0,
                   acc[4 * i + 3] + b1, second, p.y_paired);
    }
  }
}

fp8gemm_status encode_map(const fp8gemm_cuda_state *s, CUtensorMap *map, const void *base,
                          size_t inner, size_t outer, size_t row_bytes, const char *what) {
  const cuuint64_t dims[2] = {(cuuint64_t)inner, (cuuint64_t)outer};
  const cuuint64_t strides[1] = {(cuuint64_t)row_bytes};
  const cuuint32_t box[2] = {kBlockK, 128};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = s->encode_tiled(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void *>(base),
                                     dims, strides, box, element_strides,
                                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                     CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return fp8gemm_set_error(FP8GEMM_ERROR_BACKEND,
                             "cuTensorMapEncodeTiled for %s [%zu x %zu, row %zu bytes] failed (%d)",
                             what, outer, inner, row_bytes, (int)r);
  return FP8GEMM_OK;
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
  FP8GEMM_CUDA_TRY(cudaFuncSetAttribute(reinterpret_cast<const void *>(gemm_large_kernel<true>),
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)kSmemBytes),
                   "large-M kernel: shared-memory limit");
  FP8GEMM_CUDA_TRY(cudaFuncSetAttribute(reinterpret_cast<const void *>(gemm_large_kernel<false>),
                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        (int)kSmemBytes),
                   "large-M kernel: shared-memory limit");
  return FP8GEMM_OK;
}

extern "C" fp8gemm_status fp8gemm_cuda_gemm_large(fp8gemm_cuda_state *s,
                                                  const fp8gemm_cuda_problem *prob) {
  if (!s->encode_tiled)
    return fp8gemm_set_error(FP8GEMM_ERROR_BACKEND,
                             "large-M GEMM: cuTensorMapEncodeTiled is not available from the driver");
  CUtensorMap map_x, map_w;
  FP8GEMM_RETURN_IF_ERROR(encode_map(s, &map_x, prob->xq, prob->K, prob->M, prob->ldq, "xq"));
  if (prob->w_preshuffled)
    map_w = map_x; /* unused: the weight comes by bulk copies */
  else
    FP8GEMM_RETURN_IF_ERROR(encode_map(s, &map_w, prob->w, prob->K, prob->N, prob->K, "weight"));

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
  p.n_blocks = (int)((prob->N + kBlockN - 1) / kBlockN);
  p.k_groups = (int)((prob->K + kBlockK - 1) / kBlockK);
  const long long tiles = (long long)p.m_blocks * p.n_blocks;
  if (tiles > 0x7fffffffLL)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "large-M GEMM: %lld tiles", tiles);
  const unsigned grid = (unsigned)(tiles < s->sm_count ? tiles : s->sm_count);
  if (prob->w_preshuffled)
    gemm_large_kernel<true><<<grid, kThreads, kSmemBytes, s->stream>>>(map_x, map_w, p);
  else
    gemm_large_kernel<false><<<grid, kThreads, kSmemBytes, s->stream>>>(map_x, map_w, p);
  return fp8gemm_cuda_check(cudaGetLastError(), "large-M GEMM kernel launch");
}
