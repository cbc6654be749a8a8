/* A forward captured in a CUDA graph and replayed gives the same bytes as
 * the direct call (capture in global mode fails on any allocation or host
 * synchronization inside the forward), also after the input changes in
 * place; the fused single-launch linear agrees with quantize + GEMM as
 * two launches; and launches on two concurrent streams (two contexts) whose
 * CTAs combine partial sums finish with the serial results. */
#include "cuda_test_util.h"

static tu_rng g_rng;

typedef struct forward_setup {
  fp8gemm_context *ctx;
  cudaStream_t stream;
  fp8gemm_weight *weight;
  size_t M, N, K;
  uint16_t *x_host;
  void *d_x, *d_y, *d_ws;
  size_t ws_bytes;
} forward_setup;

static void make_setup(forward_setup *f, size_t M, size_t N, size_t K, fp8gemm_layout layout) {
  memset(f, 0, sizeof *f);
  f->M = M;
  f->N = N;
  f->K = K;
  CT_CUDA(cudaStreamCreateWithFlags(&f->stream, cudaStreamNonBlocking));
  f->ctx = ct_context(f->stream);
  const size_t groups = (K + 127) / 128, n_blocks = (N + 127) / 128;
  uint8_t *w = tu_malloc(N * K);
  float *sw = tu_malloc(n_blocks * groups * sizeof(float));
  float *bias = tu_malloc(N * sizeof(float));
  ct_random_codes(&g_rng, w, N * K);
  for (size_t i = 0; i < n_blocks * groups; i++) sw[i] = 0.01f * (1.5f + tu_uniform(&g_rng));
  tu_fill_normal(&g_rng, bias, N, 1.0f);
  f->weight = tu_weight(f->ctx, N, K, w, sw, bias, layout);
  free(bias);
  free(sw);
  free(w);
  f->x_host = tu_malloc(M * K * sizeof(uint16_t));
  for (size_t i = 0; i < M * K; i++) f->x_host[i] = fp8gemm_bf16_from_float(tu_normal(&g_rng));
  f->d_x = ct_upload(f->ctx, f->x_host, M * K * 2);
  f->d_y = ct_alloc(f->ctx, M * N * 2);
  TU_OK(fp8gemm_linear_workspace_size(f->ctx, f->weight, M, &f->ws_bytes));
  f->d_ws = ct_alloc(f->ctx, f->ws_bytes);
}

static void free_setup(forward_setup *f) {
  fp8gemm_memory_free(f->ctx, f->d_ws);
  fp8gemm_memory_free(f->ctx, f->d_y);
  fp8gemm_memory_free(f->ctx, f->d_x);
  fp8gemm_weight_destroy(f->weight);
  fp8gemm_context_destroy(f->ctx);
  CT_CUDA(cudaStreamDestroy(f->stream));
  free(f->x_host);
}

static void forward(forward_setup *f) {
  TU_OK(fp8gemm_linear(f->ctx, f->weight, f->M, FP8GEMM_DTYPE_BF16, f->d_x, f->K,
                       FP8GEMM_DTYPE_BF16, f->d_y, f->N, f->d_ws, f->ws_bytes));
}

static void read_y(forward_setup *f, uint16_t *dst) {
  TU_OK(fp8gemm_context_synchronize(f->ctx));
  ct_download(f->ctx, dst, f->d_y, f->M * f->N * 2);
}

