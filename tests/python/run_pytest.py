#!/usr/bin/env python3
"""ctest's entry point for the Python suite: ``run_pytest.py DIR...``.

Exit codes for ctest (SKIP_RETURN_CODE 77):
  77  pytest or numpy is not installed (the message says which and how to get
      it), or every collected directory holds no test (pytest's 5);
  otherwise pytest's own (0 passed, 1 failed, ...).

Directories that do not exist are left out, so ctest can name both
tests/python and python/tests whichever holds the tests. The environment
(FP8GEMM_LIBRARY, FP8GEMM_CLI, PYTHONPATH) comes from ctest.
"""

from __future__ import annotations

import importlib.util
import os
import sys

SKIP = 77
PYTEST_NO_TESTS_COLLECTED = 5


def main(argv: list[str]) -> int:
    missing = [name for name in ("pytest", "numpy") if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"SKIP: the Python tests need {' and '.join(missing)} "
            f"(python3 -m pip install {' '.join(missing)} ml_dtypes)",
            flush=True,
        )
        return SKIP
    directories = [d for d in argv if os.path.isdir(d)]
    if not directories:
        print(f"SKIP: none of the test directories exists: {argv}", flush=True)
        return SKIP
    import pytest

    # -p no:cacheprovider: never write .pytest_cache into the source tree.
    status = int(pytest.main(["-q", "-rs", "-p", "no:cacheprovider", *directories]))
    if status == PYTEST_NO_TESTS_COLLECTED:
        print(f"SKIP: pytest collected no test in {directories}", flush=True)
        return SKIP
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
