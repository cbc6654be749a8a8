/* CUDA GEMM against the fp64 reference on the same quantized inputs: every
 * M from 1 to 300 and the tile edges beyond (511, 512, 513, 1024, 4097),
 * N in {16, 128, 200, 2112, 4096, 7168, 17000}, K in {128, 384, 400 (a
 * partial last group), 7168}, both weight layouts (plain and preshuffled_sm90), both
 * scale layouts, bf16 / f16 / f32 out, with and without bias. Outputs are
 * poisoned with NaN before each call, so an unwritten element fails. */
#include "cuda_test_util.h"

typedef struct gemm_case {
  size_t N, K;
  const size_t *ms;
  size_t m_count;
  fp8gemm_dtype y_dtype;
  int with_bias;
  double tolerance;
} gemm_case;

static fp8gemm_context *g_ctx;
static tu_rng g_rng;

static const char *dtype_label(fp8gemm_dtype dtype) { return fp8gemm_dtype_name(dtype); }

static void random_scales(tu_rng *rng, float *dst, size_t count) {
  for (size_t i = 0; i < count; i++) dst[i] = 0.02f * (1.25f + tu_uniform(rng));
}

static void run_case(const gemm_case *c, fp8gemm_layout layout) {
  size_t m_max = 0;
  for (size_t i = 0; i < c->m_count; i++)
    if (c->ms[i] > m_max) m_max = c->ms[i];
  const size_t N = c->N, K = c->K, groups = (K + 127) / 128, n_blocks = (N + 127) / 128;
  uint8_t *xq = tu_malloc(m_max * K);
  float *sx_row = tu_malloc(m_max * groups * sizeof(float));
  float *sx_mmajor = tu_malloc(m_max * groups * sizeof(float));
  uint8_t *w = tu_malloc(N * K);
  float *sw = tu_malloc(n_blocks * groups * sizeof(float));
  float *bias = NULL;
  ct_random_codes(&g_rng, xq, m_max * K);
  random_scales(&g_rng, sx_row, m_max * groups);
  for (size_t m = 0; m < m_max; m++)
    for (size_t g = 0; g < groups; g++) sx_mmajor[g * m_max + m] = sx_row[m * groups + g];
  ct_random_codes(&g_rng, w, N * K);
  random_scales(&g_rng, sw, n_blocks * groups);
  if (c->with_bias) {
    bias = tu_malloc(N * sizeof(float));
    tu_fill_normal(&g_rng, bias, N, 1.0f);
  }
  double *ref = ct_reference(m_max, N, K, xq, sx_row, w, sw, bias);

  fp8gemm_weight *weight = tu_weight(g_ctx, N, K, w, sw, bias, layout);

  const size_t y_elem = fp8gemm_dtype_size(c->y_dtype);
  uint8_t *d_xq = ct_upload(g_ctx, xq, m_max * K);
  float *d_sx_row = ct_upload(g_ctx, sx_row, m_max * groups * sizeof(float));
  float *d_sx_mmajor = ct_upload(g_ctx, sx_mmajor, m_max * groups * sizeof(float));
  void *d_y = ct_alloc(g_ctx, m_max * N * y_elem);
  size_t ws_bytes = 0;
  for (size_t i = 0; i < c->m_count; i++) {
    size_t bytes = 0;
    TU_OK(fp8gemm_linear_workspace_size(g_ctx, weight, c->ms[i], &bytes));
    if (bytes > ws_bytes) ws_bytes = bytes;
  }
  void *d_ws = ct_alloc(g_ctx, ws_bytes);
  void *y = tu_malloc(m_max * N * y_elem);

  double worst = 0;
  size_t worst_m = 0;
  for (size_t i = 0; i < c->m_count; i++) {
    const size_t M = c->ms[i];
    const int m_major = (i % 2) == 0;
    CT_CUDA(cudaMemset(d_y, 0xFF, M * N * y_elem));
    TU_OK(fp8gemm_gemm(g_ctx, weight, M, d_xq, K, m_major ? d_sx_mmajor : d_sx_row,
                       m_major ? FP8GEMM_SCALE_M_MAJOR : FP8GEMM_SCALE_ROW_MAJOR,
                       m_major ? m_max : groups, c->y_dtype, d_y, N, d_ws, ws_bytes));
    TU_OK(fp8gemm_context_synchronize(g_ctx));
    ct_download(g_ctx, y, d_y, M * N * y_elem);
    size_t bad = 0;
    const double err = ct_rel_err(c->y_dtype, y, N, ref, M, N, &bad);
    /* Below ~2000 outputs the output rounding alone (bf16: up to 2^-9
     * relative per element) can average above the bound by chance. */
    const double tolerance = M * N >= 2048 ? c->tolerance : 2 * c->tolerance;
    if (!(err <= tolerance))
      fail_msg("%s N=%zu K=%zu M=%zu y=%s bias=%d: rel err %.3g > %.3g (first non-finite at "
               "row %zu col %zu if inf)",
               fp8gemm_layout_name(layout), N, K, M, dtype_label(c->y_dtype), c->with_bias, err,
               tolerance, bad / N, bad % N);
    if (err > worst) {
      worst = err;
      worst_m = M;
    }
  }
  printf("# %-16s N=%-5zu K=%-5zu %3zu values of M up to %-5zu y=%-4s bias=%d: worst rel err "
         "%.3g (M=%zu)\n",
         fp8gemm_layout_name(layout), N, K, c->m_count, m_max, dtype_label(c->y_dtype),
         c->with_bias, worst, worst_m);

  free(y);
  fp8gemm_memory_free(g_ctx, d_ws);
  fp8gemm_memory_free(g_ctx, d_y);
  fp8gemm_memory_free(g_ctx, d_sx_mmajor);
  fp8gemm_memory_free(g_ctx, d_sx_row);
  fp8gemm_memory_free(g_ctx, d_xq);
  fp8gemm_weight_destroy(weight);
  free(ref);
  free(bias);
  free(sw);
  free(w);
  free(sx_mmajor);
  free(sx_row);
  free(xq);
}

