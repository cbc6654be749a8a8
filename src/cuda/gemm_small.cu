/* Small-M GEMM (decode, M <= 128 per launch): bound by streaming the weight
 * from HBM once.
 *
 * A CTA of 8 warps owns one 128-row block of the weight (the preshuffled
 * layout's block row) and a range of 128-wide K groups (split-K when there
 * are too few block rows to fill the GPU). Warp w owns rows 16w..16w+15 and
 * loads them straight into registers: per group each thread takes two
 * 16-byte chunks of each of its two rows (32 consecutive k), so every load is
 * 16 bytes wide, and a warp's loads cover whole 128-byte rows (in the
 * preshuffled layout one contiguous 2 KiB run). Loads run `depth` groups
 * ahead of the math. The products are mma.sync m16n8k32 e4m3 with the
 * weight as the 16-row A operand and the activation as the n8 B operand:
 * since the sum over k does not care about order, a thread feeds the mma
 * the bytes it loaded as if they were the k slots it owns, and reads the
 * activation with the same permutation (32 consecutive k per thread), so no
 * shuffle of weight bytes is ever needed. Each group's fp32 partial is
 * promoted with sx(m, g) * sw(n/128, g).
 *
 * The activation chunk (4 groups, all M rows) is staged in shared memory
 * with cp.async; the fused variant stages raw bf16/fp16/fp32 x and
 * quantizes it there with the same warp quantizer as the standalone
 * quantize kernel, so both paths see identical codes and scales.
 *
 * Split-K partials go to the workspace [split][M][N] in fp32; the last CTA
 * of a block row (a counter in the context, reset by that CTA) adds them in
 * split order, so results are deterministic run to run. */
#include <stdint.h>
#include <stdlib.h>

#include "cuda_internal.h"
#include "device_common.cuh"

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kChunkGroups = 4;
constexpr int kChunkBytes = kChunkGroups * 128;
/* 16 bytes of padding per staged row keep the fragment reads (rows 8 apart
 * in one quarter-warp) on distinct banks. */
constexpr int kRowPitch = kChunkBytes + 16;

struct SmallParams {
  const uint8_t *w;
  const float *w_scale;
  size_t N, K;
  int groups;
  const uint8_t *xq;
  size_t ldq;
  const float *x_scale;
  size_t sx_stride_m, sx_stride_g;
  const void *x;
  size_t ldx;
  fp8gemm_dtype x_dtype;
  int x_async_ok; /* 16-byte aligned rows: stage with cp.async */
  const float *bias;
  void *y;
  size_t ldy;
  fp8gemm_dtype y_dtype;
  int M;
  int groups_per_split;
  int splits;
  float *partial;
  unsigned int *counters;
};

template <int MT>
struct Depth {
  static constexpr int value = MT <= 2 ? 4 : (MT <= 4 ? 3 : (MT <= 8 ? 2 : 1));
};

__device__ __forceinline__ uint4 load_stream16(const uint8_t *ptr) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(ptr));
  return v;
}

__device__ __forceinline__ void cp_async16(void *smem_dst, const void *gmem_src) {
  const uint32_t dst = (uint32_t)__cvta_generic_to_shared(smem_dst);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(gmem_src) : "memory");
}

__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_all;" ::: "memory");
}

__device__ __forceinline__ void mma_e4m3_16x8x32(float (&d)[4], uint32_t a0, uint32_t a1,
                                                 uint32_t a2, uint32_t a3, uint32_t b0,
                                                 uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t word_of(const uint4 &v, int i) {
  return i == 0 ? v.x : (i == 1 ? v.y : (i == 2 ? v.z : v.w));
}

/* The thread's 64 weight bytes of group g: rows r and r+8 of its warp's
 * 16, bytes [32*tig, 32*tig+32) of the group, as f[row][half]. */
template <bool kPreshuffled>
__device__ __forceinline__ void load_weight_group(const SmallParams &p, int g, size_t block_row,
                                                  int rows_in_block, int r, int tig,
                                                  uint4 (&f)[4]) {
  const size_t k0 = (size_t)g * 128;
  const int width = (int)min((size_t)128, p.K - k0);
#pragma unroll
  for (int rr = 0; rr < 2; rr++) {
    const int row = r + 8 * rr;
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int chunk = 2 * tig + half;
      const bool valid = row < rows_in_block && chunk * 16 < width;
      const uint8_t *addr;
      if (kPreshuffled) {
        const size_t tile = block_row * 128 * p.K + k0 * rows_in_block;
        addr = p.w + tile +
               (width == 128 ? (size_t)row * 128 + (size_t)((chunk ^ (row & 7)) << 4)
                             : (size_t)row * width + chunk * 16);
      } else {
        addr = p.w + (block_row * 128 + row) * p.K + k0 + chunk * 16;
      }
      f[rr * 2 + half] = valid ? load_stream16(addr) : make_uint4(0, 0, 0, 0);
    }
  }
}

