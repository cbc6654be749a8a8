/* A downstream program: one linear layer through the installed library. */
#include <fp8gemm.h>
#include <math.h>
#include <stdio.h>

int main(void) {
  enum { M = 3, N = 32, K = 128 };
  static float x[M * K], w[N * K], y[M * N];
  static uint8_t wq[N * K];
  float scale;
  for (int i = 0; i < M * K; i++) x[i] = (float)((i * 37) % 17) / 8.0f - 1.0f;
  for (int i = 0; i < N * K; i++) w[i] = (float)((i * 11) % 13) / 16.0f - 0.4f;
  fp8gemm_context *ctx;
  fp8gemm_weight *weight;
  if (fp8gemm_context_create(NULL, &ctx) != FP8GEMM_OK) return 1;
  if (fp8gemm_quantize_weight(ctx, N, K, FP8GEMM_DTYPE_F32, w, K, wq, &scale) != FP8GEMM_OK) return 1;
  fp8gemm_weight_desc desc;
  fp8gemm_weight_desc_init(&desc);
  desc.N = N;
  desc.K = K;
  desc.data = wq;
  desc.scale_inv = &scale;
  if (fp8gemm_weight_create(ctx, &desc, &weight) != FP8GEMM_OK) return 1;
  if (fp8gemm_linear(ctx, weight, M, FP8GEMM_DTYPE_F32, x, K, -1, y, N, NULL, 0) != FP8GEMM_OK) {
    fprintf(stderr, "%s\n", fp8gemm_last_error());
    return 1;
  }
  double dot = 0;
  for (int k = 0; k < K; k++) dot += (double)x[k] * w[k];
  printf("fp8gemm %s: y[0][0]=%.4f (fp32 %.4f), layout %s\n", fp8gemm_version_string(), y[0],
         dot, fp8gemm_layout_name(fp8gemm_weight_layout(weight)));
  fp8gemm_weight_destroy(weight);
  fp8gemm_context_destroy(ctx);
  return fabs(y[0] - dot) < 0.05 * (fabs(dot) + 1) ? 0 : 1;
}