static void check_graph(size_t M, size_t N, size_t K, fp8gemm_layout layout) {
  forward_setup f;
  make_setup(&f, M, N, K, layout);
  const size_t count = M * N;
  uint16_t *direct = tu_malloc(count * 2), *replay = tu_malloc(count * 2);

  CT_CUDA(cudaMemsetAsync(f.d_y, 0xFF, count * 2, f.stream));
  forward(&f);
  read_y(&f, direct);

  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CT_CUDA(cudaStreamBeginCapture(f.stream, cudaStreamCaptureModeGlobal));
  forward(&f);
  CT_CUDA(cudaStreamEndCapture(f.stream, &graph));
  CT_CUDA(cudaGraphInstantiate(&exec, graph, 0));

  CT_CUDA(cudaMemsetAsync(f.d_y, 0xFF, count * 2, f.stream));
  CT_CUDA(cudaGraphLaunch(exec, f.stream));
  read_y(&f, replay);
  if (memcmp(direct, replay, count * 2) != 0)
    fail_msg("graph replay differs from the direct forward (M=%zu N=%zu K=%zu %s)", M, N, K,
             fp8gemm_layout_name(layout));
  for (size_t i = 0; i < count; i++)
    if (!isfinite(fp8gemm_bf16_to_float(direct[i]))) fail_msg("output %zu not finite", i);

  /* New input in the same buffer: the replay reads it, not a copy. */
  for (size_t i = 0; i < M * K; i++) f.x_host[i] = fp8gemm_bf16_from_float(3.0f * tu_normal(&g_rng));
  TU_OK(fp8gemm_memory_copy(f.ctx, f.d_x, f.x_host, M * K * 2, FP8GEMM_COPY_HOST_TO_BACKEND));
  forward(&f);
  read_y(&f, direct);
  CT_CUDA(cudaMemsetAsync(f.d_y, 0xFF, count * 2, f.stream));
  for (int r = 0; r < 3; r++) CT_CUDA(cudaGraphLaunch(exec, f.stream));
  read_y(&f, replay);
  if (memcmp(direct, replay, count * 2) != 0)
    fail_msg("graph replay on new input differs (M=%zu N=%zu K=%zu %s)", M, N, K,
             fp8gemm_layout_name(layout));
  printf("# graph capture + replay equal: M=%zu N=%zu K=%zu %s\n", M, N, K,
         fp8gemm_layout_name(layout));

  CT_CUDA(cudaGraphExecDestroy(exec));
  CT_CUDA(cudaGraphDestroy(graph));
  free(replay);
  free(direct);
  free_setup(&f);
}

static void test_graph_capture(void **state) {
  (void)state;
  /* Fused small-M (split-K), small-M two-launch, large-M. */
  const size_t ms[] = {4, 48, 1000};
  for (int i = 0; i < 3; i++) {
    check_graph(ms[i], 2112, ct_quick() ? 1024 : 7168, FP8GEMM_LAYOUT_PRESHUFFLED_SM90);
    check_graph(ms[i], 2112, ct_quick() ? 1024 : 7168, FP8GEMM_LAYOUT_PLAIN);
  }
}

/* fp8gemm_linear (one launch at small M) against quantize + gemm as two
 * launches on the same data: the same codes, scales and kernel arithmetic,
 * so the same bytes. Rows 1 and 2 carry an Inf and a NaN (their outputs are
 * NaN on both paths, bit for bit); every other output must be finite. */