/* Stages groups [g, g + count) of the activation for all rows into x_s
 * (codes) and sx_s (scales). Rows >= M stay zero (set once at start). */
template <int MT, bool kFused>
__device__ __forceinline__ void stage_activation(const SmallParams &p, int g, int count,
                                                 uint8_t *x_s, float *sx_s, uint8_t *raw_s) {
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const size_t k0 = (size_t)g * 128;
  const int width = (int)min((size_t)count * 128, p.K - k0); /* multiple of 16 */
  if (!kFused) {
    const int pieces_per_row = width / 16;
    if (p.x_async_ok) {
      for (int i = tid; i < p.M * pieces_per_row; i += kThreads) {
        const int m = i / pieces_per_row, piece = i % pieces_per_row;
        cp_async16(x_s + m * kRowPitch + piece * 16, p.xq + (size_t)m * p.ldq + k0 + piece * 16);
      }
    } else {
      for (int i = tid; i < p.M * width; i += kThreads) {
        const int m = i / width, c = i % width;
        x_s[m * kRowPitch + c] = p.xq[(size_t)m * p.ldq + k0 + c];
      }
    }
    /* A narrow last group reads zeros past K (the weight is zero there too). */
    for (int i = tid; i < p.M * (kChunkBytes - width); i += kThreads) {
      const int m = i / (kChunkBytes - width), c = width + i % (kChunkBytes - width);
      x_s[m * kRowPitch + c] = 0;
    }
    for (int i = tid; i < p.M * count; i += kThreads) {
      const int m = i / count, gl = i % count;
      sx_s[gl * 8 * MT + m] = p.x_scale[m * p.sx_stride_m + (size_t)(g + gl) * p.sx_stride_g];
    }
    cp_async_wait_all();
    return;
  }
  /* Fused: raw rows into raw_s (cp.async when aligned), then one warp per
   * (row, group) quantizes from shared memory. */
  const size_t elem = p.x_dtype == FP8GEMM_DTYPE_F32 ? 4 : 2;
  const int raw_pitch = kChunkBytes * (int)elem;
  const int row_bytes = width * (int)elem;
  if (p.x_async_ok) {
    const int pieces_per_row = row_bytes / 16;
    for (int i = tid; i < p.M * pieces_per_row; i += kThreads) {
      const int m = i / pieces_per_row, piece = i % pieces_per_row;
      cp_async16(raw_s + m * raw_pitch + piece * 16,
                 static_cast<const uint8_t *>(p.x) + ((size_t)m * p.ldx + k0) * elem + piece * 16);
    }
    cp_async_wait_all();
  } else {
    for (int i = tid; i < p.M * width; i += kThreads) {
      const int m = i / width, c = i % width;
      const float v = load_element(p.x_dtype, p.x, (size_t)m * p.ldx + k0 + c);
      if (elem == 4) reinterpret_cast<float *>(raw_s + m * raw_pitch)[c] = v;
      else if (p.x_dtype == FP8GEMM_DTYPE_BF16)
        reinterpret_cast<__nv_bfloat16 *>(raw_s + m * raw_pitch)[c] = __float2bfloat16_rn(v);
      else
        reinterpret_cast<__half *>(raw_s + m * raw_pitch)[c] = __float2half_rn(v);
    }
  }
  __syncthreads();
  for (int item = warp; item < p.M * count; item += kWarps) {
    const int m = item / count, gl = item % count;
    const int group_width = min(128, width - gl * 128);
    uint8_t *dst = x_s + m * kRowPitch + gl * 128;
    const float scale = quantize_group_warp(
        p.x_dtype, raw_s + m * raw_pitch + gl * 128 * elem, group_width, lane,
        [&](int i, uint8_t code) { dst[i] = code; });
    for (int i = group_width + lane; i < 128; i += 32) dst[i] = 0;
    if (lane == 0) sx_s[gl * 8 * MT + m] = scale;
  }
}

