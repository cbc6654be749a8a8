/* How fast one CTA an SM can stream a weight from HBM into shared memory,
 * by the kind and size of its copies: the question behind the decode
 * kernels' stage sizes (session 17: the row-slice kernel's producer issued
 * one 4 KiB tensor copy every ~175-250 ns, well under its share of HBM).
 *
 * Every CTA (one an SM, a ring of stages in ~192 KiB of shared memory) has
 * one thread issue copies into the ring and one warp wait for each stage
 * and free it at once, so nothing but the copies is timed. The source is a
 * [32768, 7168] byte matrix (235 MB, past L2). Copies:
 *   tensor2d R x G : G 2-D tensor copies of {128 B, R rows} a stage (the
 *                    row-slice kernel: R = S, G = 1), CTA c taking rows
 *                    [R c, R c + R) over all K groups, then the next R rows
 *   tensor3d R x G : one 3-D tensor copy of {128 B, R rows, G groups}
 *   bulk B         : one contiguous bulk copy of B bytes a stage
 *   tiles R x G    : the matrix in the preshuffled layout's order (16 KiB
 *                    tiles of 128 rows x 128 B, a block row's tiles one
 *                    after another), read as the row-slice kernel reads it:
 *                    G bulk copies of R x 128 B a stage, one from each of G
 *                    consecutive tiles (16 KiB apart), CTA c taking rows
 *                    [R c, R c + R) as tensor2d does
 *   +x             : each stage also copies an activation tile ({128 B, 64
 *                    rows} of a small L2-resident matrix), as the kernels do
 *   cp.async R x G : the producer warpgroup's 128 threads copy 16 bytes at a
 *                    time (cp.async, completing on the stage's mbarrier)
 *
 *   nvcc -gencode=arch=compute_90a,code=sm_90a -O3 -Isrc/cuda -o tma_roof bench/tma_roof.cu
 *   ./tma_roof        (prints a table: us a pass, GB/s of the bytes the stages hold) */
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <vector>

#include "cuda_check.h"
#include "hopper_ptx.cuh"

enum Mode { kTensor2d, kTensor3d, kBulk, kCpAsync, kTiles };

struct Job {
  Mode mode;
  int rows, groups; /* R, G (tensor, cp.async) */
  int bulk_bytes;   /* bulk */
  int with_x;       /* an activation tile copy a stage too */
  int wait;         /* 0: mbarrier.try_wait loop; 1: test_wait spin; 2: try_wait, 20 ns hint */
};

/* The three ways to wait for an mbarrier phase (Job::wait). */
__device__ __forceinline__ void wait_phase(uint32_t bar, uint32_t parity, int how) {
  if (how == 0) {
    mbar_wait(bar, parity);
  } else if (how == 1) {
    asm volatile(
        "{\n.reg .pred done;\nTEST_%=:\n"
        "mbarrier.test_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra TEST_%=;\n}\n" ::"r"(bar), "r"(parity) : "memory");
  } else {
    asm volatile(
        "{\n.reg .pred done;\nHINT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1, %2;\n"
        "@!done bra HINT_%=;\n}\n" ::"r"(bar), "r"(parity), "r"(20) : "memory");
  }
}

constexpr int kN = 32768, kK = 7168, kGroups = kK / 128;
constexpr int kSmem = 200 * 1024;
constexpr int kMaxStages = 64;
constexpr int kXRows = 64;

struct Params {
  const uint8_t *w;
  Job job;
  int stage_bytes, stages;
};

