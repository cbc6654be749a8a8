/* Decode GEMM by row slices (M <= 64): each CTA owns S consecutive weight
 * rows over the whole of K, so no row is cut between CTAs and nothing is
 * handed off.
 *
 * Why: the 128-row-tile decode kernel (gemm_stream.cu) puts the weight in
 * wgmma's A operand, whose 64 rows per warpgroup fix a CTA's rows at 128.
 * With fewer 128-row blocks than SMs (4096 x 7168: 32 blocks on 132 SMs) it
 * must cut each row's K range among CTAs and add the pieces up afterwards,
 * which cost 1.4 us of 11.7 at M = 1 and 4.3 of 16.5 at M = 64 (session 15).
 * Here the weight is wgmma's B operand (n = S rows, any multiple of 8) and
 * the activation is A (m = 64 token rows): S = 8 * ceil(N / 8 / SMs) rows a
 * CTA (32 for N = 4096: 128 CTAs, 56 for 7168), every CTA streams its rows'
 * K groups once and stores its outputs itself.
 *
 * The price is the activation: every CTA reads all of x (M x K codes, from
 * L2), where a cut row's pieces read only their own K runs; at M = 64 that
 * is about twice the weight's bytes in L2 traffic on 4096 x 7168. The
 * dispatch (slices_chosen, gemm_stream.cu) takes this kernel only where it
 * measured faster: M = 33..64, plain, or preshuffled up to 18 K groups or
 * from 512 KiB of weight a slice.
 *
 * A CTA: a producer warp and two consumer warpgroups around a ring of
 * stages; a stage holds G consecutive K groups (groups_per_step below:
 * 16 KiB of weight or more, which is what streams fast): their activation
 * tiles (8*MT token rows of 128 codes each, 128B-swizzled, 2-D tensor
 * copies; rows past M are zeros), then the slice's weight rows of each group
 * (S rows of 128 bytes: a 2-D tensor copy of the plain [N, K] layout; in
 * the preshuffled layout the slice's rows of a 16 KiB tile are one
 * contiguous run, one bulk copy per 128-row block the slice touches, as S
 * and the slice start are multiples of 8 rows = one 1 KiB swizzle atom).
 * Warpgroup w takes the stages of parity w: G x 4 wgmma m64nSk32 into G
 * partials, one wait, then the fp32 promotion of each group with sx(m, g) *
 * sw(block, g) (scales read once into shared memory at the start). At the
 * end warpgroup 1 hands its sums to warpgroup 0 through shared memory (even
 * stages' sum + odd stages' sum: a fixed order, the same bits on every
 * run), which adds the bias and stores y.
 *
 * The wgmma always reads 64 activation rows. Below M = 57 an activation tile
 * holds only 8*MT of them and the rest of the 64 are whatever follows in
 * shared memory: rows of D depend only on the same rows of A, and rows >= M
 * are never stored, so the ring keeps its depth (the overrun past the
 * ring's end is padded).
 *
 * Panels (gemm_panel_kernel, below): the same producer and ring with
 * 64-row slices, but the weight as wgmma's A and the activation as B (n =
 * 8 * ceil(M / 8)): a 16 KiB step then costs the tensor cores 8 x
 * m64n(8..64)k32 instead of the slices' G x 4 x m64nSk32 over 64 activation
 * rows however small M is (session 19: a slice step took ~1 us, 2.5 times
 * its wgmmas). With fewer panels than SMs, a cluster of P CTAs shares a
 * panel's K steps (4096 x 7168: 64 panels x 2), each reading only its
 * share of x (the slices read all of x in every CTA: twice the weight's
 * bytes in L2 traffic at M = 64), and the partial sums meet in the
 * cluster's shared memory. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"
#include "device_common.cuh"
#include "hopper_ptx.cuh"

namespace {

constexpr int kThreads = kWarpSpecThreads; /* producer warpgroup + 2 consumer warpgroups */
constexpr int kSmemBudget = 227 * 1024;
constexpr int kMaxStages = 32;
constexpr int kMinStages = 2;       /* one a consumer warpgroup */
static_assert(kMaxStages % 2 == 0 && kMinStages % 2 == 0, "the ring's stages come in pairs (slice_smem)");
constexpr int kARows = 64;           /* wgmma m64: the activation rows A spans */
constexpr int kMaxM = 64;
constexpr int kMaxGroups = 128;      /* the scale table's size bound (K <= 16384) */
constexpr int kWidths[] = {8, 16, 24, 32, 40, 48, 56, 64, 96, 128, 192};
constexpr int kWidthCount = (int)(sizeof kWidths / sizeof kWidths[0]);
/* K groups a stage holds, which a consumer step takes at once (one wait,
 * G x 4 wgmmas into G partials of S / 2 floats): 16 KiB of weight or more
 * where 3 stages of 64 activation rows still fit. A stage's size is what
 * sets the streaming rate: one CTA an SM with ~192 KiB of copies in flight
 * reads 1.1-1.5 TB/s in stages of 4 KiB and 2.8 TB/s in stages of 16 KiB,
 * whether the copies are tensor, bulk or cp.async, whatever the wait
 * (bench/tma_roof.cu, session 17). */
constexpr int groups_per_step(int S) {
  return S <= 8 ? 6 : S <= 24 ? 5 : S <= 40 ? 4 : S <= 56 ? 3 : S <= 96 ? 2 : 1;
}
template <int S>
constexpr int kGroupsPerStep = groups_per_step(S);

struct SliceParams {
  const uint8_t *w;
  const float *w_scale;
  int N, K, groups, block_rows;
  const float *x_scale;
  size_t sx_stride_m, sx_stride_g;
  const float *bias;
  void *y;
  size_t ldy;
  fp8gemm_dtype y_dtype;
  int M;
  int x_rows;      /* activation rows a stage holds (8 * MT >= M) */
  int stages;
  int evict_first; /* weight copies with the L2 evict_first policy */
  int pieces;      /* panels: CTAs (one cluster) that cut a panel's K steps */
  unsigned long long *trace; /* probe builds, FP8GEMM_CUDA_SLICE_TRACE=1: timestamps */
};

/* Timestamps of a probe build (FP8GEMM_CUDA_PROBES; none otherwise, so a
 * release kernel carries no trace code): kTraceSlots events of every CTA,
 * then, for CTAs 0 and grid / 2, when each stage's copies were issued, when
 * its data was seen by the consumers and when their wgmmas on it were done
 * (the rest of a step, to the same warpgroup's next stage, is the
 * promotion and the scale loads). The probes cost the producer
 * warp a few spilled registers (its 40 are tight): the probe build's times
 * are for where the time goes, not for the tables. */