/* M = 1..300 and the tile edges far beyond. */
static size_t g_sweep[320];
static size_t g_sweep_count;
static const size_t g_edges_2112[] = {1,  2,  3,  4,   5,   6,   7,   8,   15,  16,  17,
                                      31, 32, 33, 63,  64,  65,  127, 128, 129, 255, 256,
                                      257, 300};
static const size_t g_big[] = {1, 8, 64, 520};
static const size_t g_quick_a[] = {1, 17, 129, 300};
static const size_t g_quick_b[] = {1, 64, 300};

static void run_both_layouts(const gemm_case *c) {
  run_case(c, FP8GEMM_LAYOUT_PLAIN);
  run_case(c, FP8GEMM_LAYOUT_PRESHUFFLED_SM90);
}

static void test_sweep_small_shapes(void **state) {
  (void)state;
  if (ct_quick()) {
    const gemm_case c = {200, 400, g_quick_a, 4, FP8GEMM_DTYPE_BF16, 0, 2e-3};
    run_both_layouts(&c);
    return;
  }
  const size_t shapes[][2] = {{16, 128}, {128, 384}, {200, 400}, {2112, 384}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const gemm_case c = {shapes[i][0], shapes[i][1], g_sweep, g_sweep_count, FP8GEMM_DTYPE_BF16,
                         0, 2e-3};
    run_both_layouts(&c);
  }
}

static void test_deepseek_shape_edges(void **state) {
  (void)state;
  if (ct_quick()) {
    const gemm_case c = {2112, 1024, g_quick_b, 3, FP8GEMM_DTYPE_BF16, 1, 2e-3};
    run_both_layouts(&c);
    return;
  }
  const gemm_case c = {2112, 7168, g_edges_2112, sizeof g_edges_2112 / sizeof g_edges_2112[0],
                       FP8GEMM_DTYPE_BF16, 0, 2e-3};
  run_both_layouts(&c);
  const gemm_case big = {4096, 7168, g_big, sizeof g_big / sizeof g_big[0], FP8GEMM_DTYPE_BF16, 1,
                         2e-3};
  run_both_layouts(&big);
}

/* How the decode kernel cuts the weight among CTAs changes with the number
 * of 128-row blocks: K-runs of rows with fewer rows than SMs (4 rows, the
 * last short: 32 runs of one K group; 47, 36 and 28 rows: 2, 3 and 4 runs),
 * whole rows (56 rows of 4 K groups), several whole rows per CTA with more
 * rows than SMs (17000: 133 rows, the last one partial). Cut rows are added
 * up by their last piece, by every piece a share (cooperative launch) or
 * through the shared memory of a cluster of the row's pieces (where the
 * clusters fit): each way forced in turn, then the default. */
