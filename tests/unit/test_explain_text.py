import pytest
from test_nla_checkpoint import build_tiny_nla
from typer.testing import CliRunner

from nla.autoencoder.nla import NLA
from nla.cli import app
from nla.errors import NLAError
from nla.models import load_target
from nla.reading.calibration import CALIBRATION_FILE, Calibration, save_calibration
from nla.reading.transcript import TokenReading, explain_text, format_readings


@pytest.fixture()
def tiny_nla(tmp_path, tiny_llama):
    return build_tiny_nla(tmp_path / "nla", tiny_llama)


def test_every_token_from_min_position_gets_a_reading(tiny_nla, tiny_llama):
    target = load_target(str(tiny_llama))
    text = "Rivers carry water to the sea."
    readings = explain_text(NLA.load(tiny_nla), text, target=target, min_position=2, max_new_tokens=4)
    ids = target.encode(text)
    assert [r.position for r in readings] == list(range(2, len(ids)))
    assert [r.token for r in readings] == [target.tokenizer.decode([i]) for i in ids[2:]]
    # Untrained: no tags within 4 tokens, so every reading is truncated, and none is scored.
    assert all(r.explanation is None and r.mse is None and r.truncated for r in readings)


def test_too_short_text_is_named(tiny_nla, tiny_llama):
    with pytest.raises(NLAError, match="none at or after --min-position 50"):
        explain_text(NLA.load(tiny_nla), "Hi.", target=load_target(str(tiny_llama)), min_position=50)


def test_command_prints_one_line_per_token(tiny_nla, tiny_llama):
    result = CliRunner().invoke(app, ["explain", "Rivers carry water.", "--nla", str(tiny_nla), "--model",
                                      str(tiny_llama), "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    tokens = len(load_target(str(tiny_llama)).encode("Rivers carry water."))
    assert lines[0].lstrip().startswith("#") and len(lines) == 3 + tokens
    assert all("truncated" in line and "raise --max-new-tokens" in line for line in lines[1:-2])
    assert lines[-2] == f"{tokens} of {tokens} explanations were truncated (not scored)"
    assert lines[-1].startswith("score = 2(1 - cos)") and "nla calibrate" in lines[-1]  # no calibration.json


def test_with_a_calibration_scores_read_as_one_minus_mse_over_b_with_labels(tiny_nla, tiny_llama):
    calibration = Calibration(denominator=0.5, low=0.1, high=0.3, rows=9, scored_rows=9, source="x", estimated=False)
    readings = [TokenReading(0, "A", "about rivers", 0.25), TokenReading(1, "B", "about stone", 0.4),
                TokenReading(2, "C", None, None)]
    lines = format_readings(readings, calibration).splitlines()
    assert "+0.50 High" in lines[1] and "+0.20 Medium" in lines[2] and "failed" in lines[3]
    assert lines[-1] == calibration.note
    save_calibration(calibration, tiny_nla / CALIBRATION_FILE)  # nla explain reads the NLA's own
    result = CliRunner().invoke(app, ["explain", "Rivers.", "--nla", str(tiny_nla), "--model", str(tiny_llama),
                                      "--max-new-tokens", "3"])
    assert result.exit_code == 0 and result.stdout.strip().splitlines()[-1] == calibration.note, result.output
