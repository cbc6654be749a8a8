"""pytest hooks (markers, GPU skips) and shared fixtures."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs CUDA, torch and libfp8gemm's CUDA backend")
    config.addinivalue_line("markers", "torch: needs PyTorch")


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device"
    import fp8gemm

    if not fp8gemm.backend_available("cuda"):
        return f"{fp8gemm.LIBRARY_PATH} has no usable CUDA backend (not built in, or no Hopper GPU)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    reason = _gpu_skip_reason()
    if reason:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


@pytest.fixture(scope="session")
def cpu_context():
    import fp8gemm

    with fp8gemm.Context("cpu") as context:
        yield context
