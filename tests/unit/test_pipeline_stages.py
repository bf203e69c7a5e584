"""`nla train`'s stage loop: stages.json keeps the time of a stage that was killed mid-way."""

import json
import os
import time
from pathlib import Path

import nla.pipeline.train as pipeline
from nla.pipeline.train import PipelineConfig, run_pipeline


def test_a_killed_stage_keeps_the_time_it_spent_before_the_kill(tmp_path, monkeypatch):
    done, killed = set(), []

    def run_stage(stage, config):  # each stage writes a file into its folder, as the real ones do
        folder = Path(config.out)
        folder.mkdir(parents=True, exist_ok=True)
        if stage == "eval":
            (folder / "eval.json").write_text(json.dumps({"fve": 0.1}))
        written = folder / f"{stage}.part"
        written.write_text("x")
        if stage == "sft-av" and not killed:
            later = time.time() + 30  # the killed attempt wrote its last file 30 s after it started
            os.utime(written, (later, later))
            killed.append(stage)
            raise KeyboardInterrupt  # stands in for kill -9: nothing after this line of the loop runs
        done.add(stage)

    monkeypatch.setattr(pipeline, "run_stage", run_stage)
    monkeypatch.setattr(pipeline, "finished", lambda stage, config: stage in done)
    out = tmp_path / "run"
    try:
        run_pipeline(PipelineConfig(), out, echo=lambda line: None)
    except KeyboardInterrupt:
        pass
    assert "running_since" in json.loads((out / "stages.json").read_text())["sft-av"]

    result = run_pipeline(PipelineConfig(), out, echo=lambda line: None)
    stages = json.loads((out / "stages.json").read_text())
    assert result["stages"] == stages and list(stages) == list(pipeline.stage_configs(PipelineConfig(), out))
    assert stages["sft-av"]["killed_attempts"] == 1 and stages["sft-av"]["wall_seconds"] >= 30
    assert all("running_since" not in s and "killed_attempts" not in s for k, s in stages.items() if k != "sft-av")
