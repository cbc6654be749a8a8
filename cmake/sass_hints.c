/* fp8gemm_sass_hints: lets the warp scheduler switch warps inside the
 * large-M GEMM's promotion, by editing the scheduling hints ptxas wrote into
 * the SASS of a built object, archive or shared library, in place. No
 * instruction, register or operand changes: results stay bit for bit.
 *
 * Why: after each K group a consumer warpgroup waits for its wgmma batch and
 * then runs ~64 FFMAs in a row (acc += partial * scale), while the other
 * warpgroup's warps, on the same SM sub-partitions, need issue slots for
 * their next wgmma batch. ptxas marks every other FFMA of such a run "stay
 * on this warp" (the one that sets an operand-reuse flag, so the next FFMA
 * reads the reuse cache), and the scheduler then tends to stay on the
 * promoting warp. Clearing those hints (and the reuse flags they protect: a
 * warp switch empties the reuse cache) on the runs' FFMAs lets the other
 * warps in earlier. DeepGEMM describes gains from FFMA interleaving of this
 * kind; this is our own implementation of the idea
 * (bench/results/cuda-*-s13.md: what it measured on our kernels).
 *
 * Encoding (sm_90, 128-bit instructions, little endian, control bits in the
 * high 64-bit word): stall count bits 41-44, yield hint bit 45 (set: stay),
 * barriers 46-57, operand reuse flags 58-61. FFMA with register operands is
 * opcode 0x223 (low 12 bits of the low word).
 *
 * The device code must be stored uncompressed in the fatbinary (nvcc
 * --no-compress): the tool finds the embedded CUDA ELF images by their
 * header and edits the .text sections of kernels whose names contain
 * --kernels.
 *
 *   fp8gemm_sass_hints [--kernels NAME] [--min-run N] [--share F] [--check] FILE...
 *
 * --share edits only the first F (0..1) of each run (experiments);
 * --check edits nothing and fails if a matching kernel still has hints to
 * clear (or none is found). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kEmCuda = 190, kFfma = 0x223 };
static const uint64_t kYieldBit = 1ull << 45;
static const uint64_t kReuseBits = 0xFull << 58;

typedef struct {
  const char *kernels;
  size_t min_run;
  double share;
  int check;
  long kernels_seen, runs, changed, left;
} Options;

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) { return (uint32_t)rd16(p) | (uint32_t)rd16(p + 2) << 16; }
static uint64_t rd64(const unsigned char *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Clears the hints on the FFMAs of each run of at least min_run FFMAs in
 * the code at text[0..size) (the first `share` of the run). */
static void edit_code(unsigned char *text, size_t size, Options *o) {
  const size_t n = size / 16;
  size_t i = 0;
  while (i < n) {
    size_t j = i;
    while (j < n && (rd64(text + 16 * j) & 0xFFF) == kFfma) j++;
    if (j - i >= o->min_run) {
      o->runs++;
      const size_t end = i + (size_t)((double)(j - i) * o->share + 0.5);
      for (size_t k = i; k < end; k++) {
        unsigned char *hi = text + 16 * k + 8;
        const uint64_t word = rd64(hi);
        if (!(word & kYieldBit)) continue;
        if (o->check) {
          o->left++;
        } else {
          wr64(hi, word & ~(kYieldBit | kReuseBits));
          o->changed++;
        }
      }
    }
    i = j > i ? j : i + 1;
  }
}

