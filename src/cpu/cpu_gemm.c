/* The CPU GEMM drivers, one per regime, each for weight layouts plain and
 * preshuffled_cpu:
 *
 *  - small M (M <= crossover): GEMV-style. The weight is streamed once and
 *    decoded on the fly; x is decoded once per call. Threads claim chunks of
 *    16-row panels. Preshuffled panels give 16 outputs per 16 bytes read
 *    (outer products, no horizontal sums); plain rows give dot products
 *    along K.
 *  - large M: BLIS-style loops (jc over N by NC, pc over K by KC = two scale
 *    groups, ic over M by MC) around a 6x16 FMA micro-kernel. B panels are
 *    decoded to fp32 once per (jc, pc) and reused by every row block (or,
 *    with a single row block, right before use in an L1-sized slot); A (xq)
 *    is decoded per (jc, pc, ic). Preshuffled panels decode as one
 *    contiguous stream; plain rows need a 16x16 byte transpose and read 16
 *    strided pieces per panel. Threads claim units of the output (see
 *    plan_units).
 *
 * Nothing is allocated when the workspace is large enough
 * (cpu_gemm_workspace); no decoded copy of the weight outlives a call. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

#define GROUP FP8GEMM_BLOCK
#define ALIGN 64

static size_t align_up(size_t v) { return (v + ALIGN - 1) & ~(size_t)(ALIGN - 1); }
static size_t round_up(size_t v, size_t m) { return (v + m - 1) / m * m; }
static size_t min_size(size_t a, size_t b) { return a < b ? a : b; }


size_t cpu_crossover_m(const fp8gemm_weight *w) {
  if (w->crossover_m != FP8GEMM_CROSSOVER_DEFAULT) return w->crossover_m;
  return w->layout == FP8GEMM_LAYOUT_PLAIN ? CPU_DEFAULT_CROSSOVER_M_PLAIN
                                           : CPU_DEFAULT_CROSSOVER_M_PRESHUFFLED;
}

/* The GEMV kernels decode the weight once per 6 rows of x: past a few
 * dozen rows that always loses, whatever a tuned table says, so they are
 * capped (which also bounds their workspace, M * K floats). */
#define CPU_SMALL_M_MAX 64

static bool use_small_m(const fp8gemm_weight *w, size_t M) {
  return M <= cpu_crossover_m(w) && M <= CPU_SMALL_M_MAX;
}

fp8gemm_scale_layout cpu_gemm_scale_layout(const fp8gemm_context *ctx, const fp8gemm_weight *w,
                                           size_t M) {
  (void)ctx;
  (void)w;
  (void)M;
  /* The kernels read either layout while packing; row-major is what the
   * quantizer writes fastest. */
  return FP8GEMM_SCALE_ROW_MAJOR;
}

static inline float x_scale_at(const fp8gemm_gemm_args *a, size_t m, size_t g) {
  return a->scale_layout == FP8GEMM_SCALE_ROW_MAJOR ? a->x_scale[m * a->scale_ld + g]
                                                     : a->x_scale[g * a->scale_ld + m];
}

/* ---- workspace plans --------------------------------------------------------- */

typedef struct small_plan {
  size_t xd_offset, xs_offset, panel_offset, total;
} small_plan;

static small_plan plan_small(const fp8gemm_weight *w, size_t M) {
  const size_t groups = fp8gemm_ceil_div(w->K, GROUP);
  small_plan p;
  p.xd_offset = 0;
  p.xs_offset = p.xd_offset + align_up(M * w->K * sizeof(float));
  p.panel_offset = p.xs_offset + align_up(M * groups * sizeof(float));
  /* A zero-padded copy of a partial last preshuffled panel. */
  p.total = p.panel_offset + align_up(w->N % 16 ? 16 * w->K : 0);
  return p;
}

typedef struct large_plan {
  size_t kc, mc, nc, mchunk, nc_scratch;
  size_t a_offset, as_offset, b_offset, c_offset, per_thread;
} large_plan;

