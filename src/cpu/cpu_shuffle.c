/* Reordering a 1-byte weight between layouts, in parallel, and the NaN-code
 * check.
 *
 * Every layout keeps whole row blocks contiguous: plain, preshuffled_cpu and
 * aiter16x16 each 16-row panel (bytes [p*16*K, p*16*K + rows*K)), and
 * preshuffled_sm90 each 128-row block row. So a shuffle is a loop over
 * independent units (16-row panels, or 128-row stripes when sm90 is one
 * side), split over the threads; in place, each unit goes through a
 * per-thread scratch of one unit. Inside a 16-row panel:
 *   plain:           row r at r*K, bytes along k
 *   preshuffled_cpu: (k, r) at k*rows + r, so 16x16 blocks, column-major
 *   aiter16x16:      16-wide k chunk c at c*256, (r, k%16) at r*16 + k%16,
 *                    i.e. the same 16x16 blocks, row-major
 * so plain <-> cpu and aiter <-> cpu are 16x16 byte transposes and
 * plain <-> aiter moves 16-byte pieces. sm90 (layout_sm90.c) is handled per
 * 128-row stripe through plain rows. Every path is tested against the
 * core's index functions (tests/cpu/test_shuffle.c). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

/* ---- one 16-row panel --------------------------------------------------------- */

static void panel_convert(const cpu_kernels *kern, size_t K, size_t rows, fp8gemm_layout from,
                          const uint8_t *src, fp8gemm_layout to, uint8_t *dst) {
  const size_t chunks = K / 16;
  if (from == to) {
    memcpy(dst, src, rows * K);
  } else if (from == FP8GEMM_LAYOUT_PLAIN && to == FP8GEMM_LAYOUT_PRESHUFFLED_CPU) {
    if (rows == 16)
      kern->transpose_16x16_stream(chunks, src, K, 16, dst, 16, 256);
    else
      for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < K; k++) dst[k * rows + r] = src[r * K + k];
  } else if (from == FP8GEMM_LAYOUT_PRESHUFFLED_CPU && to == FP8GEMM_LAYOUT_PLAIN) {
    if (rows == 16)
      kern->transpose_16x16(chunks, src, 16, 256, dst, K, 16);
    else
      for (size_t r = 0; r < rows; r++)
        for (size_t k = 0; k < K; k++) dst[r * K + k] = src[k * rows + r];
  } else if ((from == FP8GEMM_LAYOUT_AITER16X16 && to == FP8GEMM_LAYOUT_PRESHUFFLED_CPU) ||
             (from == FP8GEMM_LAYOUT_PRESHUFFLED_CPU && to == FP8GEMM_LAYOUT_AITER16X16)) {
    kern->transpose_16x16_stream(chunks, src, 16, 256, dst, 16, 256); /* aiter: rows == 16 */
  } else if (from == FP8GEMM_LAYOUT_PLAIN && to == FP8GEMM_LAYOUT_AITER16X16) {
    for (size_t c = 0; c < chunks; c++)
      for (size_t r = 0; r < 16; r++) memcpy(dst + c * 256 + r * 16, src + r * K + c * 16, 16);
  } else { /* aiter -> plain */
    for (size_t c = 0; c < chunks; c++)
      for (size_t r = 0; r < 16; r++) memcpy(dst + r * K + c * 16, src + c * 256 + r * 16, 16);
  }
}

/* ---- one 128-row stripe and preshuffled_sm90 -------------------------------------- */

/* plain rows [rows, K] <-> the sm90 order of one block row (layout_sm90.c):
 * 128-wide K tiles of rows x 128 bytes, row r's 16-byte chunk c at
 * r*128 + (c ^ (r % 8))*16; a narrower last tile keeps plain rows. */
static void sm90_stripe(size_t K, size_t rows, const uint8_t *src, uint8_t *dst, bool to_sm90) {
  for (size_t k0 = 0; k0 < K; k0 += 128) {
    const size_t width = K - k0 < 128 ? K - k0 : 128;
    uint8_t *tile = NULL;
    const uint8_t *ctile = NULL;
    if (to_sm90)
      tile = dst + k0 * rows;
    else
      ctile = src + k0 * rows;
    for (size_t r = 0; r < rows; r++) {
      if (width < 128) {
        if (to_sm90)
          memcpy(tile + r * width, src + r * K + k0, width);
        else
          memcpy(dst + r * K + k0, ctile + r * width, width);
        continue;
      }
      for (size_t c = 0; c < 8; c++) {
        const size_t at = r * 128 + ((c ^ (r % 8)) * 16);
        if (to_sm90)
          memcpy(tile + at, src + r * K + k0 + c * 16, 16);
        else
          memcpy(dst + r * K + k0 + c * 16, ctile + at, 16);
      }
    }
  }
}

/* A stripe of `rows` rows (a whole number of 16-row panels except at the
 * end) from one panel layout into another, panel by panel (not in place). */