/* Two CTAs per SM up to MT = 4 (M <= 32): 16 warps streaming per SM. */
template <int MT>
struct MinBlocks {
  static constexpr int value = MT <= 4 ? 2 : 1;
};

template <int MT, bool kPreshuffled, bool kFused>
__global__ void __launch_bounds__(kThreads, MinBlocks<MT>::value)
    gemm_small_kernel(const SmallParams p) {
  extern __shared__ __align__(16) uint8_t smem[];
  uint8_t *x_s = smem;                                                   /* [8MT][kRowPitch] */
  float *sx_s = reinterpret_cast<float *>(smem + 8 * MT * kRowPitch);    /* [chunk][8MT] */
  uint8_t *raw_s = smem + 8 * MT * kRowPitch + kChunkGroups * 8 * MT * 4; /* fused only */
  constexpr int kDepth = Depth<MT>::value;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gid = lane / 4, tig = lane % 4;
  const size_t block_row = blockIdx.x;
  const int rows_in_block = (int)min((size_t)128, p.N - block_row * 128);
  const int r = warp * 16 + gid; /* this thread's first row inside the block */
  const int split = blockIdx.y;
  const int g_begin = split * p.groups_per_split;
  const int g_end = min(p.groups, g_begin + p.groups_per_split);

  /* Weight loads go first: they do not depend on the activation. */
  uint4 wf[kDepth][4];
#pragma unroll
  for (int d = 0; d < kDepth; d++)
    if (g_begin + d < g_end)
      load_weight_group<kPreshuffled>(p, g_begin + d, block_row, rows_in_block, r, tig, wf[d]);

  /* Rows past M read as zero codes with zero scales. */
  for (int i = tid; i < (8 * MT - p.M) * kRowPitch; i += kThreads) x_s[p.M * kRowPitch + i] = 0;
  for (int i = tid; i < kChunkGroups * 8 * MT; i += kThreads)
    if (i % (8 * MT) >= p.M) sx_s[i] = 0.0f;

  float acc[MT][4];
#pragma unroll
  for (int j = 0; j < MT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) acc[j][e] = 0.0f;

  for (int g0 = g_begin; g0 < g_end; g0 += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; d++) {
      const int g = g0 + d;
      if (g < g_end) {
        const int gl = (g - g_begin) % kChunkGroups;
        if (gl == 0) {
          __syncthreads(); /* the previous chunk is fully read */
          stage_activation<MT, kFused>(p, g, min(kChunkGroups, g_end - g), x_s, sx_s, raw_s);
          __syncthreads();
        }
        float part[MT][4];
#pragma unroll
        for (int j = 0; j < MT; j++)
#pragma unroll
          for (int e = 0; e < 4; e++) part[j][e] = 0.0f;
#pragma unroll
        for (int j = 0; j < MT; j++) {
          const uint8_t *xrow = x_s + (8 * j + gid) * kRowPitch + gl * 128 + 32 * tig;
          const uint4 x0 = *reinterpret_cast<const uint4 *>(xrow);
          const uint4 x1 = *reinterpret_cast<const uint4 *>(xrow + 16);
#pragma unroll
          for (int q = 0; q < 4; q++) {
            const uint4 &wa = wf[d][q / 2], &wb = wf[d][2 + q / 2];
            const uint4 &xv = q < 2 ? x0 : x1;
            const int lo = (2 * q) % 4, hi = (2 * q + 1) % 4;
            mma_e4m3_16x8x32(part[j], word_of(wa, lo), word_of(wb, lo), word_of(wa, hi),
                             word_of(wb, hi), word_of(xv, lo), word_of(xv, hi));
          }
        }
        const float sw = __ldg(p.w_scale + block_row * p.groups + g);
#pragma unroll
        for (int j = 0; j < MT; j++) {
          const float s0 = sw * sx_s[gl * 8 * MT + 8 * j + 2 * tig];
          const float s1 = sw * sx_s[gl * 8 * MT + 8 * j + 2 * tig + 1];
          acc[j][0] = fmaf(part[j][0], s0, acc[j][0]);
          acc[j][1] = fmaf(part[j][1], s1, acc[j][1]);
          acc[j][2] = fmaf(part[j][2], s0, acc[j][2]);
          acc[j][3] = fmaf(part[j][3], s1, acc[j][3]);
        }
        if (g + kDepth < g_end)
          load_weight_group<kPreshuffled>(p, g + kDepth, block_row, rows_in_block, r, tig, wf[d]);
      }
    }
  }

  /* acc[j][e]: row m = 8j + 2tig + (e & 1), column n = block_row*128 + r + 8*(e >> 1). */
  if (p.splits == 1) {
#pragma unroll
    for (int j = 0; j < MT; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int m = 8 * j + 2 * tig + (e & 1);
        const int row = r + 8 * (e >> 1);
        if (m < p.M && row < rows_in_block) {
          const size_t n = block_row * 128 + row;
          store_element(p.y_dtype, p.y, (size_t)m * p.ldy + n,
                        acc[j][e] + (p.bias ? __ldg(p.bias + n) : 0.0f));
        }
      }
    return;
  }

  float *mine = p.partial + (size_t)split * p.M * p.N;