#ifdef FP8GEMM_CUDA_PROBES
constexpr int kTraceSlots = 8;
constexpr int kTraceGroupKinds = 3; /* issued, seen, wgmmas done */
enum {
  kTraceProducerStart, kTraceXIssued, kTraceLastIssued, kTraceScalesRead,
  kTraceFirstData, kTraceLastData, kTraceOddDone, kTraceEnd
};
#define SLICE_TRACE(event) \
  do { \
    if (p.trace) p.trace[blockIdx.x * kTraceSlots + (event)] = global_ns(); \
  } while (0)
#define SLICE_TRACE_GROUP(kind, g) \
  do { \
    if (p.trace && (blockIdx.x == 0 || blockIdx.x == gridDim.x / 2)) \
      p.trace[gridDim.x * kTraceSlots + (blockIdx.x == 0 ? 0 : kTraceGroupKinds * kMaxGroups) + \
              (kind) * kMaxGroups + (g)] = global_ns(); \
  } while (0)
#else
#define SLICE_TRACE(event) ((void)0)
#define SLICE_TRACE_GROUP(kind, g) ((void)0)
#endif

/* Shared-memory plan of one launch: [ring of stages][overrun pad][sx table
 * groups x 64][sw table groups x 2][full, empty mbarriers]. A stage holds G
 * K groups: their activation tiles (x_rows x 128 each), then their weight
 * slices (S x 128 each).
 *
 * The ring has an even number of stages, so that ring slot s is always
 * consumed by warpgroup s % 2. With an odd count the slots alternate between
 * the warpgroups, and one warpgroup can come to a slot for its next use
 * while the other's use of it (the phase between) has not landed: the
 * mbarrier's parity wait cannot tell those phases apart, passes, and reads
 * the wrong stage (session 19: 7168 x 16384 at M = 1 with 3 stages failed
 * the launch; M = 33..64 on N <= 1056 at K = 7168 got 3 stages by default). */
struct SliceSmem {
  int stages;
  size_t stage_bytes, ring, pad, tables, total;
};

/* The deepest even ring (kMinStages .. kMaxStages, at most want_stages
 * when > 0) of stages of stage_bytes whose last stage's reads reach
 * `reach` bytes from its start, beside `tables` bytes of scales and the
 * mbarriers, that fits the budget; stages = 0 if none. */
SliceSmem ring_smem(size_t stage_bytes, size_t reach, size_t tables, int want_stages) {
  SliceSmem l;
  if (want_stages > 0 && want_stages < kMinStages) want_stages = kMinStages;
  l.stage_bytes = stage_bytes;
  l.tables = tables;
  l.stages = 0;
  for (int st = kMaxStages; st >= kMinStages; st -= 2) {
    if (want_stages > 0 && st > want_stages) continue;
    const size_t ring = st * stage_bytes;
    const size_t end = ring - stage_bytes + reach;
    const size_t pad = end > ring ? end - ring : 0;
    const size_t total = 1024 + ring + pad + tables + (size_t)st * 16;
    if (total <= (size_t)kSmemBudget) {
      l.stages = st;
      l.ring = ring;
      l.pad = pad;
      l.total = total;
      break;
    }
  }
  return l;
}

SliceSmem slice_smem(int S, int x_rows, int groups, int want_stages) {
  const int G = groups_per_step(S);
  /* The last stage's last A operand reads 64 rows from its start. */
  return ring_smem((size_t)G * (x_rows + S) * 128, (size_t)(G - 1) * x_rows * 128 + (size_t)kARows * 128,
                   (size_t)groups * (kARows + 2) * 4, want_stages);
}

/* The producer warp (lane 0 issues) of both kernels: steps 0 .. steps - 1
 * of G = groups_per_step(S) K groups each, from group g_begin (the last
 * step short where g_end cuts it), step st into ring slot st % stages:
 * the activation tiles of its groups (x_tile_bytes each), then the weight
 * rows r_start .. r_start + S - 1 of each group (S x 128 bytes, in (at
 * most) two 128-row blocks: rows_dst0 of them from row a0 of block b0, the
 * other rows_dst1 from row 0 of block b0 + 1; past N, fewer). The weight
 * copies of the first ring's worth go out before the wait for the previous
 * kernel (the weight is read-only while a handle lives); the activation's
 * after it. */