static void test_row_partitions(void **state) {
  (void)state;
  static const size_t ms_7168[] = {1, 5, 16, 17, 64, 100};
  static const size_t ms_17000[] = {1, 3, 16, 40};
  static const struct {
    const char *name, *value;
  } ways[] = {{"FP8GEMM_CUDA_STREAM_FIXUP", "last"},
              {"FP8GEMM_CUDA_STREAM_FIXUP", "spread"},
              {"FP8GEMM_CUDA_STREAM_FIXUP", "cluster"},
              {NULL, NULL}};
  /* The row-slice kernel would take these shapes by default (fewer 128-row
   * blocks than SMs): held off here, except in the last pass. */
  char *saved_slices = ct_save_env("FP8GEMM_CUDA_DECODE_SLICES");
  for (int i = 0; i < 4; i++) {
    char *saved = NULL;
    if (ways[i].name) setenv("FP8GEMM_CUDA_DECODE_SLICES", "0", 1);
    else if (saved_slices) setenv("FP8GEMM_CUDA_DECODE_SLICES", saved_slices, 1);
    else unsetenv("FP8GEMM_CUDA_DECODE_SLICES");
    if (ways[i].name) {
      saved = ct_save_env(ways[i].name);
      setenv(ways[i].name, ways[i].value, 1);
      printf("# decode hand-off: %s=%s\n", ways[i].name, ways[i].value);
    } else {
      printf("# decode hand-off: default\n");
    }
    const gemm_case rows56 = {7168, 400, ms_7168, ct_quick() ? 2 : 6, FP8GEMM_DTYPE_BF16, 1, 2e-3};
    run_both_layouts(&rows56);
    const gemm_case rows4 = {500, 4096, ms_7168, ct_quick() ? 3 : 6, FP8GEMM_DTYPE_F16, 1, 1e-3};
    run_both_layouts(&rows4);
    const gemm_case rows133 = {17000, 384, ms_17000, ct_quick() ? 2 : 4, FP8GEMM_DTYPE_BF16, 0,
                               2e-3};
    run_both_layouts(&rows133);
    /* Cut rows in 2, 3 and 4 pieces on 132 SMs (47, 36 and 28 block rows,
     * the last one partial; 14 K groups, the last 16 wide, cut unevenly),
     * whose clusters fit the device: the cluster hand-off where forced. */
    static const size_t ms_cut[] = {1, 9, 17, 64, 100, 128};
    const size_t cut_n[] = {6000, 4500, 3500};
    const fp8gemm_dtype cut_dtype[] = {FP8GEMM_DTYPE_BF16, FP8GEMM_DTYPE_F32, FP8GEMM_DTYPE_F16};
    for (int c = 0; c < 3; c++) {
      const gemm_case cut = {cut_n[c], 1680, ms_cut, ct_quick() ? 3 : 6, cut_dtype[c], c != 1,
                             2e-3};
      run_both_layouts(&cut);
    }
    if (ways[i].name) ct_restore_env(ways[i].name, saved);
  }
  ct_restore_env("FP8GEMM_CUDA_DECODE_SLICES", saved_slices);
}

typedef struct {
  size_t N, K;
  fp8gemm_dtype y_dtype;
  int bias;
} decode_shape;

/* The decode kernels of gemm_slice.cu forced (FP8GEMM_CUDA_DECODE_SLICES=1,
 * FP8GEMM_CUDA_SLICE_PANEL=panel: "0" the row slices, "1" the panels) on
 * `shapes` (the first quick_count in quick mode) at every M up to 64 near
 * the 8-row steps of the activation tile, both layouts and scale layouts. */