static void stripe_panels(const cpu_kernels *kern, size_t K, size_t rows, fp8gemm_layout from,
                          const uint8_t *src, fp8gemm_layout to, uint8_t *dst) {
  for (size_t r0 = 0; r0 < rows; r0 += 16) {
    const size_t panel_rows = rows - r0 < 16 ? rows - r0 : 16;
    panel_convert(kern, K, panel_rows, from, src + r0 * K, to, dst + r0 * K);
  }
}

/* ---- driver ----------------------------------------------------------------------------- */

typedef struct shuffle_job {
  const cpu_kernels *kern;
  size_t N, K, unit_rows; /* 16 or 128 */
  fp8gemm_layout from, to;
  const uint8_t *src;
  uint8_t *dst;
  uint8_t *scratch; /* per thread: unit_rows * K bytes, or NULL when not needed */
  atomic_size_t next_unit;
  /* Checked shuffles: each unit's source bytes (contiguous in every layout)
   * are scanned for NaN codes just before they are reordered, while they are
   * in cache: one pass over the weight instead of two. */
  bool check;
  atomic_size_t first_nan; /* smallest offset of a NaN code in src, or SIZE_MAX */
} shuffle_job;

static void shuffle_unit(const shuffle_job *job, size_t u, uint8_t *scratch);

static void shuffle_task(void *opaque, int thread, int threads) {
  shuffle_job *job = opaque;
  const size_t K = job->K, units = fp8gemm_ceil_div(job->N, job->unit_rows);
  uint8_t *scratch = job->scratch ? job->scratch + (size_t)thread * job->unit_rows * K : NULL;
  const size_t chunk = units / ((size_t)threads * 8) + 1;
  size_t begin, end;
  while (cpu_claim(&job->next_unit, chunk, units, &begin, &end))
    for (size_t u = begin; u < end; u++) {
      if (job->check) {
        const size_t n0 = u * job->unit_rows;
        const size_t rows = job->N - n0 < job->unit_rows ? job->N - n0 : job->unit_rows;
        const size_t hit = job->kern->find_nan_code(rows * K, job->src + n0 * K);
        if (hit != SIZE_MAX) {
          size_t offset = n0 * K + hit, seen = atomic_load(&job->first_nan);
          while (offset < seen && !atomic_compare_exchange_weak(&job->first_nan, &seen, offset)) {
          }
        }
      }
      shuffle_unit(job, u, scratch);
    }
}

/* One unit (16-row panel or 128-row stripe) from job->from to job->to. */
static void shuffle_unit(const shuffle_job *job, size_t u, uint8_t *scratch) {
  const size_t K = job->K, n0 = u * job->unit_rows;
  const size_t rows = job->N - n0 < job->unit_rows ? job->N - n0 : job->unit_rows;
  const bool in_place = job->src == job->dst;
  const uint8_t *src = job->src + n0 * K;
  uint8_t *dst = job->dst + n0 * K;
  if (job->from == job->to) {
    memcpy(dst, src, rows * K); /* checked copies only: plain shuffles of equal layouts memcpy whole */
  } else if (job->from != FP8GEMM_LAYOUT_PRESHUFFLED_SM90 &&
             job->to != FP8GEMM_LAYOUT_PRESHUFFLED_SM90) {
    if (in_place) {
      memcpy(scratch, src, rows * K);
      src = scratch;
    }
    panel_convert(job->kern, K, rows, job->from, src, job->to, dst);
  } else if (job->to == FP8GEMM_LAYOUT_PRESHUFFLED_SM90) {
    /* from -> plain rows in scratch (or the source itself), then -> sm90. */
    const uint8_t *plain = src;
    if (job->from != FP8GEMM_LAYOUT_PLAIN || in_place) {
      stripe_panels(job->kern, K, rows, job->from, src, FP8GEMM_LAYOUT_PLAIN, scratch);
      plain = scratch;
    }
    sm90_stripe(K, rows, plain, dst, true);
  } else if (job->to == FP8GEMM_LAYOUT_PLAIN && !in_place) {
    sm90_stripe(K, rows, src, dst, false); /* sm90 -> plain rows, straight */
  } else {
    sm90_stripe(K, rows, src, scratch, false);
    stripe_panels(job->kern, K, rows, FP8GEMM_LAYOUT_PLAIN, scratch, job->to, dst);
  }
}

static fp8gemm_status nan_code_error(const uint8_t *data, size_t first, size_t K);

