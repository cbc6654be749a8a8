/* Run-time detection of the AVX2 kernels' requirements: AVX2, FMA and F16C
 * from CPUID, and the OS saving YMM state (OSXSAVE, then XCR0 bits 1-2). */
#include "cpu_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t read_xcr0(void) {
  uint32_t low, high;
  /* xgetbv with ecx = 0; written as asm so this file needs no -mxsave. */
  __asm__ __volatile__("xgetbv" : "=a"(low), "=d"(high) : "c"(0));
  return ((uint64_t)high << 32) | low;
}

bool cpu_detect_avx2(void) {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const bool fma = ecx & (1u << 12), osxsave = ecx & (1u << 27), avx = ecx & (1u << 28),
             f16c = ecx & (1u << 29);
  if (!(fma && osxsave && avx && f16c)) return false;
  if ((read_xcr0() & 0x6) != 0x6) return false; /* XMM and YMM state enabled */
  if (__get_cpuid_max(0, NULL) < 7) return false;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  return (ebx & (1u << 5)) != 0; /* AVX2 */
}
#else
bool cpu_detect_avx2(void) { return false; }
#endif
