/* FP8GEMM_LAYOUT_PRESHUFFLED_SM90: the byte order the Hopper kernels read.
 *
 * Order. The weight W[N, K] is cut into 128-row block rows (the last holds
 * R = N % 128 rows when N is not a multiple of 128), and each block row into
 * 128-wide K tiles (the last holds KW = K % 128 columns). Block rows follow
 * each other; inside a block row the tiles follow each other along K; each
 * tile is R x KW contiguous bytes. So element (n, k) lies at
 *
 *   nb*128*K + kb*128*R + [inside the tile]      nb = n/128, kb = k/128
 *
 * and inside a full-width tile (KW == 128) row r = n % 128 takes 128 bytes
 * at r*128, with its eight 16-byte chunks permuted: chunk c = (k%128)/16 of
 * row r sits at chunk position c ^ (r % 8):
 *
 *   r*128 + (((k%128)/16) ^ (r%8))*16 + k%16
 *
 * A last, narrower tile (K % 128 != 0) keeps rows of KW bytes unpermuted:
 * r*KW + k%128.
 *
 * Why. That permutation is exactly what the Hopper tensor-memory engine's
 * 128-byte swizzle writes into shared memory, and what wgmma reads for a
 * K-major operand with the 128B swizzle mode (16-byte chunk address bits
 * [4:6] XOR row bits [7:9], on a 1024-byte-aligned tile). A 128 x 128 tile
 * of B is therefore 16 KiB of contiguous bytes that the large-M kernel moves
 * with one 1-D bulk copy (cp.async.bulk) into a 1024-aligned stage, with no
 * tensor map and no swizzle arithmetic, and that the wgmma descriptors read
 * directly; a partial block row (N % 128) is just a shorter copy (R*128
 * bytes) of the same tile. The permutation also spreads the eight rows of a
 * core matrix over all 32 shared-memory banks, so the tensor cores read the
 * tile without bank conflicts. The small-M kernel streams the same bytes from
 * HBM straight into registers: each thread loads whole 16-byte chunks (16
 * consecutive k of one row), and a warp's 16 rows x 128 bytes are one
 * contiguous 2 KiB run, so every load is 16 bytes wide and fully coalesced
 * and every DRAM page is read front to back. The narrow last tile is loaded
 * by threads and swizzled into shared memory by the kernel (it is at most
 * one tile in K/128 + 1).
 *
 * The map is a bijection onto [0, N*K): block rows partition it, tiles
 * partition a block row, and inside a tile (r, chunk) -> (r, chunk ^ (r%8))
 * is a permutation of the eight chunks of row r. Any N >= 1 and any K that
 * is a multiple of 16 can take it (K % 16 keeps every chunk whole). */
#include "internal.h"

fp8gemm_status fp8gemm_layout_sm90_check(size_t N, size_t K) {
  if (N == 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "layout preshuffled_sm90 needs N >= 1, got N=%zu", N);
  if (K == 0 || K % 16 != 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "layout preshuffled_sm90 needs K to be a positive multiple of 16, "
                             "got K=%zu",
                             K);
  return FP8GEMM_OK;
}

size_t fp8gemm_layout_sm90_offset(size_t N, size_t K, size_t n, size_t k) {
  const size_t block_row = n / 128, row = n % 128;
  const size_t rows_in_block = (N - block_row * 128) < 128 ? (N - block_row * 128) : 128;
  const size_t tile = k / 128, col = k % 128;
  const size_t tile_width = (K - tile * 128) < 128 ? (K - tile * 128) : 128;
  const size_t tile_base = block_row * 128 * K + tile * 128 * rows_in_block;
  if (tile_width < 128) return tile_base + row * tile_width + col;
  return tile_base + row * 128 + (((col / 16) ^ (row % 8)) * 16) + col % 16;
}
