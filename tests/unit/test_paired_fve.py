"""benchmarks/paired_fve.py: the paired FVE gain of one NLA over another on the same eval rows."""

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import load_benchmark


def write_eval(folder: Path, docs, mse, denominator=0.5) -> Path:
    """The two files `nla eval` writes that the comparison reads, with only the fields it uses."""
    folder.mkdir()
    mse = np.asarray(mse, dtype=np.float32)
    (folder / "eval.json").write_text(json.dumps(
        {"baseline_denominator": denominator, "fve": float(1 - mse.mean() / denominator)}))
    doc_ids = [f"reference/doc/{d}" for d in docs]  # eval writes the corpus's string ids
    pq.write_table(pa.table({"doc_id": doc_ids, "position": pa.array([3] * len(docs), pa.int64()),
                             "mse_nla": pa.array(mse)}), folder / "rows.parquet")
    return folder


def test_gain_is_the_fve_difference_and_its_interval_excludes_zero_when_every_row_improves():
    paired = load_benchmark("paired_fve")
    rng = np.random.default_rng(1)
    mse_a = rng.uniform(0.2, 0.8, size=200)
    mse_b = mse_a - rng.uniform(0.01, 0.05, size=200)  # B better on every row
    result = paired.paired_gain(mse_a, mse_b, 0.5)
    assert result["gain"] == pytest.approx((mse_a.mean() - mse_b.mean()) / 0.5)
    assert 0 < result["low"] < result["gain"] < result["high"]
    assert result["b_better_rows"] == 1.0


def test_noise_alone_gives_an_interval_around_zero():
    paired = load_benchmark("paired_fve")
    rng = np.random.default_rng(2)
    mse_a = rng.uniform(0.2, 0.8, size=300)
    result = paired.paired_gain(mse_a, rng.permutation(mse_a), 0.5)
    assert result["low"] < 0 < result["high"]


def test_command_joins_rows_and_refuses_evaluations_of_other_rows(tmp_path, monkeypatch, capsys):
    paired = load_benchmark("paired_fve")
    a = write_eval(tmp_path / "a", [5, 1, 9], [0.6, 0.4, 0.5])
    b = write_eval(tmp_path / "b", [9, 5, 1], [0.4, 0.5, 0.3])  # another row order: joined by key
    monkeypatch.setattr(sys, "argv", ["paired_fve.py", str(a), str(b), "--resamples", "200"])
    paired.main()
    assert "gain B - A: +0.200" in capsys.readouterr().out  # (0.5 - 0.4) / 0.5
    other = write_eval(tmp_path / "other", [5, 1, 7], [0.6, 0.4, 0.5])
    monkeypatch.setattr(sys, "argv", ["paired_fve.py", str(a), str(other)])
    with pytest.raises(SystemExit, match="different rows"):
        paired.main()


def test_answered_keeps_only_the_rows_both_answered(tmp_path, monkeypatch, capsys):
    paired = load_benchmark("paired_fve")
    a = write_eval(tmp_path / "a", [1, 2, 3], [2.0, 0.4, 0.6])  # row 1: A's answer failed (FAILED_MSE)
    b = write_eval(tmp_path / "b", [1, 2, 3], [0.5, 0.4, 0.5])
    monkeypatch.setattr(sys, "argv", ["paired_fve.py", str(a), str(b), "--resamples", "200", "--answered"])
    paired.main()
    out = capsys.readouterr().out
    assert "rows both answered: 2 of 3" in out and "gain B - A: +0.100" in out  # (0.5 - 0.45) / 0.5