static void run_forced_decode(const char *what, const char *panel, const decode_shape *shapes,
                              size_t count, size_t quick_count) {
  static const size_t ms[] = {1, 2, 7, 8, 9, 16, 17, 31, 33, 57, 63, 64};
  static const size_t ms_quick[] = {1, 9, 64};
  const size_t *m_list = ct_quick() ? ms_quick : ms;
  const size_t m_count = ct_quick() ? 3 : sizeof ms / sizeof ms[0];
  char *saved = ct_save_env("FP8GEMM_CUDA_DECODE_SLICES");
  char *saved_panel = ct_save_env("FP8GEMM_CUDA_SLICE_PANEL");
  setenv("FP8GEMM_CUDA_DECODE_SLICES", "1", 1);
  setenv("FP8GEMM_CUDA_SLICE_PANEL", panel, 1);
  if (ct_quick() && quick_count < count) count = quick_count;
  for (size_t i = 0; i < count; i++) {
    const double tol = shapes[i].y_dtype == FP8GEMM_DTYPE_BF16 ? 2e-3 : 1e-3;
    const gemm_case c = {shapes[i].N, shapes[i].K, m_list, m_count, shapes[i].y_dtype,
                         shapes[i].bias, tol};
    printf("# %s forced: N=%zu K=%zu\n", what, shapes[i].N, shapes[i].K);
    run_both_layouts(&c);
  }
  ct_restore_env("FP8GEMM_CUDA_SLICE_PANEL", saved_panel);
  ct_restore_env("FP8GEMM_CUDA_DECODE_SLICES", saved);
}

/* The row-slice decode kernel (gemm_slice.cu), forced: S = 8 * ceil(N / 8 /
 * SMs) rows a CTA over all of K. On 132 SMs: N = 500 (S = 8, the last slice
 * 4 rows), 2112 (16), 4096 (32), 4500 (40: slices straddle 128-row blocks,
 * the last block partial), 6000 (48), 7168 (56), 9000 (72 -> 96), 16000
 * (128), 24000 (192); K of 1 group (the second warpgroup idle), 400 and 1680
 * (a partial last group), 4096; three output types, bias and none. */
static void test_row_slices(void **state) {
  (void)state;
  static const decode_shape shapes[] = {
      {500, 400, FP8GEMM_DTYPE_BF16, 1},   {2112, 1680, FP8GEMM_DTYPE_F16, 0},
      {4096, 4096, FP8GEMM_DTYPE_BF16, 1}, {4500, 1680, FP8GEMM_DTYPE_F32, 1},
      {6000, 128, FP8GEMM_DTYPE_BF16, 0},  {7168, 400, FP8GEMM_DTYPE_BF16, 1},
      {9000, 1680, FP8GEMM_DTYPE_F16, 1},  {16000, 400, FP8GEMM_DTYPE_BF16, 0},
      {24000, 1680, FP8GEMM_DTYPE_BF16, 1}};
  run_forced_decode("row slices", "0", shapes, sizeof shapes / sizeof shapes[0], 4);
}

/* The panels (gemm_slice.cu: 64 weight rows a CTA as wgmma's A, K steps of
 * two groups cut over a cluster of P CTAs), forced. On 132 SMs: N = 4096
 * (64 panels, P = 2), 500 (8 panels, the last 52 rows; P = 8 at K = 4096),
 * 4500 (71 panels, P = 1, the last 20 rows), 2112 (33; P = 2 or 4 as the
 * clusters fit), 7168 (112, P = 1); K of 1 group (one step: the second
 * warpgroup idle), 400 (a partial last group, 2 steps), 1680 (7 steps, cut
 * unevenly), 4096; three output types, bias and none. Then pieces forced
 * to 2 and 4 (where they fit) on 2112 x 4096. */
static void test_panels(void **state) {
  (void)state;
  static const decode_shape shapes[] = {
      {4096, 1680, FP8GEMM_DTYPE_BF16, 1}, {500, 4096, FP8GEMM_DTYPE_F16, 1},
      {4500, 400, FP8GEMM_DTYPE_F32, 1},   {2112, 128, FP8GEMM_DTYPE_BF16, 0},
      {7168, 1680, FP8GEMM_DTYPE_BF16, 0}, {2112, 4096, FP8GEMM_DTYPE_F16, 1},
      {4096, 400, FP8GEMM_DTYPE_F32, 0}};
  run_forced_decode("panels", "1", shapes, sizeof shapes / sizeof shapes[0], 3);
  char *saved = ct_save_env("FP8GEMM_CUDA_PANEL_PIECES");
  static const char *pieces[] = {"2", "4"};
  static const decode_shape cut = {2112, 4096, FP8GEMM_DTYPE_BF16, 1};
  for (int i = 0; i < 2; i++) {
    setenv("FP8GEMM_CUDA_PANEL_PIECES", pieces[i], 1);
    run_forced_decode(i ? "panels in 4 pieces" : "panels in 2 pieces", "1", &cut, 1, 1);
  }
  ct_restore_env("FP8GEMM_CUDA_PANEL_PIECES", saved);
}