static fp8gemm_status shuffle_run(fp8gemm_context *ctx, size_t N, size_t K, fp8gemm_layout from,
                                  const uint8_t *src, fp8gemm_layout to, uint8_t *dst,
                                  bool check) {
  cpu_state *st = cpu_state_of(ctx);
  if (from == to && !check) {
    if (src != dst) memcpy(dst, src, N * K);
    return FP8GEMM_OK;
  }
  shuffle_job job;
  job.check = check;
  atomic_init(&job.first_nan, SIZE_MAX);
  job.kern = st->kernels;
  job.N = N;
  job.K = K;
  job.from = from;
  job.to = to;
  job.src = src;
  job.dst = dst;
  job.scratch = NULL;
  atomic_init(&job.next_unit, 0);
  const bool sm90 = from == FP8GEMM_LAYOUT_PRESHUFFLED_SM90 || to == FP8GEMM_LAYOUT_PRESHUFFLED_SM90;
  job.unit_rows = sm90 ? 128 : 16;
  const size_t units = fp8gemm_ceil_div(N, job.unit_rows);
  int threads = st->num_threads;
  if ((size_t)threads > units) threads = (int)units;
  const bool needs_scratch = (src == dst && from != to) ||
                             (to == FP8GEMM_LAYOUT_PRESHUFFLED_SM90 && from != FP8GEMM_LAYOUT_PLAIN) ||
                             (from == FP8GEMM_LAYOUT_PRESHUFFLED_SM90 && to != FP8GEMM_LAYOUT_PLAIN);
  if (needs_scratch) {
    job.scratch = malloc((size_t)threads * job.unit_rows * K);
    if (!job.scratch)
      return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY,
                               "shuffle: scratch of %d x %zu bytes", threads, job.unit_rows * K);
  }
  cpu_pool_run(st->pool, threads, shuffle_task, &job);
  free(job.scratch);
  const size_t first = atomic_load(&job.first_nan);
  return first == SIZE_MAX ? FP8GEMM_OK : nan_code_error(src, first, K);
}

fp8gemm_status cpu_shuffle(fp8gemm_context *ctx, size_t N, size_t K, fp8gemm_layout from,
                           const uint8_t *src, fp8gemm_layout to, uint8_t *dst) {
  return shuffle_run(ctx, N, K, from, src, to, dst, false);
}

fp8gemm_status cpu_shuffle_checked(fp8gemm_context *ctx, size_t N, size_t K, fp8gemm_layout from,
                                   const uint8_t *src, fp8gemm_layout to, uint8_t *dst) {
  if (src == dst) { /* in place: refuse before any byte moves */
    FP8GEMM_RETURN_IF_ERROR(cpu_check_weight_codes(ctx, src, N, K));
    return shuffle_run(ctx, N, K, from, src, to, dst, false);
  }
  return shuffle_run(ctx, N, K, from, src, to, dst, true);
}

/* ---- NaN codes ------------------------------------------------------------------------- */

typedef struct nan_job {
  const cpu_kernels *kern;
  const uint8_t *data;
  size_t bytes;
  atomic_size_t first; /* lowest offset of a NaN code found */
  atomic_size_t next_chunk;
} nan_job;

#define NAN_SCAN_CHUNK ((size_t)1 << 20)

static void nan_task(void *opaque, int thread, int threads) {
  nan_job *job = opaque;
  (void)thread;
  (void)threads;
  const size_t chunks = fp8gemm_ceil_div(job->bytes, NAN_SCAN_CHUNK);
  size_t c, end;
  while (cpu_claim(&job->next_chunk, 1, chunks, &c, &end)) {
    const size_t begin = c * NAN_SCAN_CHUNK;
    const size_t count = job->bytes - begin < NAN_SCAN_CHUNK ? job->bytes - begin : NAN_SCAN_CHUNK;
    const size_t hit = job->kern->find_nan_code(count, job->data + begin);
    if (hit == SIZE_MAX) continue;
    size_t offset = begin + hit, seen = atomic_load(&job->first);
    while (offset < seen && !atomic_compare_exchange_weak(&job->first, &seen, offset)) {
    }
  }
}

fp8gemm_status cpu_check_weight_codes(fp8gemm_context *ctx, const uint8_t *data, size_t N,
                                      size_t K) {
  nan_job job;
  job.data = data;
  job.bytes = N * K;
  atomic_init(&job.first, SIZE_MAX);
  atomic_init(&job.next_chunk, 0);
  /* The core also calls this for host bytes on other backends' contexts:
   * use this backend's pool only on its own context. */
  if (ctx && ctx->ops == &fp8gemm_cpu_backend && ctx->state) {
    cpu_state *st = cpu_state_of(ctx);
    job.kern = st->kernels;
    const size_t chunks = job.bytes / (1u << 20) + 1; /* >= 1 MiB per thread */
    int threads = st->num_threads;
    if ((size_t)threads > chunks) threads = (int)chunks;
    cpu_pool_run(st->pool, threads, nan_task, &job);
  } else {
    job.kern = &cpu_kernels_scalar;
#ifdef CPU_HAVE_AVX2_KERNELS
    if (cpu_detect_avx2()) job.kern = &cpu_kernels_avx2;
#endif
    nan_task(&job, 0, 1);
  }
  const size_t first = atomic_load(&job.first);
  if (first == SIZE_MAX) return FP8GEMM_OK;
  return nan_code_error(data, first, K);
}

static fp8gemm_status nan_code_error(const uint8_t *data, size_t first, size_t K) {
  return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                           "weight: byte %zu is 0x%02X, an e4m3fn NaN code (at (n, k) = (%zu, %zu) "
                           "in plain order); weights must be finite",
                           first, data[first], first / K, first % K);
}