static large_plan plan_large(const fp8gemm_weight *w, size_t M) {
  large_plan p;
  p.kc = min_size(CPU_GEMM_KC, w->K);
  p.mc = min_size(CPU_GEMM_MC, round_up(M, CPU_GEMM_MR));
  p.nc = min_size(CPU_GEMM_NC, round_up(w->N, CPU_GEMM_NR));
  p.mchunk = min_size(CPU_GEMM_MCHUNK, round_up(M, CPU_GEMM_MR));
  p.nc_scratch = min_size(CPU_GEMM_NC_SCRATCH, round_up(w->N, CPU_GEMM_NR));
  const size_t groups_per_kc = fp8gemm_ceil_div(p.kc, GROUP);
  p.a_offset = 0;
  p.as_offset = p.a_offset + align_up(p.mc * p.kc * sizeof(float));
  p.b_offset = p.as_offset + align_up(p.mc * groups_per_kc * sizeof(float));
  p.c_offset = p.b_offset + align_up(p.kc * p.nc * sizeof(float));
  /* fp32 accumulators for 16-bit outputs (the interface does not tell the
   * output type here, so it is always reserved). */
  p.per_thread = p.c_offset + align_up(p.mchunk * p.nc_scratch * sizeof(float));
  return p;
}

size_t cpu_gemm_workspace(const fp8gemm_context *ctx, const fp8gemm_weight *w, size_t M) {
  if (use_small_m(w, M)) return plan_small(w, M).total + ALIGN;
  return (size_t)cpu_state_of(ctx)->num_threads * plan_large(w, M).per_thread + ALIGN;
}

/* ---- small M -------------------------------------------------------------------- */

typedef struct small_job {
  const cpu_state *st;
  const fp8gemm_weight *w;
  const fp8gemm_gemm_args *args;
  const float *xd, *xs;
  const uint8_t *padded_panel;
  atomic_size_t next_panel; /* panels are claimed in chunks */
} small_job;

/* One 16-row panel of outputs for all M rows (in chunks of up to 6). */
static void small_panel(const small_job *job, size_t p) {
  const cpu_kernels *kern = job->st->kernels;
  const fp8gemm_weight *w = job->w;
  const fp8gemm_gemm_args *a = job->args;
  const size_t N = w->N, K = w->K, M = a->M, groups = fp8gemm_ceil_div(K, GROUP);
  const size_t y_elem = fp8gemm_dtype_size(a->y_dtype);
  const size_t n0 = p * 16, rows = min_size(16, N - n0);
  const float *ws = w->scale_inv + (n0 / GROUP) * groups;
  float out[CPU_GEMV_MAX_ROWS * 16];
  for (size_t m0 = 0; m0 < M; m0 += CPU_GEMV_MAX_ROWS) {
    const size_t R = min_size(CPU_GEMV_MAX_ROWS, M - m0);
    const float *xd = job->xd + m0 * K, *xs = job->xs + m0 * groups;
    if (w->layout == FP8GEMM_LAYOUT_PRESHUFFLED_CPU) {
      const uint8_t *panel = rows == 16 ? w->data + p * 16 * K : job->padded_panel;
      kern->gemv_preshuffled(R, K, panel, xd, K, xs, groups, ws, out, job->st->decode_lut);
      kern->store_tile(R, rows, out, 16, w->bias ? w->bias + n0 : NULL, a->y_dtype,
                       (char *)a->y + (m0 * a->ldy + n0) * y_elem, a->ldy);
      continue;
    }
    for (size_t j0 = 0; j0 < rows; j0 += CPU_GEMV_PLAIN_WROWS) {
      const size_t wrows = min_size(CPU_GEMV_PLAIN_WROWS, rows - j0);
      kern->gemv_plain(R, wrows, K, w->data + (n0 + j0) * K, K, xd, K, xs, groups, ws, out,
                       job->st->decode_lut);
      kern->store_tile(R, wrows, out, CPU_GEMV_PLAIN_WROWS, w->bias ? w->bias + n0 + j0 : NULL,
                       a->y_dtype, (char *)a->y + (m0 * a->ldy + n0 + j0) * y_elem, a->ldy);
    }
  }
}

static void small_task(void *opaque, int thread, int threads) {
  small_job *job = opaque;
  (void)thread;
  const size_t panels = fp8gemm_ceil_div(job->w->N, 16);
  /* ~8 chunks per thread: a thread slowed by another process on its core
   * hands work to the others instead of holding everyone up. */
  const size_t chunk = panels / ((size_t)threads * 8) + 1;
  size_t p_begin, p_end;
  while (cpu_claim(&job->next_panel, chunk, panels, &p_begin, &p_end))
    for (size_t p = p_begin; p < p_end; p++) small_panel(job, p);
}