#pragma unroll
  for (int j = 0; j < MT; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int m = 8 * j + 2 * tig + (e & 1);
      const int row = r + 8 * (e >> 1);
      if (m < p.M && row < rows_in_block) mine[(size_t)m * p.N + block_row * 128 + row] = acc[j][e];
    }
  __shared__ int is_last;
  __threadfence();
  __syncthreads();
  if (tid == 0) is_last = atomicAdd(p.counters + block_row, 1u) == (unsigned)(p.splits - 1);
  __syncthreads();
  if (!is_last) return;
  __threadfence();
  for (int i = tid; i < p.M * rows_in_block; i += kThreads) {
    const int m = i / rows_in_block;
    const size_t n = block_row * 128 + i % rows_in_block;
    /* Loads of all splits go out together (in order of summation). */
    float sum = 0.0f;
    for (int s0 = 0; s0 < p.splits; s0 += 16) {
      float v[16];
#pragma unroll
      for (int u = 0; u < 16; u++)
        v[u] = s0 + u < p.splits ? __ldcg(p.partial + ((size_t)(s0 + u) * p.M + m) * p.N + n) : 0.0f;
#pragma unroll
      for (int u = 0; u < 16; u++) sum += v[u];
    }
    store_element(p.y_dtype, p.y, (size_t)m * p.ldy + n, sum + (p.bias ? __ldg(p.bias + n) : 0.0f));
  }
  if (tid == 0) p.counters[block_row] = 0; /* ready for the next launch */
}

size_t smem_bytes(int mt, bool fused, fp8gemm_dtype x_dtype) {
  size_t bytes = (size_t)8 * mt * kRowPitch + (size_t)kChunkGroups * 8 * mt * 4;
  if (fused) bytes += (size_t)8 * mt * kChunkBytes * (x_dtype == FP8GEMM_DTYPE_F32 ? 4 : 2);
  return bytes;
}

typedef void (*small_kernel_fn)(const SmallParams);

template <int MT>
small_kernel_fn pick_kernel(bool preshuffled, bool fused) {
  if (fused) {
    if constexpr (MT <= 4)
      return preshuffled ? gemm_small_kernel<MT, true, true> : gemm_small_kernel<MT, false, true>;
    return nullptr;
  }
  return preshuffled ? gemm_small_kernel<MT, true, false> : gemm_small_kernel<MT, false, false>;
}