template <int S, bool kPreshuffled, bool kOneBlock>
__device__ __forceinline__ void produce_steps(const SliceParams &p, const CUtensorMap *map_x,
                                              const CUtensorMap *map_w, uint8_t *smem,
                                              uint64_t *full_bar, uint64_t *empty_bar,
                                              int x_tile_bytes, int r_start, int g_begin,
                                              int g_end, int lane) {
  constexpr int G = kGroupsPerStep<S>;
  constexpr int kWTileBytes = S * 128;
  const int x_part_bytes = G * x_tile_bytes;
  const int stage_bytes = x_part_bytes + G * kWTileBytes;
  const int steps = (g_end - g_begin + G - 1) / G;
  /* kOneBlock (the panels): the rows lie in one block, known at compile
   * time (fewer live registers in the producer's 40; the slices' producer
   * spills with it, for ptxas's own reasons). */
  static_assert(!kOneBlock || 128 % S == 0, "one block: a width dividing 128");
  const int b0 = r_start / 128, a0 = r_start % 128;
  const int rows_dst0 = kOneBlock ? S : min(S, 128 - a0), rows_dst1 = S - rows_dst0;
  SLICE_TRACE(kTraceProducerStart);
  const uint64_t policy = l2_policy_evict_first();
  const int rows_b0 = min(128, p.N - b0 * 128);
  const int avail0 = min(rows_dst0, rows_b0 - a0);
  const int b1 = b0 + 1;
  const int avail1 =
      !kOneBlock && rows_dst1 > 0 && b1 < p.block_rows ? min(rows_dst1, min(128, p.N - b1 * 128)) : 0;
  const int early = min(p.stages, steps);
  /* The copies (or, narrow, the stores) of group g's slice into dst; the
   * bytes they bring are armed by the caller first. */
  auto issue_w = [&](uint8_t *dst, int g, uint32_t bar) {
    if (!kPreshuffled) {
      if (lane == 0) {
        if (p.evict_first) tma_load_2d_hint(smem_addr(dst), map_w, g * 128, r_start, bar, policy);
        else tma_load_2d(smem_addr(dst), map_w, g * 128, r_start, bar);
      }
      return;
    }
    const int width = min(128, p.K - g * 128);
    const uint8_t *tile0 = p.w + (size_t)b0 * 128 * p.K + (size_t)g * 128 * rows_b0;
    const uint8_t *tile1 =
        avail1 ? p.w + (size_t)b1 * 128 * p.K + (size_t)g * 128 * min(128, p.N - b1 * 128) : NULL;
    if (width < 128) {
      /* The narrow last K tile is stored unswizzled, rows of `width`
       * bytes: written by the warp, then fenced for the tensor cores. */
      copy_narrow_tile(dst, tile0 + (size_t)a0 * width, avail0, width, lane, rows_dst0);
      if (rows_dst1 > 0)
        copy_narrow_tile(dst + rows_dst0 * 128, tile1, avail1, width, lane, rows_dst1);
      fence_proxy_async();
      return;
    }
    if (lane == 0) {
      const uint8_t *src0 = tile0 + (size_t)a0 * 128;
      if (p.evict_first) bulk_load_hint(smem_addr(dst), src0, avail0 * 128, bar, policy);
      else bulk_load(smem_addr(dst), src0, avail0 * 128, bar);
      if (avail1) {
        if (p.evict_first)
          bulk_load_hint(smem_addr(dst + rows_dst0 * 128), tile1, avail1 * 128, bar, policy);
        else bulk_load(smem_addr(dst + rows_dst0 * 128), tile1, avail1 * 128, bar);
      }
    }
  };
  /* The activation tiles of step (stage) st, which lives in ring slot `slot`. */
  auto issue_x = [&](int slot, int st) {
    const uint32_t dst = smem_addr(smem + slot * stage_bytes), bar = smem_addr(full_bar + slot);
    const int g0 = g_begin + st * G, count = min(G, g_end - g0);
    for (int u = 0; u < count; u++)
      tma_load_2d(dst + u * x_tile_bytes, map_x, (g0 + u) * 128, 0, bar);
  };
  int stage = 0;
  uint32_t phase = 0;
  for (int st = 0; st < steps; st++) {
    mbar_wait(smem_addr(empty_bar + stage), phase ^ 1);
    const uint32_t bar = smem_addr(full_bar + stage);
    uint8_t *w_dst = smem + stage * stage_bytes + x_part_bytes;
    const int g0 = g_begin + st * G, count = min(G, g_end - g0);
    /* Armed before the copies are issued (a copy may complete at once);
     * the byte count of the preshuffled slice is known up front. Only the
     * last group can be narrow (K % 128 != 0): written by the warp, no tx. */
    const int last_width = min(128, p.K - (g0 + count - 1) * 128);
    const bool narrow = kPreshuffled && last_width < 128;
    const int full_groups = narrow ? count - 1 : count;
    const uint32_t w_bytes =
        (uint32_t)full_groups * (kPreshuffled ? (uint32_t)(avail0 + avail1) * 128 : (uint32_t)kWTileBytes);
    if (narrow) issue_w(w_dst + (count - 1) * kWTileBytes, g0 + count - 1, bar);
    __syncwarp();
    if (lane == 0) mbar_arrive_expect_tx(bar, w_bytes + (uint32_t)(count * x_tile_bytes));
    __syncwarp();
    for (int u = 0; u < full_groups; u++) issue_w(w_dst + u * kWTileBytes, g0 + u, bar);
    if (lane == 0) {
      if (st >= early) issue_x(stage, st);
      if (st == early - 1) {
        griddep_wait();
        for (int e = 0; e < early; e++) issue_x(e, e);
        SLICE_TRACE(kTraceXIssued);
      }
      SLICE_TRACE_GROUP(0, st);
    }
    __syncwarp();
    if (++stage == p.stages) {
      stage = 0;
      phase ^= 1;
    }
  }
  if (lane == 0) SLICE_TRACE(kTraceLastIssued);
}

/* Both kernels' start: the ring's mbarriers (full: the producer's one
 * arrival and the copies' bytes; empty: the 4 warps of the consuming
 * warpgroup), then the next kernel in the stream may launch. */