static void run_small(cpu_state *st, const fp8gemm_weight *w, const fp8gemm_gemm_args *a,
                      uint8_t *ws) {
  const size_t K = w->K, M = a->M, groups = fp8gemm_ceil_div(K, GROUP);
  const small_plan plan = plan_small(w, M);
  float *xd = (float *)(ws + plan.xd_offset), *xs = (float *)(ws + plan.xs_offset);
  for (size_t m = 0; m < M; m++) {
    st->kernels->decode_row(K, a->xq + m * a->ldq, xd + m * K, st->decode_lut);
    for (size_t g = 0; g < groups; g++) xs[m * groups + g] = x_scale_at(a, m, g);
  }
  uint8_t *padded = NULL;
  if (w->layout == FP8GEMM_LAYOUT_PRESHUFFLED_CPU && w->N % 16) {
    const size_t rows = w->N % 16;
    const uint8_t *last = w->data + (w->N / 16) * 16 * K;
    padded = ws + plan.panel_offset;
    for (size_t k = 0; k < K; k++) {
      memcpy(padded + k * 16, last + k * rows, rows);
      memset(padded + k * 16 + rows, 0, 16 - rows);
    }
  }
  small_job job = {st, w, a, xd, xs, padded, 0};
  atomic_init(&job.next_panel, 0);
  const size_t panels = fp8gemm_ceil_div(w->N, 16);
  /* Below ~1 MFLOP a wake-up of the workers costs more than it saves. */
  const double work = (double)M * (double)w->N * (double)K;
  size_t want = work < 524288.0 ? 1 : min_size((size_t)st->num_threads, panels);
  cpu_pool_run(st->pool, (int)want, small_task, &job);
}

/* ---- large M -------------------------------------------------------------------- */

typedef struct large_job {
  const cpu_state *st;
  const fp8gemm_weight *w;
  const fp8gemm_gemm_args *args;
  large_plan plan;
  uint8_t *ws;
  atomic_size_t next_unit;
} large_job;

/* The output is cut into units (a row range x a column range) that the
 * threads claim one at a time. Each unit decodes its own A rows and B
 * columns, so units are wide: >= 256 columns (A is decoded once per 256+
 * columns, under 1% of the FMAs), up to 4 per thread; rows are split only
 * when there are too few column units to go round. A thread slowed down by
 * another process takes fewer units. Every output element is computed the
 * same way whatever the cut (same K blocks), so results do not depend on
 * the thread count. */
typedef struct unit_plan {
  size_t row_units, col_units; /* unit (r, c): row tiles and panels split evenly */
} unit_plan;

static unit_plan plan_units(size_t M, size_t N, int threads) {
  unit_plan u;
  const size_t row_tiles = fp8gemm_ceil_div(M, CPU_GEMM_MR);
  const size_t t = (size_t)threads;
  /* Large M: 2 units per thread (each decodes all of A once more); else 4,
   * for balance when a thread is slowed down. */
  const size_t per_thread = M >= 1024 ? 2 : 4;
  u.col_units = min_size(fp8gemm_ceil_div(N, 256), per_thread * t);
  if (u.col_units == 0) u.col_units = 1;
  u.row_units = 1;
  if (u.col_units < 2 * t)
    u.row_units = min_size(fp8gemm_ceil_div(M, CPU_GEMM_MC),
                           fp8gemm_ceil_div(per_thread * t, u.col_units));
  if (u.row_units == 0) u.row_units = 1;
  if (u.row_units > row_tiles) u.row_units = row_tiles;
  return u;
}

/* Start of part `i` of `parts` near-equal parts of [0, count). */
static size_t part_start(size_t count, size_t parts, size_t i) { return count * i / parts; }

/* A micro-panel: rows m0.. (mr <= 6) of xq, columns k0..k0+kc, decoded
 * into a[6][kc] (row by row, the same fast decoder as everywhere); its
 * scales into as[g][6]. Missing rows are zero. */
static void pack_a(const large_job *job, size_t m0, size_t mr, size_t k0, size_t kc, float *ap,
                   float *as) {
  const fp8gemm_gemm_args *a = job->args;
  for (size_t i = 0; i < mr; i++)
    job->st->kernels->decode_row(kc, a->xq + (m0 + i) * a->ldq + k0, ap + i * kc,
                                 job->st->decode_lut);
  if (mr < CPU_GEMM_MR) memset(ap + mr * kc, 0, (CPU_GEMM_MR - mr) * kc * sizeof(float));
  const size_t g0 = k0 / GROUP, ng = fp8gemm_ceil_div(kc, GROUP);
  for (size_t g = 0; g < ng; g++)
    for (size_t i = 0; i < CPU_GEMM_MR; i++)
      as[g * CPU_GEMM_MR + i] = i < mr ? x_scale_at(a, m0 + i, g0 + g) : 0.0f;
}

static void prefetch_plain_panel(const fp8gemm_weight *w, size_t n0, size_t pc, size_t kc) {
  const size_t rows = min_size(16, w->N - n0);
  for (size_t r = 0; r < rows; r++)
    for (size_t k = 0; k < kc; k += 64) __builtin_prefetch(w->data + (n0 + r) * w->K + pc + k);
}