static void test_output_dtypes_and_bias(void **state) {
  (void)state;
  static const size_t ms[] = {1, 33, 300};
  const fp8gemm_dtype dtypes[] = {FP8GEMM_DTYPE_F16, FP8GEMM_DTYPE_F32, FP8GEMM_DTYPE_BF16};
  const double tolerances[] = {1e-3, 1e-3, 2e-3};
  for (int i = 0; i < 3; i++) {
    const gemm_case c = {2112, 400, ms, 3, dtypes[i], 1, tolerances[i]};
    run_both_layouts(&c);
  }
}

/* fp8gemm_linear from bf16/f16 x: fused at small M, two launches above;
 * the reference runs on the GPU quantizer's own output (its agreement with
 * the CPU quantizer is test_ops' job). */
static void check_linear_from_x(size_t N, size_t K) {
  static const size_t ms_full[] = {1, 2, 5, 16, 17, 32, 33, 64, 65, 200, 600};
  static const size_t ms_quick[] = {1, 16, 33, 200};
  const size_t *ms = ct_quick() ? ms_quick : ms_full;
  const size_t m_count = ct_quick() ? 4 : sizeof ms_full / sizeof ms_full[0];
  const size_t groups = (K + 127) / 128;
  uint8_t *w = tu_malloc(N * K);
  float *sw = tu_malloc(((N + 127) / 128) * groups * sizeof(float));
  ct_random_codes(&g_rng, w, N * K);
  random_scales(&g_rng, sw, ((N + 127) / 128) * groups);
  const fp8gemm_layout layouts[] = {FP8GEMM_LAYOUT_PLAIN, FP8GEMM_LAYOUT_PRESHUFFLED_SM90};
  const fp8gemm_dtype x_dtypes[] = {FP8GEMM_DTYPE_BF16, FP8GEMM_DTYPE_F16};
  for (int li = 0; li < 2; li++) {
    fp8gemm_weight *weight = tu_weight(g_ctx, N, K, w, sw, NULL, layouts[li]);
    for (size_t i = 0; i < m_count; i++) {
      const size_t M = ms[i];
      const fp8gemm_dtype x_dtype = x_dtypes[i % 2];
      float *x = tu_malloc(M * K * sizeof(float));
      uint16_t *x16 = tu_malloc(M * K * sizeof(uint16_t));
      tu_fill_normal(&g_rng, x, M * K, 1.0f);
      for (size_t j = 0; j < M * K; j++)
        x16[j] = x_dtype == FP8GEMM_DTYPE_BF16 ? fp8gemm_bf16_from_float(x[j] * (1 + j % 7))
                                               : fp8gemm_f16_from_float(x[j] * (1 + j % 7));
      void *d_x = ct_upload(g_ctx, x16, M * K * 2);
      uint8_t *d_xq = ct_alloc(g_ctx, M * K);
      float *d_sx = ct_alloc(g_ctx, M * groups * sizeof(float));
      TU_OK(fp8gemm_quantize_activations(g_ctx, M, K, x_dtype, d_x, K, d_xq, K, d_sx,
                                         FP8GEMM_SCALE_ROW_MAJOR, groups));
      uint8_t *xq = tu_malloc(M * K);
      float *sx = tu_malloc(M * groups * sizeof(float));
      ct_download(g_ctx, xq, d_xq, M * K);
      ct_download(g_ctx, sx, d_sx, M * groups * sizeof(float));
      double *ref = ct_reference(M, N, K, xq, sx, w, sw, NULL);
      size_t ws_bytes = 0;
      TU_OK(fp8gemm_linear_workspace_size(g_ctx, weight, M, &ws_bytes));
      void *d_ws = ct_alloc(g_ctx, ws_bytes);
      void *d_y = ct_alloc(g_ctx, M * N * 2);
      CT_CUDA(cudaMemset(d_y, 0xFF, M * N * 2));
      TU_OK(fp8gemm_linear(g_ctx, weight, M, x_dtype, d_x, K, FP8GEMM_DTYPE_BF16, d_y, N, d_ws,
                           ws_bytes));
      uint16_t *y = tu_malloc(M * N * 2);
      ct_download(g_ctx, y, d_y, M * N * 2);
      const double err = ct_rel_err(FP8GEMM_DTYPE_BF16, y, N, ref, M, N, NULL);
      if (!(err <= 2e-3))
        fail_msg("linear %s M=%zu x=%s: rel err %.3g", fp8gemm_layout_name(layouts[li]), M,
                 fp8gemm_dtype_name(x_dtype), err);
      printf("# linear %-16s N=%zu K=%zu M=%-4zu x=%s: rel err %.3g\n",
             fp8gemm_layout_name(layouts[li]), N, K, M, fp8gemm_dtype_name(x_dtype), err);
      free(y);
      fp8gemm_memory_free(g_ctx, d_y);
      fp8gemm_memory_free(g_ctx, d_ws);
      free(ref);
      free(sx);
      free(xq);
      fp8gemm_memory_free(g_ctx, d_sx);
      fp8gemm_memory_free(g_ctx, d_xq);
      fp8gemm_memory_free(g_ctx, d_x);
      free(x16);
      free(x);
    }
    fp8gemm_weight_destroy(weight);
  }
  free(sw);
  free(w);
}

