/* How fast one SM runs e4m3 wgmma m64nNk32 for the N the decode kernels
 * use: the question behind the row-slice kernel's small-M times (session
 * 19). The slices put the activation in A, so every wgmma spans 64 token
 * rows whatever M is; at M = 1 on 4096 x 7168 a CTA does 64 x 32 x 7168
 * multiply-adds a slice, 8 times the 128-row kernel's m64n8 work. If an
 * m64n32k32 is slow enough, the tensor core and not the copies set the
 * slices' time.
 *
 * One CTA an SM; W warpgroups (1 or 2) each run rounds of B wgmmas (B / 4
 * partial accumulators of 4 k-steps each, as a slice step of B / 4 K
 * groups), then wgmma.wait_group 0, like the slice kernel's consumer step.
 * Operands are fixed tiles in shared memory (the rate does not depend on
 * the values). Prints clocks a wgmma an SM (both warpgroups together) and
 * multiply-adds a clock an SM.
 *
 *   nvcc -gencode=arch=compute_90a,code=sm_90a -O3 -Isrc/cuda -o wgmma_rate bench/wgmma_rate.cu
 *   ./wgmma_rate */
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "cuda_check.h"
#include "hopper_ptx.cuh"

constexpr int kRounds = 512;

template <int N, int B>
__global__ void __launch_bounds__(256, 1) rate_kernel(int warpgroups, unsigned long long *clocks, float *sink) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t *base = reinterpret_cast<uint8_t *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  /* A: 64 rows x 128 B; B tiles: N rows x 128 B each, B / 4 of them. */
  for (int i = threadIdx.x; i < (64 + N * (B / 4)) * 128 / 4; i += blockDim.x)
    reinterpret_cast<uint32_t *>(base)[i] = 0x38383838u ^ (uint32_t)i; /* finite e4m3 codes */
  __syncthreads();
  const int wg = threadIdx.x / 128;
  const uint32_t a = smem_addr(base), b0 = a + 64 * 128;
  float part[B / 4][N / 2];
  float keep = 0.0f;
  __syncthreads();
  const unsigned long long start = clock64();
  if (wg < warpgroups) {
    for (int r = 0; r < kRounds; r++) {
      wgmma_fence();
#pragma unroll
      for (int u = 0; u < B / 4; u++) {
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
          Wgmma<N>::run(part[u], smem_desc_sw128(a + kk * 32), smem_desc_sw128(b0 + u * N * 128 + kk * 32), kk);
      }
      wgmma_commit();
      wgmma_wait_all();
#pragma unroll
      for (int u = 0; u < B / 4; u++) keep += part[u][0] + part[u][N / 2 - 1];
    }
  }
  __syncthreads();
  const unsigned long long end = clock64();
  if (threadIdx.x == 0) clocks[blockIdx.x] = end - start;
  if (keep == 12345.0f) sink[threadIdx.x] = keep;
}

template <int N, int B>
void run(int sms, int warpgroups, unsigned long long *d_clocks, float *sink) {
  const size_t smem = 1024 + (size_t)(64 + N * (B / 4)) * 128;
  CHECK(cudaFuncSetAttribute(rate_kernel<N, B>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
  rate_kernel<N, B><<<sms, 256, smem>>>(warpgroups, d_clocks, sink);
  CHECK(cudaDeviceSynchronize());
  rate_kernel<N, B><<<sms, 256, smem>>>(warpgroups, d_clocks, sink);
  CHECK(cudaDeviceSynchronize());
  unsigned long long h[256];
  CHECK(cudaMemcpy(h, d_clocks, sizeof(unsigned long long) * sms, cudaMemcpyDeviceToHost));
  unsigned long long worst = 0;
  for (int i = 0; i < sms; i++) worst = h[i] > worst ? h[i] : worst;
  const double wgmmas = (double)kRounds * B * warpgroups;
  printf("| m64n%dk32 | %d | %d | %.1f | %.0f |\n", N, warpgroups, B, worst / wgmmas, wgmmas * 64.0 * N * 32 / worst);
}

template <int N>
void run_n(int sms, unsigned long long *d_clocks, float *sink) {
  for (int wgs = 1; wgs <= 2; wgs++) {
    run<N, 4>(sms, wgs, d_clocks, sink);
    if constexpr (N <= 64) run<N, 16>(sms, wgs, d_clocks, sink);
  }
}

int main() {
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  if (sms > 256) sms = 256;
  unsigned long long *d_clocks;
  float *sink;
  CHECK(cudaMalloc(&d_clocks, sizeof(unsigned long long) * 256));
  CHECK(cudaMalloc(&sink, sizeof(float) * 256));
  printf("| wgmma | warpgroups | wgmmas a wait | clocks a wgmma (SM) | MAC a clock (SM) |\n|---|---|---|---|---|\n");
  run_n<8>(sms, d_clocks, sink);
  run_n<16>(sms, d_clocks, sink);
  run_n<32>(sms, d_clocks, sink);
  run_n<56>(sms, d_clocks, sink);
  run_n<64>(sms, d_clocks, sink);
  run_n<128>(sms, d_clocks, sink);
  return 0;
}