/* Decodes columns pc..pc+kc of the 16-row panel at n0 into b[kc][16]. */
static void pack_b_panel(const large_job *job, size_t n0, size_t pc, size_t kc, float *b) {
  const fp8gemm_weight *w = job->w;
  const size_t rows = min_size(16, w->N - n0);
  if (w->layout == FP8GEMM_LAYOUT_PLAIN)
    job->st->kernels->pack_b_plain(kc, rows, w->data + n0 * w->K + pc, w->K, b, job->st->decode_lut);
  else
    job->st->kernels->pack_b_preshuffled(kc, rows, w->data + n0 * w->K + pc * rows, b,
                                         job->st->decode_lut);
}

static void run_large_block(const large_job *job, size_t m_lo, size_t m_hi, size_t p_lo,
                            size_t p_hi, uint8_t *ws) {
  const cpu_kernels *kern = job->st->kernels;
  const fp8gemm_weight *w = job->w;
  const fp8gemm_gemm_args *a = job->args;
  const large_plan *plan = &job->plan;
  const size_t N = w->N, K = w->K, groups = fp8gemm_ceil_div(K, GROUP);
  const size_t y_elem = fp8gemm_dtype_size(a->y_dtype);
  const bool fp32_out = a->y_dtype == FP8GEMM_DTYPE_F32;
  float *apack = (float *)(ws + plan->a_offset), *ascale = (float *)(ws + plan->as_offset);
  float *bpack = (float *)(ws + plan->b_offset), *scratch = (float *)(ws + plan->c_offset);
  const size_t n_lo = p_lo * 16, n_hi = min_size(N, p_hi * 16);
  const size_t nc_step = fp32_out ? plan->nc : plan->nc_scratch;
  const size_t m_step = fp32_out ? m_hi - m_lo : plan->mchunk;
  float tile[CPU_GEMM_MR * CPU_GEMM_NR] __attribute__((aligned(64)));

  for (size_t jc = n_lo; jc < n_hi; jc += nc_step) {
    const size_t nc = min_size(nc_step, n_hi - jc), panels = fp8gemm_ceil_div(nc, 16);
    for (size_t mc0 = m_lo; mc0 < m_hi; mc0 += m_step) {
      const size_t m_end = min_size(m_hi, mc0 + m_step);
      float *C;
      size_t ldc;
      if (fp32_out) {
        C = (float *)a->y + mc0 * a->ldy + jc;
        ldc = a->ldy;
      } else {
        C = scratch;
        ldc = plan->nc_scratch;
      }
      for (size_t pc = 0; pc < K; pc += plan->kc) {
        const size_t kc = min_size(plan->kc, K - pc), g0 = pc / GROUP;
        const size_t ng = fp8gemm_ceil_div(kc, GROUP);
        const bool last = pc + kc >= K;
        /* With several row blocks the decoded B block is reused by each
         * and is packed once up front (it lives in L2/L3); with one row
         * block each panel is decoded right before its tiles, into one
         * L1-sized slot, so no decoded weight travels through memory. */
        const bool reuse_b = m_end - mc0 > plan->mc;
        if (reuse_b)
          for (size_t jp = 0; jp < panels; jp++) pack_b_panel(job, jc + jp * 16, pc, kc, bpack + jp * kc * 16);
        for (size_t ic = mc0; ic < m_end; ic += plan->mc) {
          const size_t mcb = min_size(plan->mc, m_end - ic);
          const size_t row_tiles = fp8gemm_ceil_div(mcb, CPU_GEMM_MR);
          for (size_t ip = 0; ip < row_tiles; ip++) {
            const size_t m0 = ic + ip * CPU_GEMM_MR;
            pack_a(job, m0, min_size(CPU_GEMM_MR, ic + mcb - m0), pc, kc,
                   apack + ip * kc * CPU_GEMM_MR, ascale + ip * ng * CPU_GEMM_MR);
          }
          for (size_t jp = 0; jp < panels; jp++) {
            const size_t n0 = jc + jp * 16, nr = min_size(16, N - n0);
            const float *bp = bpack + jp * kc * 16;
            if (!reuse_b) {
              pack_b_panel(job, n0, pc, kc, bpack);
              bp = bpack;
              /* Plain rows give 16 short strided pieces per panel and block
               * of K, which the hardware prefetcher does not follow: fetch
               * the next panel's while this one computes. */
              if (w->layout == FP8GEMM_LAYOUT_PLAIN && jp + 1 < panels)
                prefetch_plain_panel(w, n0 + 16, pc, kc);
            }
            const float *bs = w->scale_inv + (n0 / GROUP) * groups + g0;
            for (size_t ip = 0; ip < row_tiles; ip++) {
              const size_t m0 = ic + ip * CPU_GEMM_MR, mr = min_size(CPU_GEMM_MR, ic + mcb - m0);
              const float *ap = apack + ip * kc * CPU_GEMM_MR, *as = ascale + ip * ng * CPU_GEMM_MR;
              float *ct = C + (m0 - mc0) * ldc + (n0 - jc);
              if (mr == CPU_GEMM_MR && nr == CPU_GEMM_NR) {
                kern->gemm_6x16(kc, ap, as, bp, bs, ct, ldc, pc > 0);
              } else {
                /* Edge tile: compute the full 6x16 into a local tile, copy
                 * the valid part in and out. */
                if (pc > 0)
                  for (size_t i = 0; i < mr; i++) memcpy(tile + i * 16, ct + i * ldc, nr * sizeof(float));
                kern->gemm_6x16(kc, ap, as, bp, bs, tile, 16, pc > 0);
                for (size_t i = 0; i < mr; i++) memcpy(ct + i * ldc, tile + i * 16, nr * sizeof(float));
              }
              if (last && (!fp32_out || w->bias))
                kern->store_tile(mr, nr, ct, ldc, w->bias ? w->bias + n0 : NULL, a->y_dtype,
                                 (char *)a->y + (m0 * a->ldy + n0) * y_elem, a->ldy);
            }
          }
        }
      }
    }
  }
}

