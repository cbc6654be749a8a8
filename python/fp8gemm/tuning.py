"""Tuning: measure plain vs preshuffled per weight shape, write a tuned table.

This runs the project's command-line tool (``fp8gemm tune``), which owns the
measurement method, so Python and C users get the same tables. The tool is
found through ``FP8GEMM_CLI``, then inside the package (``fp8gemm/bin``,
put there by ``pip install``), then on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from ._lib import package_dirs
from .enums import BackendLike, parse_backend
from .errors import Error, InvalidArgumentError, Status

PathLike = Union[str, "os.PathLike[str]"]
#: (N, K, M values) of one weight shape
Shape = tuple[int, int, Sequence[int]]


def find_cli() -> Path:
    """The ``fp8gemm`` executable, or :class:`fp8gemm.Error` (NO_DEVICE) when
    none is found."""
    candidates: list[Optional[str]] = [
        os.environ.get("FP8GEMM_CLI"),
        *(str(folder / "bin" / "fp8gemm") for folder in package_dirs()),
        shutil.which("fp8gemm"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise Error(
        "the fp8gemm command-line tool was not found: set FP8GEMM_CLI, install the package "
        "with pip (which builds it), or put fp8gemm on PATH",
        Status.NO_DEVICE,
    )


def write_shapes(shapes: Iterable[Shape], path: PathLike, set_name: str = "python") -> None:
    """Writes shapes in the format of ``shapes.csv`` (``set,N,K,M values``)."""
    lines = ["# set,N,K,M values (space separated); N x K is the weight, M the tokens"]
    for N, K, m_values in shapes:
        if N <= 0 or K <= 0 or not m_values or any(m <= 0 for m in m_values):
            raise InvalidArgumentError(f"shape ({N}, {K}, {list(m_values)}): sizes must be positive")
        lines.append(f"{set_name},{int(N)},{int(K)},{' '.join(str(int(m)) for m in m_values)}")
    Path(path).write_text("\n".join(lines) + "\n")


def tune(
    shapes: Union[PathLike, Iterable[Shape]],
    output: PathLike,
    *,
    backend: BackendLike = "cpu",
    device: Optional[str] = None,
    budget_seconds: Optional[float] = None,
    crossover_m: Union[None, str, Sequence[int]] = None,
    extra_args: Sequence[str] = (),
    timeout: Optional[float] = None,
) -> Path:
    """Measures each weight shape and writes a tuned table to ``output``.

    Args:
        shapes: a shapes CSV file (``set,N,K,M values``), or (N, K, M values)
            tuples.
        output: the table to write; pass it to :class:`fp8gemm.Context`
            (``tuned_table=``) or set ``FP8GEMM_TUNED``.
        backend: "cpu" or "cuda".
        device: the device the rows are for (default: the context's device, the
            CPU ISA or GPU name); "*" makes them apply to any device.
        budget_seconds: measuring time per shape and layout (the tool's default
            when None).
        crossover_m: the ascending M values at which the small-M and large-M
            kernels are compared for each row's ``crossover_m`` (the tool's
            ladder when None), or "none" to leave it to the backend.
        extra_args: more options for ``fp8gemm tune`` (see ``fp8gemm tune --help``).

    Returns:
        ``output`` as a Path. Raises :class:`fp8gemm.Error` with the tool's
        message when it fails.
    """
    cli = find_cli()
    backend_name = parse_backend(backend).name.lower()
    with tempfile.TemporaryDirectory(prefix="fp8gemm-tune-") as scratch:
        if isinstance(shapes, (str, os.PathLike)):
            shapes_path = Path(shapes)
        else:
            shapes_path = Path(scratch) / "shapes.csv"
            write_shapes(shapes, shapes_path)
        command = [str(cli), "tune", "--backend", backend_name, "--shapes", str(shapes_path),
                   "-o", str(output)]
        if device is not None:
            command += ["--device", device]
        if budget_seconds is not None:
            command += ["--budget", repr(float(budget_seconds))]
        if crossover_m is not None:
            rungs = crossover_m if isinstance(crossover_m, str) else ",".join(
                str(int(m)) for m in crossover_m)
            command += ["--crossover-m", rungs]
        command += list(extra_args)
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        message = (completed.stderr or completed.stdout).strip()
        raise Error(
            f"{' '.join(command)} exited with {completed.returncode}: {message}",
            Status.INVALID_ARGUMENT if completed.returncode == 2 else Status.INTERNAL,
        )
    return Path(output)
