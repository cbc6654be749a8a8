/* Host-side plans of the CUDA kernels, checked without a GPU (runs in CI).
 *
 * The row-slice kernel's ring (gemm_slice.cu): its two consumer warpgroups
 * take alternate stages, which is race-free only with an even number of
 * stages (session 19: an odd ring let a warpgroup pass the parity wait of a
 * slot whose previous phase had not landed). Every ring the planner gives
 * must be even, fit the 227 KiB of shared memory, honour a requested depth,
 * and be the deepest even ring that fits. The panels' ring (same kernel
 * file) also holds the final sums of both warpgroups once the steps are
 * done. */
#include <stddef.h>
#include <stdio.h>

#include "testutil.h"

#include "cuda/cuda_internal.h"

static const int kWidths[] = {8, 16, 24, 32, 40, 48, 56, 64, 96, 128, 192};
static const int kXRows[] = {8, 16, 32, 64};
static const int kWants[] = {0, 1, 2, 3, 4, 5, 7, 9, 16, 31, 33};
enum { kMaxGroups = 128, kMaxStages = 32, kSmemBudget = 227 * 1024 };

static void test_slice_ring_even_and_fits(void **state) {
  (void)state;
  int plans = 0;
  for (size_t wi = 0; wi < sizeof kWidths / sizeof kWidths[0]; wi++)
    for (size_t xi = 0; xi < sizeof kXRows / sizeof kXRows[0]; xi++)
      for (int groups = 1; groups <= kMaxGroups; groups++)
        for (size_t qi = 0; qi < sizeof kWants / sizeof kWants[0]; qi++) {
          const int S = kWidths[wi], x_rows = kXRows[xi], want = kWants[qi];
          size_t bytes = 0;
          const int stages = fp8gemm_cuda_slice_ring(S, x_rows, groups, want, &bytes);
          if (stages == 0) continue;
          plans++;
          if (stages % 2 != 0 || stages < 2 || stages > kMaxStages || bytes == 0 ||
              bytes > (size_t)kSmemBudget || (want > 0 && stages > (want < 2 ? 2 : want))) {
            fprintf(stderr, "S=%d x_rows=%d groups=%d want=%d: %d stages, %zu bytes\n", S, x_rows,
                    groups, want, stages, bytes);
            fail();
          }
          /* The deepest even ring: asking for two more stages changes nothing. */
          if (want == 0 && fp8gemm_cuda_slice_ring(S, x_rows, groups, stages + 2, NULL) != stages) {
            fprintf(stderr, "S=%d x_rows=%d groups=%d: %d stages, not the deepest\n", S, x_rows,
                    groups, stages);
            fail();
          }
        }
  /* Every width fits a ring at M = 1 over K = 16384. */
  for (size_t wi = 0; wi < sizeof kWidths / sizeof kWidths[0]; wi++)
    assert_true(fp8gemm_cuda_slice_ring(kWidths[wi], 8, kMaxGroups, 0, NULL) >= 2);
  assert_true(plans > 1000);
}

static void test_panel_ring_even_fits_and_holds_sums(void **state) {
  (void)state;
  int plans = 0;
  for (size_t xi = 0; xi < sizeof kXRows / sizeof kXRows[0]; xi++)
    for (int groups = 1; groups <= kMaxGroups; groups++)
      for (size_t qi = 0; qi < sizeof kWants / sizeof kWants[0]; qi++) {
        const int x_rows = kXRows[xi], want = kWants[qi];
        size_t bytes = 0, ring = 0, handoff = 0;
        const int stages = fp8gemm_cuda_panel_ring(x_rows, groups, want, &bytes, &ring, &handoff);
        /* Every panel plan fits (64-row stages of two groups, at most 32 KiB). */
        if (stages % 2 != 0 || stages < 2 || stages > kMaxStages || bytes > (size_t)kSmemBudget ||
            ring > bytes || handoff > ring || handoff < (size_t)2 * x_rows * 64 * 4 ||
            (want > 0 && stages > (want < 2 ? 2 : want)) ||
            (want == 0 &&
             fp8gemm_cuda_panel_ring(x_rows, groups, stages + 2, NULL, NULL, NULL) != stages)) {
          fprintf(stderr, "panel x_rows=%d groups=%d want=%d: %d stages, %zu bytes, ring %zu, sums %zu\n",
                  x_rows, groups, want, stages, bytes, ring, handoff);
          fail();
        }
        plans++;
      }
  assert_int_equal(plans, 4 * kMaxGroups * (int)(sizeof kWants / sizeof kWants[0]));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_slice_ring_even_and_fits),
      cmocka_unit_test(test_panel_ring_even_fits_and_holds_sums),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
