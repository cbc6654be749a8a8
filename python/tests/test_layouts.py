"""Weight layouts: AITER's (16,16) shuffle against a numpy reshape/transpose
written from REFERENCE section 3, round trips, offsets and shape rules."""

from __future__ import annotations

import numpy as np
import pytest

import fp8gemm

AITER_SHAPES = [(16, 32), (32, 64), (48, 96), (128, 256), (256, 7168 // 14), (2112 // 4, 160)]
ALL_LAYOUTS = ["plain", "preshuffled_cpu", "preshuffled_sm90", "aiter16x16"]


def aiter16x16_numpy(plain: np.ndarray) -> np.ndarray:
    """REFERENCE section 3: (n, k) goes to byte
    ``(n/16)*16*K + (k/32)*512 + ((k/16)%2)*256 + (n%16)*16 + (k%16)``.

    With n = 16a + b and k = 32c + 16d + e that is a*16K + c*512 + d*256 +
    b*16 + e: the axes (a, b, c, d, e) of the plain array, reordered to
    (a, c, d, b, e)."""
    N, K = plain.shape
    return plain.reshape(N // 16, 16, K // 32, 2, 16).transpose(0, 2, 3, 1, 4).reshape(N, K)


def aiter16x16_formula(N: int, K: int, n: int, k: int) -> int:
    return (n // 16) * 16 * K + (k // 32) * 512 + ((k // 16) % 2) * 256 + (n % 16) * 16 + (k % 16)


def random_bytes(rng, N, K) -> np.ndarray:
    return rng.integers(0, 256, size=(N, K), dtype=np.uint8)


@pytest.mark.parametrize("N, K", AITER_SHAPES)
def test_aiter16x16_shuffle_matches_numpy_reshape_transpose(rng, N, K) -> None:
    plain = random_bytes(rng, N, K)
    shuffled = fp8gemm.shuffle(plain, "aiter16x16")
    assert np.array_equal(shuffled, aiter16x16_numpy(plain))
    assert np.array_equal(fp8gemm.unshuffle(shuffled, "aiter16x16"), plain)


@pytest.mark.parametrize("N, K", [(16, 32), (32, 64), (48, 160)])
def test_aiter16x16_offsets_match_the_formula_for_every_element(N, K) -> None:
    offsets = np.array(
        [[fp8gemm.layout_offset("aiter16x16", N, K, n, k) for k in range(K)] for n in range(N)]
    )
    expected = np.array([[aiter16x16_formula(N, K, n, k) for k in range(K)] for n in range(N)])
    assert np.array_equal(offsets, expected)
    # ... and the numpy transpose puts element (n, k) at that byte.
    index = np.arange(N * K).reshape(N, K)
    moved = aiter16x16_numpy(index).ravel()
    assert np.array_equal(np.argsort(moved).reshape(N, K), expected)


def test_aiter16x16_tile_structure_by_hand() -> None:
    N, K = 32, 64
    # Second 16-row tile starts at 16*K; the second 32-byte K tile at 512; the
    # upper 16-wide half of a K tile at 256; rows 16 bytes apart.
    assert fp8gemm.layout_offset("aiter16x16", N, K, 16, 0) == 16 * K
    assert fp8gemm.layout_offset("aiter16x16", N, K, 0, 32) == 512
    assert fp8gemm.layout_offset("aiter16x16", N, K, 0, 16) == 256
    assert fp8gemm.layout_offset("aiter16x16", N, K, 1, 0) == 16
    assert fp8gemm.layout_offset("aiter16x16", N, K, 31, 63) == N * K - 1


@pytest.mark.parametrize(
    "N, K, message",
    [(24, 64, "N % 16 == 0, got N=24"), (32, 48, "K % 32 == 0, got K=48"), (200, 272, "N=200")],
)
def test_aiter16x16_refuses_shapes_with_a_message(rng, N, K, message) -> None:
    plain = random_bytes(rng, N, K)
    with pytest.raises(fp8gemm.InvalidArgumentError, match=message):
        fp8gemm.shuffle(plain, "aiter16x16")
    with pytest.raises(fp8gemm.InvalidArgumentError, match="aiter16x16 needs"):
        fp8gemm.unshuffle(plain, "aiter16x16")
    with pytest.raises(fp8gemm.InvalidArgumentError, match="aiter16x16 needs"):
        fp8gemm.check_layout("aiter16x16", N, K)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="aiter16x16 needs"):
        fp8gemm.layout_offset("aiter16x16", N, K, 0, 0)
    scale_inv = np.ones((-(-N // 128), -(-K // 128)), dtype=np.float32)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="aiter16x16 needs"):
        fp8gemm.Weight(plain, scale_inv, layout="aiter16x16")


def test_preshuffled_cpu_offsets_are_16_row_panels_k_major() -> None:
    N, K = 40, 48  # panels of 16, 16 and 8 rows
    for n in range(N):
        for k in range(K):
            panel, rows = n // 16, min(16, N - 16 * (n // 16))
            expected = panel * 16 * K + k * rows + n % 16
            assert fp8gemm.layout_offset("preshuffled_cpu", N, K, n, k) == expected


@pytest.mark.parametrize("layout", ALL_LAYOUTS)
@pytest.mark.parametrize("N, K", [(16, 32), (48, 160), (128, 256), (256, 384)])
def test_every_layout_round_trips_bit_exactly(rng, layout, N, K) -> None:
    plain = random_bytes(rng, N, K)
    shuffled = fp8gemm.shuffle(plain, layout)
    # A bijection: the bytes are a permutation of the input's, placed where
    # layout_offset says.
    offsets = np.array([fp8gemm.layout_offset(layout, N, K, n, k) for n in range(N) for k in (0, K - 1)])
    values = np.array([plain[n, k] for n in range(N) for k in (0, K - 1)])
    assert np.array_equal(shuffled.ravel()[offsets], values)
    assert np.array_equal(np.sort(shuffled.ravel()), np.sort(plain.ravel()))
    assert np.array_equal(fp8gemm.unshuffle(shuffled, layout), plain)


def test_shuffle_in_place_and_between_non_plain_layouts(rng) -> None:
    plain = random_bytes(rng, 64, 128)
    work = plain.copy()
    assert fp8gemm.shuffle(work, "aiter16x16", out=work) is work
    assert np.array_equal(work, aiter16x16_numpy(plain))
    cpu_order = fp8gemm.shuffle(work, "preshuffled_cpu", from_layout="aiter16x16")
    assert np.array_equal(cpu_order, fp8gemm.shuffle(plain, "preshuffled_cpu"))


def test_shuffle_keeps_the_fp8_dtype_of_its_input(rng) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    plain = random_bytes(rng, 32, 64).view(ml_dtypes.float8_e4m3fn)
    shuffled = fp8gemm.shuffle(plain, "aiter16x16")
    assert shuffled.dtype == plain.dtype
    assert np.array_equal(shuffled.view(np.uint8), aiter16x16_numpy(plain.view(np.uint8)))


def test_layout_offset_refuses_elements_outside() -> None:
    with pytest.raises(fp8gemm.InvalidArgumentError, match="outside"):
        fp8gemm.layout_offset("plain", 16, 32, 16, 0)


def test_weight_export_in_every_layout_is_the_shuffle(rng) -> None:
    plain = random_bytes(rng, 128, 256) & 0x7E  # no NaN codes (0x7F / 0xFF)
    scale_inv = np.full((1, 2), 0.01, dtype=np.float32)
    weight = fp8gemm.Weight(plain, scale_inv)
    for layout in ALL_LAYOUTS:
        assert np.array_equal(weight.export(layout), fp8gemm.shuffle(plain, layout)), layout