__device__ __forceinline__ void init_ring(uint64_t *full_bar, uint64_t *empty_bar, int stages) {
  if (threadIdx.x == 0) {
    for (int s = 0; s < stages; s++) {
      mbar_init(smem_addr(full_bar + s), 1);
      mbar_init(smem_addr(empty_bar + s), 4);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    fence_proxy_async();
  }
  __syncthreads();
  griddep_launch_dependents();
}

/* A consumer step's wgmmas, both kernels: for each of its G groups u, 4 x
 * wgmma m64nNk32 into part[u], A from a + u * a_stride, B from b + u *
 * b_stride (a short last step, count < G, issues group 0's into its unused
 * slots and the caller drops them: no conditional wgmma issue, which ptxas
 * serializes); one wait, then the stage goes back to the producer (the
 * warp's arrival on `empty`). */
template <int N, int G>
__device__ __forceinline__ void step_wgmmas(float (&part)[G][N / 2], uint32_t a, int a_stride,
                                            uint32_t b, int b_stride, int count, uint32_t empty,
                                            int lane) {
  wgmma_fence();
#pragma unroll
  for (int u = 0; u < G; u++) {
    const int v = u < count ? u : 0;
    const uint32_t au = a + v * a_stride, bu = b + v * b_stride;
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
      Wgmma<N>::run(part[u], smem_desc_sw128(au + kk * 32), smem_desc_sw128(bu + kk * 32), kk);
  }
  wgmma_commit();
  wgmma_wait_all();
  __syncwarp();
  if (lane == 0) mbar_arrive(empty);
}

template <int S, bool kPreshuffled>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_slice_kernel(const __grid_constant__ CUtensorMap map_x,
                      const __grid_constant__ CUtensorMap map_w, const SliceParams p) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t *smem = reinterpret_cast<uint8_t *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  constexpr int G = kGroupsPerStep<S>;
  constexpr int kWTileBytes = S * 128;
  const int x_tile_bytes = p.x_rows * 128;
  const int x_part_bytes = G * x_tile_bytes; /* a stage: G activation tiles, then G weight slices */
  const int stage_bytes = x_part_bytes + G * kWTileBytes;
  const int ring = p.stages * stage_bytes;
  const int reach = ring - stage_bytes + (G - 1) * x_tile_bytes + kARows * 128;
  const int steps = (p.groups + G - 1) / G; /* stages in all, a consumer step each */
  float *sx_table = reinterpret_cast<float *>(smem + (reach > ring ? reach : ring));
  float *sw_table = sx_table + p.groups * kARows;
  uint64_t *full_bar = reinterpret_cast<uint64_t *>(sw_table + 2 * p.groups);
  uint64_t *empty_bar = full_bar + p.stages;

  const int lane = threadIdx.x % 32;
  init_ring(full_bar, empty_bar, p.stages);

  const int r_start = blockIdx.x * S;
  /* The slice's rows lie in (at most) two 128-row blocks, from row a0 of
   * block b0 (produce_steps). */
  const int b0 = r_start / 128, a0 = r_start % 128;

  if (threadIdx.x < 128) {
    producer_release_registers();
    if (threadIdx.x >= 32) return;
    produce_steps<S, kPreshuffled, false>(p, &map_x, &map_w, smem, full_bar, empty_bar,
                                          x_tile_bytes, r_start, 0, p.groups, lane);
    return;
  }

  /* Consumers. */
  consumer_take_registers();
  griddep_wait(); /* scales and y come after the previous kernel */
  const int tid = threadIdx.x - 128;
  const int wg = tid / 128, t = tid % 128, warp = t / 32;
  const int gid = lane / 4, tig = lane % 4;
  /* Scales of every K group, once: sx(m, g) for the 64 rows A spans (0 past
   * M) and sw of the slice's (at most) two blocks. */
  {
    constexpr int kBatch = 8;
    const int entries = p.groups * kARows;
    for (int base = tid; base < entries; base += 256 * kBatch) {
      float v[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; u++) {
        const int i = base + u * 256, g = i / kARows, m = i % kARows;
        v[u] = i < entries && m < p.M
                   ? __ldg(p.x_scale + (size_t)m * p.sx_stride_m + (size_t)g * p.sx_stride_g)
                   : 0.0f;
      }
#pragma unroll
      for (int u = 0; u < kBatch; u++)
        if (base + u * 256 < entries) sx_table[base + u * 256] = v[u];
    }
    for (int i = tid; i < 2 * p.groups; i += 256) {
      const int g = i / 2, b = b0 + i % 2;
      sw_table[i] = b < p.block_rows ? __ldg(p.w_scale + (size_t)b * p.groups + g) : 0.0f;
    }
  }
  named_bar(1, 256);
  if (tid == 0) SLICE_TRACE(kTraceScalesRead);

  const uint32_t ring_s = smem_addr(smem);
  const uint32_t sx_s = smem_addr(sx_table), sw_s = smem_addr(sw_table);
  const int m0 = warp * 16 + gid; /* this thread's token rows: m0 and m0 + 8 */
  float acc[S / 2];
#pragma unroll
  for (int i = 0; i < S / 2; i++) acc[i] = 0.0f;
  /* Steps of one stage (G consecutive K groups), warpgroup w taking the
   * steps of parity w: a step's G x 4 wgmmas go out together into G
   * partials and one wait covers them (step_wgmmas). */
  for (int step = wg; step < steps; step += 2) {
    const int g0 = step * G, count = min(G, p.groups - g0);
    const int slot = step % p.stages;
    float sx0[G], sx1[G], sw_lo[G], sw_hi[G];
#pragma unroll
    for (int u = 0; u < G; u++) {
      const int g = g0 + (u < count ? u : 0);
      sx0[u] = lds_f32(sx_s + 4 * (g * kARows + m0));
      sx1[u] = lds_f32(sx_s + 4 * (g * kARows + m0 + 8));
      sw_lo[u] = lds_f32(sw_s + 4 * (2 * g));
      sw_hi[u] = lds_f32(sw_s + 4 * (2 * g + 1));
    }
    mbar_wait(smem_addr(full_bar + slot), (uint32_t)(step / p.stages) & 1u);
    if (t == 0) SLICE_TRACE_GROUP(1, step);
    if (t == 0 && step == 0) SLICE_TRACE(kTraceFirstData);
    if (t == 0 && step == steps - 1) SLICE_TRACE(kTraceLastData);
    float part[G][S / 2];
    const uint32_t stage_s = ring_s + slot * stage_bytes;
    step_wgmmas<S, G>(part, stage_s, x_tile_bytes, stage_s + x_part_bytes, kWTileBytes, count,
                      smem_addr(empty_bar + slot), lane);
    if (t == 0) SLICE_TRACE_GROUP(2, step);
    /* part[u][4j + e]: token m0 + 8 (e >> 1), slice row 8j + 2 tig + (e & 1),
     * which is in block b0 + 1 from slice row 128 - a0 on. */
#pragma unroll
    for (int u = 0; u < G; u++) {
      if (u >= count) break;
#pragma unroll
      for (int j = 0; j < S / 8; j++) {
        const float sw = a0 + 8 * j >= 128 ? sw_hi[u] : sw_lo[u];
        const float s0 = sx0[u] * sw, s1 = sx1[u] * sw;
        acc[4 * j + 0] = fmaf(part[u][4 * j + 0], s0, acc[4 * j + 0]);
        acc[4 * j + 1] = fmaf(part[u][4 * j + 1], s0, acc[4 * j + 1]);
        acc[4 * j + 2] = fmaf(part[u][4 * j + 2], s1, acc[4 * j + 2]);
        acc[4 * j + 3] = fmaf(part[u][4 * j + 3], s1, acc[4 * j + 3]);
      }
    }
  }

  /* Every copy has landed and every wgmma is done: the ring is free for
   * warpgroup 1's sums ([i][thread], conflict-free). */
  if (wg == 1 && t == 0) SLICE_TRACE(kTraceOddDone);
  named_bar(1, 256);
  const uint32_t hand = smem_addr(smem);
  if (wg == 1) {
#pragma unroll
    for (int i = 0; i < S / 2; i++) sts_f32(hand + 4 * (i * 128 + t), acc[i]);
  }
  named_bar(1, 256);
  if (wg == 1) return;
#pragma unroll
  for (int i = 0; i < S / 2; i++) acc[i] += lds_f32(hand + 4 * (i * 128 + t));
  const size_t elem = fp8gemm_dtype_size_device(p.y_dtype);
#pragma unroll
  for (int j = 0; j < S / 8; j++) {
    const int n = r_start + 8 * j + 2 * tig;
    if (n >= p.N) continue;
    const bool second = n + 1 < p.N;
    const float bias0 = p.bias ? __ldg(p.bias + n) : 0.0f;
    const float bias1 = p.bias && second ? __ldg(p.bias + n + 1) : 0.0f;
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int m = m0 + 8 * h;
      if (m >= p.M) continue;
      const size_t at = (size_t)m * p.ldy + n;
      const uintptr_t addr = (uintptr_t)p.y + at * elem;
      store_pair(p.y_dtype, p.y, at, acc[4 * j + 2 * h] + bias0, acc[4 * j + 2 * h + 1] + bias1,
                 second, addr % (2 * elem) == 0);
    }
  }
  if (t == 0) SLICE_TRACE(kTraceEnd);
}