static void test_fused_matches_two_launches(void **state) {
  (void)state;
  const size_t ms[] = {1, 2, 3, 8, 15, 16, 17, 31, 32}; /* main forces one launch up to 32 */
  const fp8gemm_layout layouts[] = {FP8GEMM_LAYOUT_PLAIN, FP8GEMM_LAYOUT_PRESHUFFLED_SM90};
  const size_t Ks[] = {7168, 400};
  for (int ki = 0; ki < 2; ki++)
    for (int li = 0; li < 2; li++)
      for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
        const size_t M = ms[i], N = 2112, K = ct_quick() ? 1024 : Ks[ki];
        forward_setup f;
        make_setup(&f, M, N, K, layouts[li]);
        if (M >= 3) {
          f.x_host[1 * K + 5] = 0x7f80;     /* +Inf */
          f.x_host[2 * K + K - 1] = 0x7fc1; /* NaN, in the last (partial when K = 400) group */
          TU_OK(fp8gemm_memory_copy(f.ctx, f.d_x, f.x_host, M * K * 2,
                                    FP8GEMM_COPY_HOST_TO_BACKEND));
        }
        const size_t groups = (K + 127) / 128;
        uint16_t *fused = tu_malloc(M * N * 2), *two = tu_malloc(M * N * 2);
        CT_CUDA(cudaMemsetAsync(f.d_y, 0xFF, M * N * 2, f.stream));
        forward(&f);
        read_y(&f, fused);
        uint8_t *d_xq = ct_alloc(f.ctx, M * K);
        float *d_sx = ct_alloc(f.ctx, M * groups * sizeof(float));
        TU_OK(fp8gemm_quantize_activations(f.ctx, M, K, FP8GEMM_DTYPE_BF16, f.d_x, K, d_xq, K, d_sx,
                                           FP8GEMM_SCALE_M_MAJOR, M));
        CT_CUDA(cudaMemsetAsync(f.d_y, 0xFF, M * N * 2, f.stream));
        /* The GEMM through the fused path's own kernel (the default would
         * take the row-slice kernel here, whose sum runs in another order:
         * test_gemm checks it against the reference). */
        char *saved_slices = ct_save_env("FP8GEMM_CUDA_DECODE_SLICES");
        setenv("FP8GEMM_CUDA_DECODE_SLICES", "0", 1);
        TU_OK(fp8gemm_gemm(f.ctx, f.weight, M, d_xq, K, d_sx, FP8GEMM_SCALE_M_MAJOR, M,
                           FP8GEMM_DTYPE_BF16, f.d_y, N, f.d_ws, f.ws_bytes));
        ct_restore_env("FP8GEMM_CUDA_DECODE_SLICES", saved_slices);
        read_y(&f, two);
        for (size_t j = 0; j < M * N; j++) {
          const size_t row = j / N;
          const int poisoned = M >= 3 && (row == 1 || row == 2);
          if (fused[j] != two[j] || poisoned == (isfinite(fp8gemm_bf16_to_float(fused[j])) != 0))
            fail_msg("fused vs two launches M=%zu K=%zu %s: element (%zu, %zu) 0x%04x vs 0x%04x",
                     M, K, fp8gemm_layout_name(layouts[li]), row, j % N, fused[j], two[j]);
        }
        fp8gemm_memory_free(f.ctx, d_sx);
        fp8gemm_memory_free(f.ctx, d_xq);
        free(two);
        free(fused);
        free_setup(&f);
      }
  printf("# fused linear == quantize + gemm for M in {1,2,3,8,15,16,17,31,32}, both layouts, "
         "K = %s, Inf and NaN rows\n",
         ct_quick() ? "1024" : "7168 and 400");
}

/* Two contexts on two non-blocking streams, each queuing many forwards
 * whose CTAs hand partial sums to each other (decode row splits; large-M
 * split-K), so the launches overlap on the SMs. A kernel that waited for
 * CTAs of its own launch that another launch keeps off the SMs would hang
 * here; the results must be the serial ones, byte for byte. */
static void test_concurrent_streams(void **state) {
  (void)state;
  const size_t ms[] = {4, 48}; /* decode kernel (row splits); large kernel (split K) */
  for (int i = 0; i < 2; i++) {
    const size_t M = ms[i], N = 2112, K = ct_quick() ? 1024 : 7168;
    forward_setup f[2];
    make_setup(&f[0], M, N, K, FP8GEMM_LAYOUT_PRESHUFFLED_SM90);
    make_setup(&f[1], M, N, K, FP8GEMM_LAYOUT_PLAIN);
    uint16_t *serial[2], *concurrent[2];
    for (int s = 0; s < 2; s++) {
      serial[s] = tu_malloc(M * N * 2);
      concurrent[s] = tu_malloc(M * N * 2);
      forward(&f[s]);
      read_y(&f[s], serial[s]);
      CT_CUDA(cudaMemsetAsync(f[s].d_y, 0xFF, M * N * 2, f[s].stream));
      TU_OK(fp8gemm_context_synchronize(f[s].ctx));
    }
    for (int r = 0; r < 64; r++)
      for (int s = 0; s < 2; s++) forward(&f[s]);
    for (int s = 0; s < 2; s++) {
      read_y(&f[s], concurrent[s]);
      if (memcmp(serial[s], concurrent[s], M * N * 2) != 0)
        fail_msg("concurrent streams: M=%zu stream %d differs from its serial result", M, s);
      free(concurrent[s]);
      free(serial[s]);
      free_setup(&f[s]);
    }
    printf("# two streams x 64 forwards, M=%zu N=%zu K=%zu: serial results\n", M, N, K);
  }
}

static int setup(void **state) {
  (void)state;
  g_rng = tu_rng_make(tu_seed());
  return 0;
}

int main(void) {
  ct_require_gpu();
  /* Every M the fused kernel can serve, not only where it is the default. */
  setenv("FP8GEMM_CUDA_FUSED_MAX_M", "32", 1);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_graph_capture),
      cmocka_unit_test(test_fused_matches_two_launches),
      cmocka_unit_test(test_concurrent_streams),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