static void test_linear_from_x(void **state) {
  (void)state;
  check_linear_from_x(2112, ct_quick() ? 1024 : 7168);
  /* Rows cut in two (47 block rows), each hand-off. */
  static const char *fixups[] = {"last", "cluster"};
  for (int i = 0; i < 2; i++) {
    char *saved = ct_save_env("FP8GEMM_CUDA_STREAM_FIXUP");
    setenv("FP8GEMM_CUDA_STREAM_FIXUP", fixups[i], 1);
    printf("# linear, decode hand-off %s\n", fixups[i]);
    check_linear_from_x(6000, 1680);
    ct_restore_env("FP8GEMM_CUDA_STREAM_FIXUP", saved);
  }
}

/* Every large-M kernel configuration (tile width 128 / 192 / 256, clusters
 * sharing the weight and the activation tiles, the pipelined 128p / 192p /
 * 256p, 224 / 224p whose tiles start 0, 32, 64 or 96 columns into a
 * weight-scale block and span up to three of them),
 * forced with FP8GEMM_CUDA_LARGE_CONFIG and the large kernel for every M:
 * 1, 2, 3 and 5 M blocks (a cluster's second M block past the matrix), N
 * that no tile width divides and whose 192-wide tiles start mid scale
 * block, a partial last K group, both layouts, tensor-store (bf16) and
 * direct-store (f32) outputs, bias. */
static void test_large_configs(void **state) {
  (void)state;
  static const char *configs[] = {"128",  "192",  "192/2x1", "256", "256/2x1",
                                  "128p", "192p", "256p",    "224", "224p"};
  static const size_t ms[] = {129, 300, 520, 1};
  fp8gemm_context *shared_ctx = g_ctx;
  char *saved_crossover = ct_save_env("FP8GEMM_CUDA_CROSSOVER");
  setenv("FP8GEMM_CUDA_CROSSOVER", "0", 1);
  for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
    setenv("FP8GEMM_CUDA_LARGE_CONFIG", configs[i], 1);
    g_ctx = ct_context(NULL);
    printf("# large-M configuration %s\n", configs[i]);
    const gemm_case a = {2112, 400, ms, ct_quick() ? 2 : 4, FP8GEMM_DTYPE_BF16, 1, 2e-3};
    run_both_layouts(&a);
    if (!ct_quick()) {
      const gemm_case b = {1000, 1024, ms, 4, FP8GEMM_DTYPE_F32, 0, 1e-3};
      run_both_layouts(&b);
    }
    fp8gemm_context_destroy(g_ctx);
  }
  /* An unbuilt configuration is refused at creation, naming the built ones. */
  setenv("FP8GEMM_CUDA_LARGE_CONFIG", "160", 1);
  fp8gemm_context_options options;
  fp8gemm_context_options_init(&options);
  options.backend = FP8GEMM_BACKEND_CUDA;
  fp8gemm_context *refused = NULL;
  assert_int_equal(fp8gemm_context_create(&options, &refused), FP8GEMM_ERROR_INVALID_ARGUMENT);
  assert_null(refused);
  assert_non_null(strstr(fp8gemm_last_error(), "=160: expected one of 128, 192"));
  assert_non_null(strstr(fp8gemm_last_error(), "256/2x1"));
  assert_non_null(strstr(fp8gemm_last_error(), "224p"));
  unsetenv("FP8GEMM_CUDA_LARGE_CONFIG");
  ct_restore_env("FP8GEMM_CUDA_CROSSOVER", saved_crossover);
  g_ctx = shared_ctx;
}