/* Panels (weight as A): CTA c holds the 64 weight rows of panel c / P
 * (rows 64 (c / P) ..), over piece c % P of the K steps (P = p.pieces: 1,
 * or a cluster of P CTAs along x). The producer is the slices' with S =
 * 64; a step's G x 4 wgmma m64n(XR)k32 take the panel rows as A and the
 * activation tile (XR = 8 * ceil(M / 8) rows, exactly what the copy brings)
 * as B, into partials of 64 rows x XR tokens (XR / 2 floats a thread), so a
 * weight byte costs the tensor cores n = XR columns, not the 64 activation
 * rows A always spans in the slices. Each 64-row panel lies in one
 * 128-row weight-scale block: one sw(g) a group.
 *
 * Hand-off: each warpgroup puts its sums in its own shared memory area
 * ([token][64 rows], rows padded to kPanelRowFloats), the cluster meets,
 * and CTA rank r adds up its share of the (token, 8-row run) units over
 * the pieces in rank order, warpgroup 0 then 1 in each, and stores them
 * (16-byte stores along N): a fixed order, the same bits on every run. */
constexpr int kPanelRows = 64;
constexpr int kPanelRowFloats = 68; /* a warp's stores of one register: 32 banks */

/* K groups a panel's piece holds at most, its steps of G groups cut
 * evenly over `pieces`: what its scale tables are sized for, on the host
 * (panel_smem's plan) and in the kernel (the mbarriers' place) alike. */
__host__ __device__ constexpr int panel_max_groups(int groups, int pieces) {
  return ((groups + kGroupsPerStep<kPanelRows> - 1) / kGroupsPerStep<kPanelRows> + pieces - 1) /
         pieces * kGroupsPerStep<kPanelRows>;
}

/* A panel launch's scale tables: sx [max_groups][x_rows], sw [max_groups],
 * rounded up to 16 bytes (the mbarriers follow). */
__host__ __device__ constexpr int panel_tables_bytes(int x_rows, int max_groups) {
  return (max_groups * (x_rows + 1) * 4 + 15) / 16 * 16;
}

template <int XR, bool kPreshuffled>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_panel_kernel(const __grid_constant__ CUtensorMap map_x,
                      const __grid_constant__ CUtensorMap map_w, const SliceParams p) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t *smem = reinterpret_cast<uint8_t *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  constexpr int S = kPanelRows;
  constexpr int G = kGroupsPerStep<S>;
  constexpr int kWTileBytes = S * 128;
  constexpr int x_tile_bytes = XR * 128;
  constexpr int x_part_bytes = G * x_tile_bytes;
  constexpr int stage_bytes = x_part_bytes + G * kWTileBytes;
  const int panel = blockIdx.x / p.pieces, piece = blockIdx.x % p.pieces;
  const int all_steps = (p.groups + G - 1) / G;
  const int step_begin = piece * all_steps / p.pieces, step_end = (piece + 1) * all_steps / p.pieces;
  const int g_begin = step_begin * G, g_end = min(p.groups, step_end * G);
  const int groups = g_end - g_begin, steps = step_end - step_begin;
  const int max_groups = panel_max_groups(p.groups, p.pieces); /* the tables' size */
  float *sx_table = reinterpret_cast<float *>(smem + p.stages * stage_bytes);
  float *sw_table = sx_table + max_groups * XR;
  uint64_t *full_bar = reinterpret_cast<uint64_t *>(reinterpret_cast<uint8_t *>(sx_table) +
                                                    panel_tables_bytes(XR, max_groups));
  uint64_t *empty_bar = full_bar + p.stages;

  const int lane = threadIdx.x % 32;
  init_ring(full_bar, empty_bar, p.stages);

  const int r_start = panel * S;
  if (threadIdx.x < 128) {
    producer_release_registers();
    if (threadIdx.x >= 32) return;
    produce_steps<S, kPreshuffled, true>(p, &map_x, &map_w, smem, full_bar, empty_bar,
                                         x_tile_bytes, r_start, g_begin, g_end, lane);
    return;
  }

  /* Consumers. */
  consumer_take_registers();
  griddep_wait(); /* scales and y come after the previous kernel */
  const int tid = threadIdx.x - 128;
  const int wg = tid / 128, t = tid % 128, warp = t / 32;
  const int gid = lane / 4, tig = lane % 4;
  /* Scales of the piece's K groups, once: sx(m, g) for the XR tokens (0
   * past M), sw of the panel's block. */
  {
    const int entries = groups * XR;
    for (int i = tid; i < entries; i += 256) {
      const int g = g_begin + i / XR, m = i % XR;
      sx_table[i] =
          m < p.M ? __ldg(p.x_scale + (size_t)m * p.sx_stride_m + (size_t)g * p.sx_stride_g) : 0.0f;
    }
    const int b = r_start / 128;
    for (int i = tid; i < groups; i += 256) sw_table[i] = __ldg(p.w_scale + (size_t)b * p.groups + g_begin + i);
  }
  named_bar(1, 256);
  if (tid == 0) SLICE_TRACE(kTraceScalesRead);

  const uint32_t ring_s = smem_addr(smem);
  const uint32_t sx_s = smem_addr(sx_table), sw_s = smem_addr(sw_table);
  /* part[u][4j + e]: panel row warp * 16 + gid + 8 (e >> 1), token 8j + 2 tig + (e & 1). */
  float acc[XR / 2];
#pragma unroll
  for (int i = 0; i < XR / 2; i++) acc[i] = 0.0f;
  for (int step = wg; step < steps; step += 2) {
    const int gl0 = step * G, count = min(G, groups - gl0);
    const int slot = step % p.stages;
    float2 scale[G][XR / 8]; /* sx of tokens 8j + 2 tig, + 1 times sw */
#pragma unroll
    for (int u = 0; u < G; u++) {
      const int gl = gl0 + (u < count ? u : 0);
      const float sw = lds_f32(sw_s + 4 * gl);
#pragma unroll
      for (int j = 0; j < XR / 8; j++) {
        const uint32_t at = sx_s + 4 * (gl * XR + 8 * j + 2 * tig);
        scale[u][j] = make_float2(lds_f32(at) * sw, lds_f32(at + 4) * sw);
      }
    }
    mbar_wait(smem_addr(full_bar + slot), (uint32_t)(step / p.stages) & 1u);
    if (t == 0) SLICE_TRACE_GROUP(1, step);
    if (t == 0 && step == 0) SLICE_TRACE(kTraceFirstData);
    if (t == 0 && step == steps - 1) SLICE_TRACE(kTraceLastData);
    float part[G][XR / 2];
    const uint32_t stage_s = ring_s + slot * stage_bytes;
    step_wgmmas<XR, G>(part, stage_s + x_part_bytes, kWTileBytes, stage_s, x_tile_bytes, count,
                       smem_addr(empty_bar + slot), lane);
    if (t == 0) SLICE_TRACE_GROUP(2, step);
#pragma unroll
    for (int u = 0; u < G; u++) {
      if (u >= count) break;
#pragma unroll
      for (int j = 0; j < XR / 8; j++) {
        acc[4 * j + 0] = fmaf(part[u][4 * j + 0], scale[u][j].x, acc[4 * j + 0]);
        acc[4 * j + 1] = fmaf(part[u][4 * j + 1], scale[u][j].y, acc[4 * j + 1]);
        acc[4 * j + 2] = fmaf(part[u][4 * j + 2], scale[u][j].x, acc[4 * j + 2]);
        acc[4 * j + 3] = fmaf(part[u][4 * j + 3], scale[u][j].y, acc[4 * j + 3]);
      }
    }
  }
  if (wg == 1 && t == 0) SLICE_TRACE(kTraceOddDone);

  /* Every copy has landed and every wgmma is done once both warpgroups are
   * here: the ring holds the sums, [warpgroup][token][row]. */
  named_bar(1, 256);
  constexpr int kAreaBytes = XR * kPanelRowFloats * 4;
  const uint32_t sums = ring_s;
  const int r0 = warp * 16 + gid;
