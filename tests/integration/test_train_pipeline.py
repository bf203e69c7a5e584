"""`nla train` on a tiny model: every stage runs, finished stages are skipped, and a kill -9 resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

pytestmark = pytest.mark.slow


def tiny_config(tmp_path, model, corpus):
    config = {
        "model": str(model), "layer": 1, "corpus": str(corpus),
        "extract": {"positions_per_doc": 3, "min_position": 4},
        "explain": {"quote_tokens": 4},
        "ar": {"lora_rank": 4, "batch_size": 8, "epochs": 1.0, "lr": 1e-3},
        "av": {"lora_rank": 4, "batch_size": 8, "epochs": 3.0, "lr": 1e-3, "injection": "residual"},
        # The tiny AV does not learn to close its tags in 3 epochs, which refit needs: its own test is
        # tests/unit/test_refit.py, and tests/unit/test_pipeline_config.py checks where it sits.
        "refit": {"epochs": 0},
        "rl": {"steps": 2, "batch_size": 2, "group_size": 2, "max_response_tokens": 8, "eval_rows": 4},
        "oracle": {"lora_rank": 4, "batch_size": 8, "epochs": 1.0, "lr": 1e-3},
        "eval": {"max_rows": 8, "max_new_tokens": 8},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def nla_train(config, out, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "nla.cli", "train", "--config", str(config), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def test_every_stage_runs_then_a_rerun_skips_them(tmp_path, tiny_llama, small_corpus):
    config, out = tiny_config(tmp_path, tiny_llama, small_corpus), tmp_path / "run"
    first = nla_train(config, out)
    output = first.communicate(timeout=600)[0]
    assert first.returncode == 0, output
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["extract", "explain", "sft-ar", "sft-av", "rl", "oracle", "eval", "calibrate"]
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert report["rows"] == 8 and report["nla"] == str(out / "rl") and "shuffled_av" in report["controls"]
    assert report["controls"]["oracle_ar"]["ar"] == str(out / "oracle") and "fve" in report["controls"]["oracle_ar"]
    assert yaml.safe_load((out / "train_config.yaml").read_text())["av"]["injection"] == "residual"
    assert "site: residual" in (out / "rl" / "av_adapter" / "nla_meta.yaml").read_text()
    # The final NLA is calibrated on eval's own rows (what trace and demo label scores with).
    calibration = json.loads((out / "rl" / "calibration.json").read_text())
    assert calibration["rows"] == 8 and calibration["source"] == "acts/validation.parquet"
    assert not (out / "sft" / "av").exists() and not (out / "sft" / "ar").exists()  # LoRA SFT: adapters only
    again = nla_train(config, out)
    output = again.communicate(timeout=300)[0]
    assert again.returncode == 0 and output.count("finished earlier, skipped") == 8, output
    # RL writes its LoRAs stacked on the SFT adapters they trained on: no merged folders.
    assert all((out / "rl" / f"{role}_adapter" / "nla_meta.yaml").exists() and not (out / "rl" / role).exists()
               for role in ("av", "ar"))


def test_a_kill_during_training_resumes_with_the_same_command(tmp_path, tiny_llama, small_corpus):
    config, out = tiny_config(tmp_path, tiny_llama, small_corpus), tmp_path / "run"
    victim = nla_train(config, out, start_new_session=True)
    deadline = time.time() + 300
    # sft-ar's marker is its adapter's sidecar, renamed in last: once it exists the AR stage is done.
    marker = out / "sft" / "ar_adapter" / "nla_meta.yaml"
    while not marker.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)  # mid-pipeline: the AR is done, the AV is not
    victim.wait()
    assert not (out / "eval" / "eval.json").exists()
    rerun = nla_train(config, out)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output
    assert "[3/8] sft-ar: finished earlier, skipped" in output
    assert (out / "eval" / "eval.json").exists()