/* The large-M kernel's split-K path (fewer 128 x 128 tiles than SMs: the
 * tiles' CTAs write partials and the last of each tile adds them up),
 * forced for every M: 2 splits (N = 7168, 56 tiles), 7 and 3 (N = 2112),
 * one K group per split with a partial last group (N = 1000, K = 1088),
 * bf16 through the tensor-store epilogue and f32 through direct stores,
 * with bias, both layouts. */
static void test_large_split_k(void **state) {
  (void)state;
  static const size_t ms_a[] = {1, 100, 128, 256};
  static const size_t ms_b[] = {1, 65, 128, 129};
  static const size_t ms_c[] = {1, 77, 129, 300};
  fp8gemm_context *shared_ctx = g_ctx;
  char *saved_crossover = ct_save_env("FP8GEMM_CUDA_CROSSOVER");
  char *saved_pipe = ct_save_env("FP8GEMM_CUDA_LARGE_PIPE");
  char *saved_min = ct_save_env("FP8GEMM_CUDA_SPLIT_MIN_GROUPS");
  setenv("FP8GEMM_CUDA_CROSSOVER", "0", 1);
  /* These K (2048, 1088) run unsplit by default (fewer than 32 K groups). */
  setenv("FP8GEMM_CUDA_SPLIT_MIN_GROUPS", "1", 1);
  /* The plain and the pipelined 128-wide kernel (bodies of 2 K groups and
   * the per-group tail: 8 groups per split for N = 7168 and 2112, 1 for N = 1000). */
  static const char *pipe[] = {"0", "1"};
  for (size_t i = 0; i < 2; i++) {
    setenv("FP8GEMM_CUDA_LARGE_PIPE", pipe[i], 1);
    printf("# split-K, FP8GEMM_CUDA_LARGE_PIPE=%s\n", pipe[i]);
    g_ctx = ct_context(NULL);
    const gemm_case a = {7168, 2048, ms_a, ct_quick() ? 2 : 4, FP8GEMM_DTYPE_BF16, 1, 2e-3};
    const gemm_case b = {2112, 7168, ms_b, ct_quick() ? 2 : 4, FP8GEMM_DTYPE_BF16, 0, 2e-3};
    const gemm_case c = {1000, 1088, ms_c, 4, FP8GEMM_DTYPE_F32, 1, 1e-3};
    run_both_layouts(&a);
    run_both_layouts(&b);
    run_both_layouts(&c);
    fp8gemm_context_destroy(g_ctx);
  }
  ct_restore_env("FP8GEMM_CUDA_SPLIT_MIN_GROUPS", saved_min);
  ct_restore_env("FP8GEMM_CUDA_LARGE_PIPE", saved_pipe);
  ct_restore_env("FP8GEMM_CUDA_CROSSOVER", saved_crossover);
  g_ctx = shared_ctx;
}

static int setup(void **state) {
  (void)state;
  g_ctx = ct_context(NULL);
  g_rng = tu_rng_make(tu_seed());
  g_sweep_count = 0;
  for (size_t m = 1; m <= 300; m++) g_sweep[g_sweep_count++] = m;
  const size_t edges[] = {511, 512, 513, 1024, 4097};
  for (size_t i = 0; i < 5; i++) g_sweep[g_sweep_count++] = edges[i];
  return 0;
}

static int teardown(void **state) {
  (void)state;
  fp8gemm_context_destroy(g_ctx);
  return 0;
}

int main(void) {
  ct_require_gpu();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sweep_small_shapes),
      cmocka_unit_test(test_deepseek_shape_edges),
      cmocka_unit_test(test_row_partitions),
      cmocka_unit_test(test_row_slices),
      cmocka_unit_test(test_panels),
      cmocka_unit_test(test_output_dtypes_and_bias),
      cmocka_unit_test(test_linear_from_x),
      cmocka_unit_test(test_large_configs),
      cmocka_unit_test(test_large_split_k),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