#pragma unroll
  for (int j = 0; j < XR / 8; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int m = 8 * j + 2 * tig + (e & 1);
      if (m < p.M)
        sts_f32(sums + wg * kAreaBytes + 4 * (m * kPanelRowFloats + r0 + 8 * (e >> 1)), acc[4 * j + e]);
    }
  if (p.pieces > 1) cluster_sync_all();
  else named_bar(1, 256);
  const int units = p.M * (S / 8); /* (token, run of 8 rows) */
  const int u_end = (piece + 1) * units / p.pieces;
  for (int u = piece * units / p.pieces + tid; u < u_end; u += 256) {
    const int m = u / (S / 8), c = u % (S / 8);
    const uint32_t at = sums + 4 * (m * kPanelRowFloats + 8 * c);
    float sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int q = 0; q < p.pieces; q++) {
      const uint32_t base = p.pieces > 1 ? cluster_map(at, (uint32_t)q) : at;
#pragma unroll
      for (int w = 0; w < 2; w++) {
        const float4 lo = ld_cluster_f4(base + w * kAreaBytes), hi = ld_cluster_f4(base + w * kAreaBytes + 16);
        sum[0] += lo.x; sum[1] += lo.y; sum[2] += lo.z; sum[3] += lo.w;
        sum[4] += hi.x; sum[5] += hi.y; sum[6] += hi.z; sum[7] += hi.w;
      }
    }
    const int n = r_start + 8 * c;
    if (n < p.N) store_run8(p.y_dtype, p.y, p.ldy, p.N, p.bias, m, n, sum);
  }
  if (p.pieces > 1) cluster_sync_all(); /* no CTA leaves while another reads its shared memory */
  if (t == 0 && wg == 0) SLICE_TRACE(kTraceEnd);
}

typedef void (*slice_kernel_fn)(const CUtensorMap, const CUtensorMap, const SliceParams);

template <int S>
slice_kernel_fn pick_layout(bool preshuffled) {
  return preshuffled ? gemm_slice_kernel<S, true> : gemm_slice_kernel<S, false>;
}

slice_kernel_fn kernel_for(int S, bool preshuffled) {
  switch (S) {
    case 8: return pick_layout<8>(preshuffled);
    case 16: return pick_layout<16>(preshuffled);
    case 24: return pick_layout<24>(preshuffled);
    case 32: return pick_layout<32>(preshuffled);
    case 40: return pick_layout<40>(preshuffled);
    case 48: return pick_layout<48>(preshuffled);
    case 56: return pick_layout<56>(preshuffled);
    case 64: return pick_layout<64>(preshuffled);
    case 96: return pick_layout<96>(preshuffled);
    case 128: return pick_layout<128>(preshuffled);
    case 192: return pick_layout<192>(preshuffled);
    default: return NULL;
  }
}

template <int XR>
slice_kernel_fn pick_panel_layout(bool preshuffled) {
  return preshuffled ? gemm_panel_kernel<XR, true> : gemm_panel_kernel<XR, false>;
}

constexpr int kPanelXRows[] = {8, 16, 32, 64};

slice_kernel_fn panel_kernel_for(int x_rows, bool preshuffled) {
  switch (x_rows) {
    case 8: return pick_panel_layout<8>(preshuffled);
    case 16: return pick_panel_layout<16>(preshuffled);
    case 32: return pick_panel_layout<32>(preshuffled);
    case 64: return pick_panel_layout<64>(preshuffled);
    default: return NULL;
  }
}

/* A panel launch's ring: stages of G groups' activation tiles and 64-row
 * weight slices (reads stay inside a stage), the scale tables of a
 * piece's (at most) max_groups groups. */
SliceSmem panel_smem(int x_rows, int max_groups, int want_stages) {
  const size_t stage = (size_t)kGroupsPerStep<kPanelRows> * (x_rows + kPanelRows) * 128;
  return ring_smem(stage, stage, (size_t)panel_tables_bytes(x_rows, max_groups), want_stages);
}

/* Pieces (one cluster) a 64-row panel's K steps are cut into, 0 where the
 * panels do not fit one wave: the most of 8, 4, 2 with panels x P <= SMs,
 * two steps a piece or more (one a consumer warpgroup) and every cluster
 * resident at once (the decode kernels' count: one CTA an SM, as here),
 * else 1. FP8GEMM_CUDA_PANEL_PIECES=P forces P where it fits. */
int panel_pieces(const fp8gemm_cuda_state *s, size_t N, size_t K) {
  const long long panels = (long long)((N + kPanelRows - 1) / kPanelRows);
  if (panels > s->sm_count) return 0;
  const int G = kGroupsPerStep<kPanelRows>;
  const long long steps = (long long)(((K + 127) / 128 + G - 1) / G);
  const char *env = getenv("FP8GEMM_CUDA_PANEL_PIECES");
  const int forced = env && *env ? atoi(env) : 0;
  for (int P = 8; P >= 2; P /= 2) {
    if (forced && P != forced) continue;
    if (panels * P <= s->sm_count && steps >= 2 * P && s->stream_max_clusters[P] >= panels) return P;
  }
  return 1;
}

/* Rows a CTA takes: the fewest (a multiple of 8 with a kernel) that cover
 * N with at most one CTA per SM; 0 if none does. */