static void large_task(void *opaque, int thread, int threads) {
  large_job *job = opaque;
  const size_t M = job->args->M, N = job->w->N, panels = fp8gemm_ceil_div(N, 16);
  const unit_plan u = plan_units(M, N, threads);
  uint8_t *ws = job->ws + (size_t)thread * job->plan.per_thread;
  size_t first, last;
  const size_t row_tiles = fp8gemm_ceil_div(M, CPU_GEMM_MR);
  while (cpu_claim(&job->next_unit, 1, u.row_units * u.col_units, &first, &last)) {
    const size_t r = first / u.col_units, c = first % u.col_units;
    const size_t t_lo = part_start(row_tiles, u.row_units, r);
    const size_t t_hi = part_start(row_tiles, u.row_units, r + 1);
    const size_t p_lo = part_start(panels, u.col_units, c);
    const size_t p_hi = part_start(panels, u.col_units, c + 1);
    if (t_lo == t_hi || p_lo == p_hi) continue;
    run_large_block(job, t_lo * CPU_GEMM_MR, min_size(M, t_hi * CPU_GEMM_MR), p_lo, p_hi, ws);
  }
}

static void run_large(cpu_state *st, const fp8gemm_weight *w, const fp8gemm_gemm_args *a,
                      uint8_t *ws) {
  large_job job = {st, w, a, plan_large(w, a->M), ws, 0};
  atomic_init(&job.next_unit, 0);
  const double work = (double)a->M * (double)w->N * (double)w->K;
  const int want = work < 524288.0 ? 1 : st->num_threads;
  cpu_pool_run(st->pool, want, large_task, &job);
}

/* ---- entry ------------------------------------------------------------------------ */

fp8gemm_status cpu_gemm(fp8gemm_context *ctx, const fp8gemm_weight *w,
                        const fp8gemm_gemm_args *args, void *workspace, size_t workspace_bytes) {
  cpu_state *st = cpu_state_of(ctx);
  if (w->layout != FP8GEMM_LAYOUT_PLAIN && w->layout != FP8GEMM_LAYOUT_PRESHUFFLED_CPU)
    return fp8gemm_set_error(FP8GEMM_ERROR_LAYOUT_MISMATCH,
                             "cpu gemm: weight layout %s has no CPU kernel (plain or "
                             "preshuffled_cpu)",
                             fp8gemm_layout_name(w->layout));
  const size_t needed = cpu_gemm_workspace(ctx, w, args->M);
  void *owned = NULL;
  uintptr_t base = (uintptr_t)workspace;
  if (!workspace || workspace_bytes < needed) {
    owned = malloc(needed);
    if (!owned)
      return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "cpu gemm: workspace of %zu bytes",
                               needed);
    base = (uintptr_t)owned;
  }
  uint8_t *ws = (uint8_t *)((base + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1));
  if (use_small_m(w, args->M))
    run_small(st, w, args, ws);
  else
    run_large(st, w, args, ws);
  free(owned);
  return FP8GEMM_OK;
}