small_kernel_fn select_kernel(int mt, bool preshuffled, bool fused) {
  switch (mt) {
    case 1: return pick_kernel<1>(preshuffled, fused);
    case 2: return pick_kernel<2>(preshuffled, fused);
    case 4: return pick_kernel<4>(preshuffled, fused);
    case 8: return pick_kernel<8>(preshuffled, fused);
    default: return pick_kernel<16>(preshuffled, fused);
  }
}

int tiles_for_m(size_t M) {
  int mt = 1;
  while ((size_t)8 * mt < M) mt *= 2;
  return mt;
}

/* CTAs of each variant resident per SM (set by prepare). */
int g_occupancy[5][2][2];

int mt_index(int mt) { return mt == 1 ? 0 : mt == 2 ? 1 : mt == 4 ? 2 : mt == 8 ? 3 : 4; }

/* Splits K (whole 128-wide groups per split) into the most splits for which
 * block rows x splits still fit one wave of resident CTAs (occupancy x
 * SMs): measured on H100, a second, partial wave or an unsplit weight with
 * spare slots both cost more than the split-K reduction (e.g. 7168x16384,
 * M=1: 5 splits = 280 CTAs 64 us, 4 splits = 224 CTAs 47 us; 24576x1536:
 * 2 splits 23 us, unsplit 18 us). FP8GEMM_CUDA_SMALL_SPLITS forces the
 * count (benchmarks). */
void plan_splits(const fp8gemm_cuda_state *s, int mt, bool preshuffled, bool fused, size_t N,
                 size_t K, int *splits, int *per_split) {
  const int block_rows = (int)((N + 127) / 128);
  const int groups = (int)((K + 127) / 128);
  int occ = g_occupancy[mt_index(mt)][preshuffled][fused];
  if (occ < 1) occ = 1;
  const long slots = (long)s->sm_count * occ;
  /* Read per call (host only) so benchmarks can vary it. */
  const char *env = getenv("FP8GEMM_CUDA_SMALL_SPLITS");
  const int forced = env && *env ? atoi(env) : 0;
  int want = 1;
  if (block_rows <= FP8GEMM_CUDA_SPLIT_COUNTERS / 2) { /* the stream kernel uses the upper half */
    if (forced > 0) {
      want = forced;
    } else {
      for (int w = 1; w <= groups; w++) {
        const int per = (groups + w - 1) / w;
        const int eff = (groups + per - 1) / per;
        if ((long)block_rows * eff <= slots && eff > want) want = eff;
      }
    }
  }
  if (want > groups) want = groups;
  *per_split = (groups + want - 1) / want;
  *splits = (groups + *per_split - 1) / *per_split;
}

/* Largest split count over the variants serving M rows (for the workspace). */
int max_splits(const fp8gemm_cuda_state *s, size_t M, size_t N, size_t K) {
  const int mt = tiles_for_m(M < FP8GEMM_CUDA_SMALL_M_MAX ? M : FP8GEMM_CUDA_SMALL_M_MAX);
  int most = 1;
  for (int pre = 0; pre < 2; pre++)
    for (int fused = 0; fused < 2; fused++) {
      int splits, per_split;
      plan_splits(s, mt, pre, fused, N, K, &splits, &per_split);
      if (splits > most) most = splits;
    }
  return most;
}

}  // namespace

extern "C" size_t fp8gemm_cuda_small_workspace(const fp8gemm_cuda_state *s, size_t M, size_t N,
                                               size_t K) {
  const int splits = max_splits(s, M, N, K);
  const size_t rows = M < FP8GEMM_CUDA_SMALL_M_MAX ? M : FP8GEMM_CUDA_SMALL_M_MAX;
  return splits > 1 ? (size_t)splits * rows * N * sizeof(float) : 0;
}

extern "C" fp8gemm_status fp8gemm_cuda_small_prepare(fp8gemm_cuda_state *s) {
  (void)s;
  /* Raise the dynamic shared-memory limit of every variant once, and note
   * how many CTAs of each fit on an SM. */
  static const int mts[] = {1, 2, 4, 8, 16};
  for (int i = 0; i < 5; i++)
    for (int pre = 0; pre < 2; pre++)
      for (int fused = 0; fused < 2; fused++) {
        small_kernel_fn fn = select_kernel(mts[i], pre, fused);
        if (!fn) continue;
        const size_t bytes = smem_bytes(mts[i], fused, FP8GEMM_DTYPE_F32);
        FP8GEMM_CUDA_TRY(cudaFuncSetAttribute(reinterpret_cast<const void *>(fn),
                                              cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)bytes),
                         "small-M kernel: shared-memory limit");
        int occ = 0;
        FP8GEMM_CUDA_TRY(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                             &occ, reinterpret_cast<const void *>(fn), kThreads, bytes),
                         "small-M kernel: occupancy");
        g_occupancy[i][pre][fused] = occ;
      }
  return FP8GEMM_OK;
}

