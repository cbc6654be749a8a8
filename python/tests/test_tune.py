"""fp8gemm.tune: runs the command-line tool and yields a table contexts load."""

from __future__ import annotations

import csv

import pytest

import fp8gemm
from fp8gemm.tuning import find_cli


def read_table(path) -> list:
    """The table's rows (its first lines, starting with '#', say how it was made)."""
    with open(path, newline="") as handle:
        lines = list(handle)
    assert lines[0].startswith("# Written by `fp8gemm tune ")
    return list(csv.DictReader(line for line in lines if not line.startswith("#")))


try:
    find_cli()
except fp8gemm.Error as exc:
    pytest.skip(f"no fp8gemm tool: {exc}", allow_module_level=True)


def test_tune_writes_a_table_that_decides_layouts(tmp_path) -> None:
    table = fp8gemm.tune(
        [(256, 512, [1, 16]), (200, 272, [3])], tmp_path / "table.csv", budget_seconds=0.01
    )
    rows = read_table(table)
    assert [(int(r["N"]), int(r["K"])) for r in rows] == [(256, 512), (200, 272)]
    assert rows[0]["m_values"].split() == ["1", "16"]
    assert all(r["backend"] == "cpu" and r["layout"] in ("plain", "preshuffled") for r in rows)
    # The small-M / large-M kernel crossover, measured on the tool's ladder of M values.
    ladder = ("1", "2", "4", "8", "12", "16", "24", "32", "48", "64")  # the CPU default
    assert all(r["crossover_m"] in ("0",) + ladder for r in rows)
    with fp8gemm.Context("cpu", tuned_table=table) as context:
        for row in rows:
            expected = (
                fp8gemm.Layout.PLAIN if row["layout"] == "plain" else context.preshuffled_layout
            )
            assert context.choose_layout(int(row["N"]), int(row["K"])) is expected


def test_tune_reads_a_shapes_file(tmp_path) -> None:
    shapes = tmp_path / "shapes.csv"
    shapes.write_text("# set,N,K,M values\nsmall,128,256,2 8\n")
    table = fp8gemm.tune(shapes, tmp_path / "t.csv", device="*", budget_seconds=0.01)
    (row,) = read_table(table)
    assert (row["device"], row["N"], row["K"]) == ("*", "128", "256")
    table = fp8gemm.tune(shapes, tmp_path / "u.csv", budget_seconds=0.01, crossover_m=[2, 8])
    (row,) = read_table(table)
    assert row["crossover_m"] in ("0", "2", "8")
    table = fp8gemm.tune(shapes, tmp_path / "v.csv", budget_seconds=0.01, crossover_m="none")
    (row,) = read_table(table)
    assert row["crossover_m"] == "default"


def test_tool_failures_raise_with_its_message(tmp_path) -> None:
    shapes = tmp_path / "shapes.csv"
    shapes.write_text("small,128,250,2\n")  # K not a multiple of 16
    with pytest.raises(fp8gemm.Error) as caught:
        fp8gemm.tune(shapes, tmp_path / "t.csv", budget_seconds=0.01)
    assert "exited with" in str(caught.value)
    with pytest.raises(fp8gemm.InvalidArgumentError, match="must be positive"):
        fp8gemm.tune([(0, 128, [1])], tmp_path / "t.csv")