__global__ void __launch_bounds__(256, 1)
    stream_kernel(const __grid_constant__ CUtensorMap map_w, const __grid_constant__ CUtensorMap map_x,
                  const Params p) {
  extern __shared__ uint8_t smem_raw[];
  uint8_t *ring = reinterpret_cast<uint8_t *>(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
  uint8_t *x_ring = ring + p.stages * p.stage_bytes;
  uint64_t *full = reinterpret_cast<uint64_t *>(x_ring + (p.job.with_x ? p.stages * kXRows * 128 : 0));
  uint64_t *empty = full + p.stages;
  const Job &j = p.job;
  if (threadIdx.x == 0) {
    for (int s = 0; s < p.stages; s++) {
      mbar_init(smem_addr(full + s), j.mode == kCpAsync ? 129 : 1);
      mbar_init(smem_addr(empty + s), 1);
    }
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    fence_proxy_async();
  }
  __syncthreads();
  /* The work: this CTA's stages. Tensor and cp.async: row blocks c, c +
   * grid, ..., each over all K groups (G a stage), as a row slice; bulk:
   * chunks c, c + grid, ... */
  const int per_block = j.mode == kBulk ? 1 : kGroups / j.groups;
  const long long blocks = j.mode == kBulk ? (long long)kN * kK / j.bulk_bytes : kN / j.rows;
  const long long mine = blocks > blockIdx.x ? (blocks - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
  const long long units = mine * per_block;
  if (threadIdx.x >= 128) {
    /* The consumer warp: wait for each stage, free it. */
    if (threadIdx.x >= 160) return;
    int stage = 0;
    uint32_t phase = 0;
    for (long long u = 0; u < units; u++) {
      wait_phase(smem_addr(full + stage), phase, j.wait);
      __syncwarp();
      if (threadIdx.x == 128) mbar_arrive(smem_addr(empty + stage));
      if (++stage == p.stages) stage = 0, phase ^= 1;
    }
    return;
  }
  if (j.mode != kCpAsync && threadIdx.x != 0) return;
  int stage = 0;
  uint32_t phase = 0;
  for (long long u = 0; u < units; u++) {
    const uint32_t bar = smem_addr(full + stage);
    uint8_t *dst = ring + stage * p.stage_bytes;
    wait_phase(smem_addr(empty + stage), phase ^ 1, j.wait);
    const long long block = blockIdx.x + (u / per_block) * gridDim.x;
    const int row0 = j.mode == kBulk ? 0 : (int)block * j.rows;
    const int g0 = j.mode == kBulk ? 0 : (int)(u % per_block) * j.groups;
    if (j.mode == kCpAsync) {
      /* Rows of 128 bytes, swizzled as the tensor copies would. */
      if (threadIdx.x == 0)
        mbar_arrive_expect_tx(bar, j.with_x ? kXRows * 128 : 0);
      const int pieces = j.rows * j.groups * 8;
      for (int i = threadIdx.x; i < pieces; i += 128) {
        const int g = i / (j.rows * 8), r = (i / 8) % j.rows, c = i % 8;
        const uint8_t *src = p.w + (size_t)(row0 + r) * kK + (size_t)(g0 + g) * 128 + c * 16;
        const uint32_t d = smem_addr(dst + (g * j.rows + r) * 128 + ((c ^ (r & 7)) * 16));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
      }
      asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(bar) : "memory");
      if (threadIdx.x == 0 && j.with_x)
        tma_load_2d(smem_addr(x_ring + stage * kXRows * 128), &map_x, g0 * 128, 0, bar);
    } else {
      mbar_arrive_expect_tx(bar, p.stage_bytes + (j.with_x ? kXRows * 128 : 0));
      if (j.mode == kTensor2d) {
        for (int g = 0; g < j.groups; g++)
          tma_load_2d(smem_addr(dst + g * j.rows * 128), &map_w, (g0 + g) * 128, row0, bar);
      } else if (j.mode == kTensor3d) {
        asm volatile(
            "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], "
            "[%1, {%2, %3, %4}], [%5];" ::"r"(smem_addr(dst)),
            "l"(reinterpret_cast<uint64_t>(&map_w)), "r"(0), "r"(row0), "r"(g0), "r"(bar)
            : "memory");
      } else if (j.mode == kTiles) {
        const uint8_t *tile = p.w + (size_t)(row0 / 128) * 128 * kK + (size_t)g0 * 128 * 128 +
                              (size_t)(row0 % 128) * 128;
        for (int g = 0; g < j.groups; g++)
          bulk_load(smem_addr(dst + g * j.rows * 128), tile + (size_t)g * 128 * 128, j.rows * 128, bar);
      } else {
        bulk_load(smem_addr(dst), p.w + (size_t)block * j.bulk_bytes, j.bulk_bytes, bar);
      }
      if (j.with_x) tma_load_2d(smem_addr(x_ring + stage * kXRows * 128), &map_x, g0 * 128, 0, bar);
    }
    if (++stage == p.stages) stage = 0, phase ^= 1;
  }
}

typedef CUresult (*EncodeFn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                             const cuuint64_t *, const cuuint32_t *, const cuuint32_t *,
                             CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion,
                             CUtensorMapFloatOOBfill);

int main() {
  void *fn = NULL;
  cudaDriverEntryPointQueryResult query;
  CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &query));
  EncodeFn encode = reinterpret_cast<EncodeFn>(fn);
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  uint8_t *w, *x;
  CHECK(cudaMalloc(&w, (size_t)kN * kK));
  CHECK(cudaMalloc(&x, (size_t)kXRows * kK));
  CHECK(cudaMemset(w, 0x3c, (size_t)kN * kK));
  CHECK(cudaMemset(x, 0x3c, (size_t)kXRows * kK));
  CHECK(cudaFuncSetAttribute(stream_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem + 1024));
  std::vector<Job> jobs;
  for (int how = 1; how <= 2; how++) {
    for (int r : {8, 32, 128}) jobs.push_back({kTensor2d, r, 1, 0, 0, how});
    jobs.push_back({kBulk, 0, 1, 4096, 0, how});
    jobs.push_back({kTensor2d, 32, 1, 0, 1, how});
  }
  for (int r : {8, 32, 64, 128, 256}) jobs.push_back({kTensor2d, r, 1, 0, 0});
  for (int r : {32, 128}) jobs.push_back({kTensor2d, r, 1, 0, 1});
  for (int g : {2, 4, 8}) jobs.push_back({kTensor2d, 32, g, 0, 0});
  for (int g : {2, 4, 8}) jobs.push_back({kTensor3d, 32, g, 0, 0});
  jobs.push_back({kTensor3d, 32, 4, 0, 1});
  jobs.push_back({kTensor3d, 8, 16, 0, 0});
  jobs.push_back({kTensor3d, 64, 2, 0, 0});
  for (int b : {1024, 4096, 16384, 65536}) jobs.push_back({kBulk, 0, 1, b, 0});
  for (int g : {1, 4}) jobs.push_back({kCpAsync, 32, g, 0, 0});
  jobs.push_back({kCpAsync, 32, 4, 0, 1});
  jobs.push_back({kCpAsync, 128, 1, 0, 0});
  /* Session 18: the row slices of the preshuffled layout read slower than
   * the plain layout's (4096 x 7168 at M = 1: 17.5 against 13.6 us). */
  for (int g : {1, 4}) jobs.push_back({kTiles, 32, g, 0, 0});
  jobs.push_back({kTiles, 32, 4, 0, 1});
  jobs.push_back({kTiles, 64, 2, 0, 0});
  jobs.push_back({kTiles, 128, 1, 0, 0});
  jobs.push_back({kTiles, 8, 16, 0, 0});
  /* Session 19: the K run a row against the rows a stage, at stages of
   * 14-16 KiB where G divides K's 56 groups (session 17's 8 x 16 read 48 of
   * them and was divided by all 56: 3.2 TB/s was 2.7). */
  jobs.push_back({kTensor3d, 8, 14, 0, 0});
  jobs.push_back({kTensor3d, 16, 7, 0, 0});
  jobs.push_back({kTensor3d, 8, 28, 0, 0});
  jobs.push_back({kTensor3d, 128, 2, 0, 0});
  static const char *names[] = {"tensor2d", "tensor3d", "bulk", "cp.async", "tiles"};
  printf("| copies | stage KiB | stages | us | GB/s (bytes read) |\n|---|---|---|---|---|\n");
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  for (const Job &j : jobs) {
    CUtensorMap map_w, map_x;
    const cuuint32_t elem1[3] = {1, 1, 1};
    if (j.mode == kTensor3d) {
      const cuuint64_t dims[3] = {128, (cuuint64_t)kN, (cuuint64_t)kGroups};
      const cuuint64_t strides[2] = {(cuuint64_t)kK, 128};
      const cuuint32_t box[3] = {128, (cuuint32_t)j.rows, (cuuint32_t)j.groups};
      if (encode(&map_w, CU_TENSOR_MAP_DATA_TYPE_UINT8, 3, w, dims, strides, box, elem1,
                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
        printf("| tensor3d %d x %d | encode failed | | | |\n", j.rows, j.groups);
        continue;
      }
    } else {
      const cuuint64_t dims[2] = {(cuuint64_t)kK, (cuuint64_t)kN};
      const cuuint64_t strides[1] = {(cuuint64_t)kK};
      const cuuint32_t box[2] = {128, (cuuint32_t)std::max(j.rows, 1)};
      if (encode(&map_w, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, w, dims, strides, box, elem1,
                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS) {
        printf("| %s encode failed |\n", names[j.mode]);
        continue;
      }
    }
    {
      const cuuint64_t dims[2] = {(cuuint64_t)kK, (cuuint64_t)kXRows};
      const cuuint64_t strides[1] = {(cuuint64_t)kK};
      const cuuint32_t box[2] = {128, kXRows};
      encode(&map_x, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, x, dims, strides, box, elem1,
             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    }
    Params p;
    p.w = w;
    p.job = j;
    p.stage_bytes = j.mode == kBulk ? j.bulk_bytes : j.rows * j.groups * 128;
    const int per_stage = p.stage_bytes + (j.with_x ? kXRows * 128 : 0);
    p.stages = std::min(kMaxStages, (kSmem - 2048) / per_stage);
    if (p.stages < 2) {
      printf("| %s: stage too large |\n", names[j.mode]);
      continue;
    }
    const size_t smem = 1024 + (size_t)p.stages * per_stage + (size_t)p.stages * 16;
    std::vector<float> times;
    for (int rep = 0; rep < 7; rep++) {
      CHECK(cudaEventRecord(a));
      stream_kernel<<<sms, 256, smem>>>(map_w, map_x, p);
      CHECK(cudaEventRecord(b));
      CHECK(cudaEventSynchronize(b));
      float ms = 0;
      CHECK(cudaEventElapsedTime(&ms, a, b));
      times.push_back(ms);
    }
    CHECK(cudaGetLastError());
    std::sort(times.begin(), times.end());
    const double us = times[times.size() / 2] * 1000.0;
    char label[64];
    if (j.mode == kBulk) snprintf(label, sizeof label, "bulk %d B", j.bulk_bytes);
    else snprintf(label, sizeof label, "%s %d x %d%s", names[j.mode], j.rows, j.groups, j.with_x ? " +x" : "");
    static const char *waits[] = {"", ", test_wait spin", ", try_wait 20 ns hint"};
    snprintf(label + strlen(label), sizeof label - strlen(label), "%s", waits[j.wait]);
    /* The bytes the job's stages hold: all of the matrix unless G does not
     * divide K's groups (then the last K groups of every row are left out). */
    const double bytes = j.mode == kBulk ? (double)kN * kK
                                         : (double)(kN / j.rows) * (kGroups / j.groups) * p.stage_bytes;
    printf("| %s | %.1f | %d | %.1f | %.0f |\n", label, p.stage_bytes / 1024.0, p.stages, us,
           bytes / us / 1e3);
  }
  return 0;
}