/* The CUDA ELF image at data[base..size), if its headers hold together. */
static void edit_image(unsigned char *data, size_t size, size_t base, Options *o) {
  const unsigned char *h = data + base;
  if (size - base < 64 || h[4] != 2 /* ELFCLASS64 */ || h[5] != 1 /* little endian */ ||
      rd16(h + 18) != kEmCuda)
    return;
  const uint64_t shoff = rd64(h + 0x28);
  const uint16_t shentsize = rd16(h + 0x3A), shnum = rd16(h + 0x3C), shstrndx = rd16(h + 0x3E);
  if (shentsize < 64 || shstrndx >= shnum || shoff > size - base ||
      (uint64_t)shnum * shentsize > size - base - shoff)
    return;
  const unsigned char *sh = h + shoff;
  const uint64_t str_off = rd64(sh + (size_t)shstrndx * shentsize + 0x18);
  const uint64_t str_size = rd64(sh + (size_t)shstrndx * shentsize + 0x20);
  if (str_off > size - base || str_size > size - base - str_off) return;
  const char *strtab = (const char *)h + str_off;
  for (unsigned s = 0; s < shnum; s++) {
    const unsigned char *e = sh + (size_t)s * shentsize;
    const uint32_t name = rd32(e);
    const uint64_t off = rd64(e + 0x18), len = rd64(e + 0x20);
    if (name >= str_size || !memchr(strtab + name, '\0', str_size - name)) continue;
    const char *sec = strtab + name;
    if (strncmp(sec, ".text.", 6) != 0 || !strstr(sec, o->kernels)) continue;
    if (off > size - base || len > size - base - off) continue;
    o->kernels_seen++;
    edit_code(data + base + off, (size_t)len, o);
  }
}

static int edit_file(const char *path, Options *o) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "fp8gemm_sass_hints: %s: %s\n", path, strerror(errno));
    return 1;
  }
  unsigned char *data = NULL;
  size_t size = 0, cap = 0, got;
  do {
    if (size == cap) {
      cap = cap ? 2 * cap : 1 << 20;
      unsigned char *bigger = realloc(data, cap);
      if (!bigger) {
        fclose(f);
        free(data);
        fprintf(stderr, "fp8gemm_sass_hints: %s: out of memory\n", path);
        return 1;
      }
      data = bigger;
    }
    got = fread(data + size, 1, cap - size, f);
    size += got;
  } while (got > 0);
  fclose(f);
  for (size_t at = 0; at + 4 <= size; at++)
    if (data[at] == 0x7f && data[at + 1] == 'E' && data[at + 2] == 'L' && data[at + 3] == 'F')
      edit_image(data, size, at, o);
  int rc = 0;
  if (!o->check && o->changed > 0) {
    f = fopen(path, "r+b");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
      fprintf(stderr, "fp8gemm_sass_hints: %s: cannot write: %s\n", path, strerror(errno));
      rc = 1;
    }
  }
  free(data);
  return rc;
}

static const char kUsage[] =
    "usage: fp8gemm_sass_hints [--kernels NAME] [--min-run N] [--share F] [--check] FILE...\n";

int main(int argc, char **argv) {
  Options o = {"gemm_large_kernel", 16, 1.0, 0, 0, 0, 0, 0};
  int first = 1;
  for (; first < argc && strncmp(argv[first], "--", 2) == 0; first++) {
    if (strcmp(argv[first], "--check") == 0) {
      o.check = 1;
    } else if (strcmp(argv[first], "--kernels") == 0 && first + 1 < argc) {
      o.kernels = argv[++first];
    } else if (strcmp(argv[first], "--share") == 0 && first + 1 < argc) {
      o.share = strtod(argv[++first], NULL);
      if (!(o.share >= 0.0 && o.share <= 1.0)) {
        fprintf(stderr, "fp8gemm_sass_hints: --share %s: not in [0, 1]\n", argv[first]);
        return 2;
      }
    } else if (strcmp(argv[first], "--min-run") == 0 && first + 1 < argc) {
      o.min_run = (size_t)strtoul(argv[++first], NULL, 10);
      if (o.min_run < 1) o.min_run = 1;
    } else {
      fprintf(stderr, "%s", kUsage);
      return 2;
    }
  }
  if (first == argc) {
    fprintf(stderr, "%s", kUsage);
    return 2;
  }
  int rc = 0;
  long left = 0; /* over all files; o.changed and o.left count one file */
  for (int i = first; i < argc; i++) {
    o.changed = o.left = 0;
    rc |= edit_file(argv[i], &o);
    left += o.left;
    printf("%s: %ld FFMAs %s\n", argv[i], o.check ? o.left : o.changed,
           o.check ? "left with hints" : "edited");
  }
  printf("%ld kernels matching \"%s\", %ld FFMA runs\n", o.kernels_seen, o.kernels, o.runs);
  if (o.kernels_seen == 0) {
    fprintf(stderr, "fp8gemm_sass_hints: no kernel matching \"%s\" in uncompressed device code\n",
            o.kernels);
    return 1;
  }
  if (o.check && left > 0) return 1;
  return rc;
}