int slice_rows(const fp8gemm_cuda_state *s, size_t N) {
  const long long units = (long long)((N + 7) / 8);
  const long long per_cta = (units + s->sm_count - 1) / s->sm_count;
  for (int i = 0; i < kWidthCount; i++)
    if (kWidths[i] >= 8 * per_cta) return kWidths[i];
  return 0;
}

int x_rows_for(size_t M) {
  int rows = 8;
  while ((size_t)rows < M) rows *= 2;
  return rows;
}

#ifdef FP8GEMM_CUDA_PROBES
constexpr int kTraceMaxCtas = 1024;
constexpr size_t kTraceEntries =
    (size_t)kTraceMaxCtas * kTraceSlots + 2 * kTraceGroupKinds * kMaxGroups;

/* FP8GEMM_CUDA_SLICE_TRACE=1 in a probe build (synchronizes): the last
 * launch's events, min/mean/max over the CTAs in us from the first
 * producer's start, then the two traced CTAs' steps (of G groups; `steps`
 * a CTA): issued, seen, wgmmas done. */
fp8gemm_status print_slice_trace(fp8gemm_cuda_state *s, const SliceParams &p, int ctas, int G,
                                 int steps) {
  static unsigned long long host[kTraceEntries];
  FP8GEMM_CUDA_TRY(cudaMemcpyAsync(host, p.trace, sizeof host, cudaMemcpyDeviceToHost, s->stream),
                   "slice trace");
  FP8GEMM_CUDA_TRY(cudaStreamSynchronize(s->stream), "slice trace");
  static const char *names[kTraceSlots] = {"producer start", "x issued", "last issued",
                                           "scales read", "first data", "last data",
                                           "odd steps done", "end"};
  static const int order[kTraceSlots] = {0, 1, 2, 3, 4, 5, 6, 7};
  fprintf(stderr, "slice trace N=%d K=%d M=%d ctas=%d stages=%d:", p.N, p.K, p.M, ctas, p.stages);
  const unsigned long long origin =
      fp8gemm_cuda_print_trace_events(host, ctas, kTraceSlots, order, names, kTraceSlots);
  fprintf(stderr, "\n");
  for (int which = 0; which < 2; which++) {
    const unsigned long long *g =
        host + (size_t)ctas * kTraceSlots + (size_t)which * kTraceGroupKinds * kMaxGroups;
    fprintf(stderr, "slice trace CTA %d stages of %d groups (issued/seen/wgmmas done us):",
            which ? ctas / 2 : 0, G);
    for (int k = 0; k < steps; k++)
      fprintf(stderr, " %.2f/%.2f/%.2f", ((double)g[k] - (double)origin) / 1000.0,
              ((double)g[kMaxGroups + k] - (double)origin) / 1000.0,
              ((double)g[2 * kMaxGroups + k] - (double)origin) / 1000.0);
    fprintf(stderr, "\n");
  }
  return FP8GEMM_OK;
}
#endif

}  // namespace

/* Whether the panels run by default (the decode dispatch, slices_chosen in
 * gemm_stream.cu, sends these launches here): their pieces, 0 if not.
 * Measured on the H100 (session 20, two runs,
 * bench/results/cuda-h100-2026-12-08-s20.md; graphs, weights rotated past
 * L2; panels against the best other decode kernel, plain / preshuffled,
 * us):
 *  - one piece a panel, the panels alone filling 80% of the SMs (N = 7168:
 *    112 CTAs on 132): 7168 x 2048 faster at every M measured (M = 1 6.5 /
 *    6.9 against 6.9 / 7.1, 32 7.2 / 7.4 against 8.7 / 8.7, 64 7.8 / 8.3
 *    against 8.3 / 8.7); 7168 x 16384 plain at M <= 32 (M = 1 38.3 against
 *    40.0, 16 38.9 against 40.8, 32 39.5 against 41.8), preshuffled at M =
 *    1 only (38.7 against 39.8; M = 16 45.6 against 40.5, not understood),
 *    at M = 64 a tie plain (42.4 / 42.2) and slower preshuffled (46.4 /
 *    44.3): every M up to 32 K groups, else plain at M <= 32 and
 *    preshuffled at M = 1;
 *  - cut over clusters (4096 x 7168: 64 panels x 2; 2112 x 7168: 33 x 2):
 *    slower at M <= 16 (4096 x 7168 M = 1 12.5 / 12.8 against the 128-row
 *    kernel's 11.9 / 11.6); faster at M = 32 (13.0 / 13.5 against 13.8 /
 *    13.6; 9.6 / 9.7 against 10.7 / 10.6); at M = 64 preshuffled (15.2
 *    against 16.4; 12.1 against 14.2) but not plain on 4096 x 7168 (15.5
 *    against the slices' 14.1): M = 17..32, and preshuffled M = 33..64. */
int panels_preferred(const fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *prob) {
  const int pieces = panel_pieces(s, prob->N, prob->K);
  if (!pieces) return 0;
  const size_t groups = (prob->K + 127) / 128;
  if (pieces == 1) {
    const long long ctas = (long long)((prob->N + kPanelRows - 1) / kPanelRows);
    if (ctas * 10 < (long long)s->sm_count * 8) return 0;
    if (groups <= 32) return 1;
    return (prob->w_preshuffled ? prob->M == 1 : prob->M <= 32) ? 1 : 0;
  }
  if (prob->M <= 16) return 0;
  return prob->M <= 32 || prob->w_preshuffled ? pieces : 0;
}

/* Whether a launch of this file takes the panels (weight as A) over the
 * row slices: FP8GEMM_CUDA_SLICE_PANEL=1 wherever they fit, 0 never, else
 * panels_preferred. Returns the pieces (panel_pieces), 0 for the slices. */
int panels_chosen(const fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *prob) {
  const char *env = getenv("FP8GEMM_CUDA_SLICE_PANEL");
  if (env && *env == '1') return panel_pieces(s, prob->N, prob->K);
  if (env && *env == '0') return 0;
  return panels_preferred(s, prob);
}

extern "C" fp8gemm_status fp8gemm_cuda_slice_prepare(fp8gemm_cuda_state *s) {
  (void)s;
  for (int i = 0; i < kWidthCount; i++)
    for (int pre = 0; pre < 2; pre++)
      FP8GEMM_CUDA_TRY(cudaFuncSetAttribute(reinterpret_cast<const void *>(kernel_for(kWidths[i], pre)),
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            kSmemBudget),
                       "decode GEMM (row slices): shared-memory limit");
  for (int x_rows : kPanelXRows)
    for (int pre = 0; pre < 2; pre++)
      FP8GEMM_CUDA_TRY(cudaFuncSetAttribute(reinterpret_cast<const void *>(panel_kernel_for(x_rows, pre)),
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            kSmemBudget),
                       "decode GEMM (panels): shared-memory limit");
  return FP8GEMM_OK;
}

