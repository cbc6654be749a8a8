/* What a pure read of N bytes costs on this GPU, timed the way
 * bench/cuda_bench.py times the GEMMs (CUDA graphs of 20 launches, buffers
 * rotated past L2, median of replays): the attainable roof for the decode
 * kernels, and the fixed cost of one launch (an empty kernel).
 *
 *   nvcc -gencode=arch=compute_90a,code=sm_90a -O3 -o read_roof bench/read_roof.cu
 *   ./read_roof                 (prints a table; sizes in MB as arguments) */
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <algorithm>
#include <vector>

#include "cuda_check.h"

__global__ void empty_kernel() {}

/* Every thread reads 16-byte pieces, `unroll` in flight, grid-stride. */
__global__ void __launch_bounds__(512) read_kernel(const uint4 *src, size_t count, unsigned *sink) {
  unsigned acc = 0;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < count; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; u++)
      asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                   : "=r"(v[u].x), "=r"(v[u].y), "=r"(v[u].z), "=r"(v[u].w)
                   : "l"(src + i + u * stride));
#pragma unroll
    for (int u = 0; u < 4; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < count; i += stride) {
    const uint4 v = src[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) sink[0] = acc; /* keeps the loads */
}

template <typename Launch>
static float graph_us(cudaStream_t stream, int calls, int reps, Launch launch) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  for (int c = 0; c < calls; c++) launch(c);
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CHECK(cudaGraphLaunch(exec, stream));
  CHECK(cudaStreamSynchronize(stream));
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  std::vector<float> times;
  for (int r = 0; r < reps; r++) {
    CHECK(cudaEventRecord(a, stream));
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaEventRecord(b, stream));
    CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, a, b));
    times.push_back(ms * 1000.0f / calls);
  }
  std::sort(times.begin(), times.end());
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  return times[times.size() / 2];
}

int main(int argc, char **argv) {
  std::vector<double> sizes_mb = {1.8, 8.4, 15.1, 16.8, 25.2, 29.4, 37.7, 117.4, 268.4};
  if (argc > 1) {
    sizes_mb.clear();
    for (int i = 1; i < argc; i++) sizes_mb.push_back(atof(argv[i]));
  }
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  unsigned *sink;
  CHECK(cudaMalloc(&sink, 4));
  printf("empty kernel: %.2f us per launch (graph of 20)\n",
         graph_us(stream, 20, 15, [&](int) { empty_kernel<<<1, 32, 0, stream>>>(); }));
  /* Device-to-device copy of 1 GiB, as cuda_bench.py measures it. */
  {
    const size_t n = (size_t)1 << 30;
    void *a, *b;
    CHECK(cudaMalloc(&a, n));
    CHECK(cudaMalloc(&b, n));
    CHECK(cudaMemset(a, 1, n));
    const float us = graph_us(stream, 1, 11, [&](int) {
      CHECK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, stream));
    });
    printf("d2d copy 1 GiB: %.0f GB/s (read + write)\n", 2.0 * n / (us * 1e-6) / 1e9);
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
  }
  printf("| MB | CTAs x threads | us | GB/s |\n|---|---|---|---|\n");
  for (double mb : sizes_mb) {
    const size_t bytes = ((size_t)(mb * 1e6) + 15) / 16 * 16;
    const int rot = (int)std::max<size_t>(2, std::min<size_t>(16, (size_t)(250e6 / bytes) + 1));
    std::vector<uint4 *> bufs(rot);
    for (auto &p : bufs) {
      CHECK(cudaMalloc(&p, bytes));
      CHECK(cudaMemset(p, 3, bytes));
    }
    for (int per_sm : {1, 2, 4}) {
      const int threads = 512, ctas = sms * per_sm;
      const float us = graph_us(stream, 20, 15, [&](int c) {
        read_kernel<<<ctas, threads, 0, stream>>>(bufs[c % rot], bytes / 16, sink);
      });
      printf("| %.1f | %d x %d | %.2f | %.0f |\n", mb, ctas, threads, us, bytes / (us * 1e-6) / 1e9);
    }
    for (auto p : bufs) CHECK(cudaFree(p));
  }
  return 0;
}
