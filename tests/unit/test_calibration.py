"""The readable score: 1 - MSE/B with High/Medium/Low cut at held-out tertiles; held-out or built-in estimate."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from conftest import build_tiny_nla
from nla.autoencoder.nla import NLA
from nla.cli import app
from nla.errors import NLAError
from nla.eval.metrics import baseline
from nla.reading.calibration import (
    CALIBRATION_FILE,
    ESTIMATED_NOTE,
    Calibration,
    calibration_for,
    compute_calibration,
    read_calibration,
    save_calibration,
)
from reading_helpers import script_verbalizer, scripted_explain


def test_score_and_label():
    cal = Calibration(denominator=0.5, low=0.2, high=0.6, rows=10, scored_rows=9, source="x", estimated=False)
    assert cal.score(0.1) == pytest.approx(0.8) and cal.score(None) is None
    assert [cal.label(s) for s in (0.8, 0.6, 0.3, 0.2, 0.1, None)] == ["High", "High", "Medium", "Medium", "Low",
                                                                      "failed"]
    unlabelled = Calibration(denominator=0.5, low=None, high=None, rows=4, scored_rows=0, source="x", estimated=True)
    assert unlabelled.label(0.9) is None and "no labels" in unlabelled.note and ESTIMATED_NOTE in unlabelled.note


@pytest.fixture()
def nla_folder(tmp_path, tiny_llama):
    return build_tiny_nla(tmp_path / "nla", tiny_llama)


def test_thresholds_are_tertiles_of_held_out_scores(nla_folder):
    nla = script_verbalizer(NLA.load(nla_folder))
    vectors = torch.randn(24, 32, generator=torch.Generator().manual_seed(0))
    cal = compute_calibration(nla, vectors, ["Rivers carry water"] * 24, source="test rows", estimated=False)
    mse = nla.mse(vectors, [e.text for e in nla.explain(vectors)])
    scores = [1 - m / cal.denominator for m in mse if m is not None]
    assert cal.denominator == pytest.approx(baseline(vectors).denominator)
    assert cal.scored_rows == len(scores) < cal.rows == 24  # the scripted AV fails on some rows
    assert (cal.low, cal.high) == pytest.approx(tuple(np.quantile(scores, [1 / 3, 2 / 3])))
    assert cal.claims["claims"] > 0 and cal.claims["quotes"] > 0 and 0 <= cal.claims["flagged_share"] <= 1


def test_saved_calibration_round_trips_and_bad_files_are_named(tmp_path):
    cal = Calibration(denominator=0.5, low=0.2, high=0.6, rows=10, scored_rows=9, source="x", estimated=False,
                      claims={"claims": 3})
    save_calibration(cal, tmp_path / CALIBRATION_FILE)
    assert read_calibration(tmp_path / CALIBRATION_FILE) == cal
    assert json.loads((tmp_path / CALIBRATION_FILE).read_text())["note"] == cal.note
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(NLAError, match="rerun nla calibrate"):
        read_calibration(tmp_path / "bad.json")
    (tmp_path / "future.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(NLAError, match="not a calibration this version"):
        read_calibration(tmp_path / "future.json")


def test_without_a_calibration_file_the_built_in_estimate_is_made_once_and_labelled(nla_folder, tiny_llama,
                                                                                     tmp_path, monkeypatch):
    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    nla = script_verbalizer(NLA.load(nla_folder))
    target = nla.target(str(tiny_llama))
    estimate = calibration_for(nla, nla_folder, target)
    assert estimate.estimated and estimate.rows == 32 and ESTIMATED_NOTE in estimate.note
    assert estimate.low is not None and estimate.claims["claims"] > 0
    assert not (nla_folder / CALIBRATION_FILE).exists()  # the NLA folder is not written to
    monkeypatch.setattr("nla.reading.calibration.compute_calibration", lambda *a, **k: pytest.fail("recomputed"))
    assert calibration_for(nla, nla_folder, target) == estimate  # cached
    own = Calibration(denominator=0.4, low=0.1, high=0.3, rows=50, scored_rows=50, source="v", estimated=False)
    save_calibration(own, nla_folder / CALIBRATION_FILE)
    assert calibration_for(nla, nla_folder, target) == own  # the NLA's own calibration wins


def test_calibrate_command_writes_the_nla_calibration(nla_folder, extracted_dataset, monkeypatch):
    monkeypatch.setattr(NLA, "explain", scripted_explain)
    args = ["calibrate", "--nla", str(nla_folder), "--data", str(extracted_dataset / "ar_sft.parquet")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cal = read_calibration(nla_folder / CALIBRATION_FILE)
    assert not cal.estimated and cal.source == "acts/ar_sft.parquet" and cal.low is not None
    assert "held-out rows of acts/ar_sft.parquet" in result.output and "flagged" in result.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_calibrate_from_eval_reuses_its_rows_and_explanations(extracted_dataset, monkeypatch, tmp_path, tiny_llama):
    monkeypatch.setattr(NLA, "explain", scripted_explain)
    nla_folder = build_tiny_nla(tmp_path / "nla", tiny_llama, base_checkpoint=str(tiny_llama))  # eval loads it
    data = extracted_dataset / "ar_sft.parquet"
    evaluated = CliRunner().invoke(app, ["eval", "--nla", str(nla_folder), "--data", str(data), "--max-rows", "10",
                                         "--out", str(tmp_path / "eval"), "--max-new-tokens", "8"])
    assert evaluated.exit_code == 0, evaluated.output
    explained = []  # from here on the AV must not be asked again
    monkeypatch.setattr(NLA, "explain", lambda self, *a, **k: explained.append(1) or scripted_explain(self, *a, **k))
    result = CliRunner().invoke(app, ["calibrate", "--nla", str(nla_folder), "--from-eval", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    cal = read_calibration(nla_folder / CALIBRATION_FILE)
    assert not explained and cal.rows == 10 and cal.source == "acts/ar_sft.parquet"
    scored = pq.read_table(tmp_path / "eval" / "rows.parquet").column("explanation").drop_null()
    assert cal.scored_rows == len(scored)
    # Another NLA's evaluation, or --data beside --from-eval, is refused in one line.
    other = build_tiny_nla(tmp_path / "other", tiny_llama)
    refused = CliRunner().invoke(app, ["calibrate", "--nla", str(other), "--from-eval", str(tmp_path / "eval")])
    assert refused.exit_code == 2 and "pass that NLA's own eval folder" in refused.output
    both = CliRunner().invoke(app, ["calibrate", "--nla", str(nla_folder), "--from-eval", str(tmp_path / "eval"),
                                    "--data", str(data), "--overwrite"])
    assert both.exit_code == 2 and "drop --data" in both.output
    # Explanations written by an earlier training of the same AV folder are refused too.
    cache = tmp_path / "eval" / "explanations.jsonl"
    header, *records = cache.read_text().splitlines()
    settings = json.loads(header)
    settings["settings"]["av_created_at"] = "an earlier training"
    cache.write_text("\n".join([json.dumps(settings), *records]) + "\n")
    stale = CliRunner().invoke(app, ["calibrate", "--nla", str(nla_folder), "--from-eval", str(tmp_path / "eval"),
                                     "--overwrite"])
    assert stale.exit_code == 2 and "earlier training of this AV" in stale.output


def test_calibrate_writes_into_the_nla_folder_itself_never_a_path_named_after_a_hub_id(tmp_path, monkeypatch):
    from nla.autoencoder.shipped import default_dir
    from nla.reading.calibration import calibration_path

    monkeypatch.chdir(tmp_path)
    assert calibration_path("default") == default_dir() / CALIBRATION_FILE  # the shipped folder, not ./default
    result = CliRunner().invoke(app, ["calibrate", "--nla", "org/name"])
    assert result.exit_code == 2 and "not an NLA folder" in result.output
    assert not (tmp_path / "org").exists()