extern "C" int fp8gemm_cuda_slice_supported(const fp8gemm_cuda_state *s,
                                            const fp8gemm_cuda_problem *p) {
  if (!s->encode_tiled || p->fused || p->M == 0 || p->M > kMaxM) return 0;
  if (p->N > 0x7fffffffu || p->K % 16 != 0 || (p->K + 127) / 128 > (size_t)kMaxGroups) return 0;
  if ((uintptr_t)p->w % 16 != 0 || (uintptr_t)p->xq % 16 != 0 || p->ldq % 16 != 0) return 0;
  const int S = slice_rows(s, p->N);
  if (!S) return 0;
  /* A ring of at least one stage a consumer warpgroup fits. */
  return slice_smem(S, x_rows_for(p->M), (int)((p->K + 127) / 128), 0).stages >= kMinStages;
}

extern "C" int fp8gemm_cuda_slice_ring(int S, int x_rows, int groups, int want_stages,
                                       size_t *smem_bytes) {
  const SliceSmem layout = slice_smem(S, x_rows, groups, want_stages);
  if (smem_bytes) *smem_bytes = layout.stages > 0 ? layout.total : 0;
  return layout.stages;
}

extern "C" int fp8gemm_cuda_panels_preferred(const fp8gemm_cuda_state *s,
                                             const fp8gemm_cuda_problem *p) {
  return fp8gemm_cuda_slice_supported(s, p) && panels_preferred(s, p) > 0;
}

extern "C" int fp8gemm_cuda_panel_ring(int x_rows, int max_groups, int want_stages,
                                       size_t *smem_bytes, size_t *ring_bytes,
                                       size_t *handoff_bytes) {
  const SliceSmem layout = panel_smem(x_rows, max_groups, want_stages);
  if (smem_bytes) *smem_bytes = layout.stages > 0 ? layout.total : 0;
  if (ring_bytes) *ring_bytes = layout.stages > 0 ? layout.ring : 0;
  if (handoff_bytes) *handoff_bytes = (size_t)2 * x_rows * kPanelRowFloats * 4;
  return layout.stages;
}

extern "C" int fp8gemm_cuda_slice_rows(const fp8gemm_cuda_state *s, size_t N) {
  return slice_rows(s, N);
}

extern "C" fp8gemm_status fp8gemm_cuda_gemm_slice(fp8gemm_cuda_state *s,
                                                  const fp8gemm_cuda_problem *prob) {
  if (!fp8gemm_cuda_slice_supported(s, prob))
    return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                             "decode GEMM (row slices): no kernel for M=%zu N=%zu K=%zu", prob->M,
                             prob->N, prob->K);
  SliceParams p;
  p.w = prob->w;
  p.w_scale = prob->w_scale;
  p.N = (int)prob->N;
  p.K = (int)prob->K;
  p.groups = (int)((prob->K + 127) / 128);
  p.block_rows = (int)((prob->N + 127) / 128);
  p.x_scale = prob->x_scale;
  p.sx_stride_m = prob->scale_stride_m;
  p.sx_stride_g = prob->scale_stride_g;
  p.bias = prob->bias;
  p.y = prob->y;
  p.ldy = prob->ldy;
  p.y_dtype = prob->y_dtype;
  p.M = (int)prob->M;
  p.x_rows = x_rows_for(prob->M);
  const char *evict = getenv("FP8GEMM_CUDA_STREAM_EVICT");
  p.evict_first = !(evict && *evict == '0');
  const int pieces = panels_chosen(s, prob);
  /* Weight rows a CTA copies: the panels' or the slice width. */
  const int S = pieces ? kPanelRows : slice_rows(s, prob->N);
  p.pieces = pieces ? pieces : 1;
  /* Benchmark knob, read per call (host only): a shallower ring (rounded
   * down to an even count, see ring_smem). */
  const char *env = getenv("FP8GEMM_CUDA_SLICE_STAGES");
  const int want = env && *env ? atoi(env) : 0;
  const SliceSmem layout = pieces ? panel_smem(p.x_rows, panel_max_groups(p.groups, pieces), want)
                                  : slice_smem(S, p.x_rows, p.groups, want);
  if (layout.stages < 1)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "FP8GEMM_CUDA_SLICE_STAGES=%s: no ring fits", env ? env : "");
  p.stages = layout.stages;
  const int ctas = pieces ? (int)((prob->N + kPanelRows - 1) / kPanelRows) * pieces
                          : (int)((prob->N + S - 1) / S);
  p.trace = NULL;
#ifdef FP8GEMM_CUDA_PROBES
  const char *trace = getenv("FP8GEMM_CUDA_SLICE_TRACE");
  if (trace && *trace == '1' && ctas <= kTraceMaxCtas)
    FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_trace_buffer(s, kTraceEntries, &p.trace));
#endif
  CUtensorMap map_x, map_w;
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_encode_2d(s, &map_x, CU_TENSOR_MAP_DATA_TYPE_UINT8,
                                                 prob->xq, prob->K, prob->M, prob->ldq, 128,
                                                 (unsigned)p.x_rows, "decode GEMM (row slices) xq"));
  if (!prob->w_preshuffled)
    FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_encode_2d(s, &map_w, CU_TENSOR_MAP_DATA_TYPE_UINT8,
                                                   prob->w, prob->K, prob->N, prob->K, 128,
                                                   (unsigned)S, "decode GEMM (row slices) weight"));
  else
    map_w = map_x; /* unused: bulk copies */
  const bool pre = prob->w_preshuffled != 0;
  fp8gemm_cuda_launch launch;
  fp8gemm_cuda_launch_init(&launch, s, (unsigned)ctas, kThreads, layout.total,
                           (unsigned)p.pieces, 0);
  FP8GEMM_CUDA_TRY(cudaLaunchKernelEx(&launch.config,
                                      pieces ? panel_kernel_for(p.x_rows, pre) : kernel_for(S, pre),
                                      map_x, map_w, p),
                   "decode GEMM (row slices) kernel launch");
  FP8GEMM_CUDA_TRY(cudaGetLastError(), "decode GEMM (row slices) kernel launch");
#ifdef FP8GEMM_CUDA_PROBES
  if (p.trace) {
    /* K groups a step holds, and steps a CTA (at most). */
    const int G = groups_per_step(S);
    const int steps = (pieces ? panel_max_groups(p.groups, pieces) : p.groups + G - 1) / G;
    FP8GEMM_RETURN_IF_ERROR(print_slice_trace(s, p, ctas, G, steps));
  }
#endif
  return FP8GEMM_OK;
}