extern "C" fp8gemm_status fp8gemm_cuda_gemm_small(fp8gemm_cuda_state *s,
                                                  const fp8gemm_cuda_problem *prob,
                                                  void *workspace, size_t workspace_bytes) {
  if (prob->fused && prob->M > 32)
    return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED, "fused linear covers M <= 32, got M=%zu",
                             prob->M);
  SmallParams p;
  p.w = prob->w;
  p.w_scale = prob->w_scale;
  p.N = prob->N;
  p.K = prob->K;
  p.groups = (int)((prob->K + 127) / 128);
  p.sx_stride_m = prob->scale_stride_m;
  p.sx_stride_g = prob->scale_stride_g;
  p.x_dtype = prob->x_dtype;
  p.bias = prob->bias;
  p.y_dtype = prob->y_dtype;
  p.ldy = prob->ldy;
  p.ldq = prob->ldq;
  p.ldx = prob->ldx;
  const size_t elem = prob->x_dtype == FP8GEMM_DTYPE_F32 ? 4 : 2;
  const size_t y_elem = prob->y_dtype == FP8GEMM_DTYPE_F32 ? 4 : 2;
  for (size_t m0 = 0; m0 < prob->M; m0 += FP8GEMM_CUDA_SMALL_M_MAX) {
    const size_t rows = prob->M - m0 < FP8GEMM_CUDA_SMALL_M_MAX ? prob->M - m0
                                                                 : FP8GEMM_CUDA_SMALL_M_MAX;
    p.M = (int)rows;
    p.y = static_cast<uint8_t *>(prob->y) + m0 * prob->ldy * y_elem;
    if (prob->fused) {
      p.x = static_cast<const uint8_t *>(prob->x) + m0 * prob->ldx * elem;
      p.x_async_ok = ((uintptr_t)p.x % 16 == 0) && (prob->ldx * elem) % 16 == 0;
      p.xq = NULL;
      p.x_scale = NULL;
    } else {
      p.xq = prob->xq + m0 * prob->ldq;
      p.x_scale = prob->x_scale + m0 * prob->scale_stride_m;
      p.x_async_ok = ((uintptr_t)p.xq % 16 == 0) && prob->ldq % 16 == 0;
      p.x = NULL;
    }
    const int mt = tiles_for_m(rows);
    const bool pre = prob->w_preshuffled != 0, fused = prob->fused != 0;
    plan_splits(s, mt, pre, fused, prob->N, prob->K, &p.splits, &p.groups_per_split);
    p.counters = s->split_counters;
    p.partial = static_cast<float *>(workspace);
    if (p.splits > 1) {
      const size_t need = (size_t)p.splits * rows * prob->N * sizeof(float);
      if (!workspace || workspace_bytes < need) {
        /* The fused path reports it so the core can take the two-launch way
         * with a workspace; a GEMM without one runs unsplit (slower, same
         * result up to summation order). */
        if (fused)
          return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                                   "fused linear: split-K needs %zu workspace bytes, got %zu",
                                   need, workspace ? workspace_bytes : 0);
        p.splits = 1;
        p.groups_per_split = p.groups;
      }
    }
    small_kernel_fn fn = select_kernel(mt, pre, fused);
    const dim3 grid((unsigned)((prob->N + 127) / 128), (unsigned)p.splits);
    fn<<<grid, kThreads, smem_bytes(mt, fused, prob->x_dtype), s->stream>>>(p);
    FP8GEMM_CUDA_TRY(cudaGetLastError(), "small-M GEMM kernel launch");
  }
  return FP8GEMM_OK;
}
