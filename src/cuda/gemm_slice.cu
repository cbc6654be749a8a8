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
 * ring's end is padded). */
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

SliceSmem slice_smem(int S, int x_rows, int groups, int want_stages) {
  SliceSmem l;
  if (want_stages > 0 && want_stages < kMinStages) want_stages = kMinStages;
  const int G = groups_per_step(S);
  l.stage_bytes = (size_t)G * (x_rows + S) * 128;
  l.tables = (size_t)groups * (kARows + 2) * 4;
  l.stages = 0;
  for (int st = kMaxStages; st >= kMinStages; st -= 2) {
    if (want_stages > 0 && st > want_stages) continue;
    const size_t ring = st * l.stage_bytes;
    /* The last stage's last A operand reads 64 rows from its start. */
    const size_t reach = ring - l.stage_bytes + (size_t)(G - 1) * x_rows * 128 + (size_t)kARows * 128;
    const size_t pad = reach > ring ? reach - ring : 0;
    const size_t total = 1024 + ring + pad + l.tables + (size_t)st * 16;
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
  if (threadIdx.x == 0) {
    for (int s = 0; s < p.stages; s++) {
      mbar_init(smem_addr(full_bar + s), 1);
      mbar_init(smem_addr(empty_bar + s), 4); /* the 4 warps of the consuming warpgroup */
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    fence_proxy_async();
  }
  __syncthreads();
  griddep_launch_dependents();

  const int r_start = blockIdx.x * S;
  /* The slice's rows lie in (at most) two 128-row blocks: rows_dst0 of them
   * from row a0 of block b0 (stage rows 0..), the other rows_dst1 from row 0
   * of block b0 + 1 (past N: fewer, avail0 / avail1 below). */
  const int b0 = r_start / 128, a0 = r_start % 128;
  const int rows_dst0 = min(S, 128 - a0), rows_dst1 = S - rows_dst0;

  if (threadIdx.x < 128) {
    producer_release_registers();
    if (threadIdx.x >= 32) return;
    SLICE_TRACE(kTraceProducerStart);
    const uint64_t policy = l2_policy_evict_first();
    const int rows_b0 = min(128, p.N - b0 * 128);
    const int avail0 = min(rows_dst0, rows_b0 - a0);
    const int b1 = b0 + 1;
    const int avail1 = rows_dst1 > 0 && b1 < p.block_rows ? min(rows_dst1, min(128, p.N - b1 * 128)) : 0;
    /* Weight copies of the first ring's worth go out before the wait for the
     * previous kernel (the weight is read-only while a handle lives). */
    const int early = min(p.stages, steps);
    /* The copies (or, narrow, the stores) of group g's slice into dst; the
     * bytes they bring are armed by the caller first. */
    auto issue_w = [&](uint8_t *dst, int g, uint32_t bar) {
      if (!kPreshuffled) {
        if (lane == 0) {
          if (p.evict_first) tma_load_2d_hint(smem_addr(dst), &map_w, g * 128, r_start, bar, policy);
          else tma_load_2d(smem_addr(dst), &map_w, g * 128, r_start, bar);
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
      const int g0 = st * G, count = min(G, p.groups - g0);
      for (int u = 0; u < count; u++)
        tma_load_2d(dst + u * x_tile_bytes, &map_x, (g0 + u) * 128, 0, bar);
    };
    int stage = 0;
    uint32_t phase = 0;
    for (int st = 0; st < steps; st++) {
      mbar_wait(smem_addr(empty_bar + stage), phase ^ 1);
      const uint32_t bar = smem_addr(full_bar + stage);
      uint8_t *w_dst = smem + stage * stage_bytes + x_part_bytes;
      const int g0 = st * G, count = min(G, p.groups - g0);
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
   * partials and one wait covers them. A short last step issues group g0's
   * wgmmas into its unused slots (no conditional wgmma issue, which ptxas
   * serializes) and drops them. */
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
    wgmma_fence();
#pragma unroll
    for (int u = 0; u < G; u++) {
      const int v = u < count ? u : 0;
      const uint32_t a = stage_s + v * x_tile_bytes, b = stage_s + x_part_bytes + v * kWTileBytes;
#pragma unroll
      for (int kk = 0; kk < 4; kk++)
        Wgmma<S>::run(part[u], smem_desc_sw128(a + kk * 32), smem_desc_sw128(b + kk * 32), kk);
    }
    wgmma_commit();
    wgmma_wait_all();
    if (t == 0) SLICE_TRACE_GROUP(2, step);
    __syncwarp();
    if (lane == 0) mbar_arrive(smem_addr(empty_bar + slot));
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
 * producer's start, then the two traced CTAs' stages (issued / seen). */
fp8gemm_status print_slice_trace(fp8gemm_cuda_state *s, const SliceParams &p, int ctas, int S) {
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
  const int G = groups_per_step(S), steps = (p.groups + G - 1) / G;
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

extern "C" fp8gemm_status fp8gemm_cuda_slice_prepare(fp8gemm_cuda_state *s) {
  (void)s;
  for (int i = 0; i < kWidthCount; i++)
    for (int pre = 0; pre < 2; pre++)
      FP8GEMM_CUDA_TRY(cudaFuncSetAttribute(reinterpret_cast<const void *>(kernel_for(kWidths[i], pre)),
                                            cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            kSmemBudget),
                       "decode GEMM (row slices): shared-memory limit");
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

extern "C" int fp8gemm_cuda_slice_rows(const fp8gemm_cuda_state *s, size_t N) {
  return slice_rows(s, N);
}

extern "C" fp8gemm_status fp8gemm_cuda_gemm_slice(fp8gemm_cuda_state *s,
                                                  const fp8gemm_cuda_problem *prob) {
  if (!fp8gemm_cuda_slice_supported(s, prob))
    return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                             "decode GEMM (row slices): no kernel for M=%zu N=%zu K=%zu", prob->M,
                             prob->N, prob->K);
  const int S = slice_rows(s, prob->N);
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
  /* Benchmark knob, read per call (host only): a shallower ring (rounded
   * down to an even count, see slice_smem). */
  const char *env = getenv("FP8GEMM_CUDA_SLICE_STAGES");
  const int want = env && *env ? atoi(env) : 0;
  const SliceSmem layout = slice_smem(S, p.x_rows, p.groups, want);
  if (layout.stages < 1)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "FP8GEMM_CUDA_SLICE_STAGES=%s: no ring fits", env ? env : "");
  p.stages = layout.stages;
  const int ctas = (int)((prob->N + S - 1) / S);
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
  fp8gemm_cuda_launch launch;
  fp8gemm_cuda_launch_init(&launch, s, (unsigned)ctas, kThreads, layout.total, 1, 0);
  FP8GEMM_CUDA_TRY(cudaLaunchKernelEx(&launch.config, kernel_for(S, prob->w_preshuffled != 0), map_x,
                                      map_w, p),
                   "decode GEMM (row slices) kernel launch");
  FP8GEMM_CUDA_TRY(cudaGetLastError(), "decode GEMM (row slices) kernel launch");
#ifdef FP8GEMM_CUDA_PROBES
  if (p.trace) FP8GEMM_RETURN_IF_ERROR(print_slice_trace(s, p, ctas, S));
#endif
  return FP8GEMM_OK;
}
