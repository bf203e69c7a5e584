"""`nla rl` on a tiny SFT NLA: the reward rises where there is signal, KL paths, resume, refusals."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import build_sft_nla
from nla.autoencoder.nla import NLA
from nla.errors import NLAError
from nla.rl.config import RLConfig
from nla.rl.run import rl
from nla.rl.trainer import Trainer
from nla.train.loop import start_processes

pytestmark = pytest.mark.slow  # RL steps on tiny models, many runs


@pytest.fixture(scope="module")
def sft(tmp_path_factory, tiny_llama):
    return build_sft_nla(tmp_path_factory.mktemp("rl-sft"), tiny_llama)


def config(sft, out, **overrides):
    nla, data = sft
    settings = dict(nla=nla, data=data, out=out, steps=4, batch_size=2, group_size=4, max_response_tokens=30,
                    lora_rank=8, av_lr=1e-2, ar_lr=1e-3, ar_lora_rank=4, checkpoint_every=2, device="cpu")
    return RLConfig(**{**settings, **overrides})


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "rl_metrics.jsonl").read_text().splitlines()]


def prefers_river(explanations, activations):
    """A toy reward with signal: explanations that name "river" win."""
    return [1.0 if e.text and "river" in e.text else 0.0 for e in explanations]


def expected_toy_reward(trainer: Trainer, samples: int = 96) -> float:
    """The policy's mean toy reward, from many samples at a fixed seed (the same draws before and after)."""
    torch.manual_seed(123)
    vectors = trainer.golds[:8].repeat_interleave(samples // 8, dim=0)
    _, embeds, mask = trainer.policy.verbalizer.prompt_embeddings(vectors)
    rollout = trainer.backend.generate(embeds, mask, max_new_tokens=30, temperature=1.0)
    return float(np.mean(prefers_river(rollout.explanations(trainer.policy.verbalizer.tokenizer), vectors)))


def test_a_few_steps_raise_the_reward_where_signal_exists(tmp_path, sft):
    cfg = config(sft, tmp_path / "toy", steps=8, batch_size=4, group_size=8, ar_lr=0, kl_coef=0, failure_reward=0)
    before = expected_toy_reward(Trainer(cfg, prefers_river, start_processes("cpu")))
    after = expected_toy_reward(rl(cfg, reward=prefers_river, progress=False)["trainer"])
    assert after > before + 0.1


def test_kl_is_zero_for_a_fresh_adapter_then_positive_and_off_when_its_coefficient_is_zero(tmp_path, sft):
    rl(config(sft, tmp_path / "kl", steps=3, kl_coef=0.5), progress=False)
    with_kl = metrics(tmp_path / "kl")
    assert with_kl[0]["kl_k3"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the SFT AV
    assert with_kl[-1]["kl_k3"] > 1e-4 and with_kl[-1]["kl_k1"] != 0
    rl(config(sft, tmp_path / "nokl", steps=3, kl_coef=0), progress=False)
    assert all("kl_k3" not in m for m in metrics(tmp_path / "nokl"))  # no reference pass at all
    # The penalty changes the update: same seed, same first step, different weights after.
    av_kl, av_free = (load_file(tmp_path / name / "av" / "model.safetensors") for name in ("kl", "nokl"))
    assert any(not torch.equal(av_kl[k], av_free[k]) for k in av_kl)


def test_resume_after_a_stop_matches_an_uninterrupted_run(tmp_path, sft):
    whole = rl(config(sft, tmp_path / "whole"), progress=False)
    assert whole["steps"] == 4
    rl(config(sft, tmp_path / "parts"), progress=False, stop_after=3)  # dies after step 3; state saved at 2
    assert json.loads((tmp_path / "parts" / "rl_state" / "state.json").read_text())["step"] == 2
    assert not (tmp_path / "parts" / "av").exists()
    rl(config(sft, tmp_path / "parts"), progress=False)
    # The SFT AV was fully fine-tuned (merged av/); the SFT AR is an adapter, so RL's stacks onto it.
    for part in ("av/model.safetensors", "ar_adapter/adapter_model.safetensors", "ar_adapter/value_head.safetensors"):
        a, b = load_file(tmp_path / "whole" / part), load_file(tmp_path / "parts" / part)
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), part
    first, second = metrics(tmp_path / "whole"), metrics(tmp_path / "parts")
    assert [m["step"] for m in second] == [1, 2, 3, 4]  # step 3 was logged once, not twice
    assert [m["reward"] for m in first] == pytest.approx([m["reward"] for m in second], abs=1e-6)


def test_a_finished_run_loads_as_an_nla_logs_its_time_split_and_is_not_replaced(tmp_path, sft):
    cfg = config(sft, tmp_path / "run", steps=2, sample_every=1, eval_data=sft[1], eval_rows=8, eval_every=1)
    result = rl(cfg, progress=False)
    nla = NLA.load(cfg.out)
    assert nla.av_meta.stage == "rl" and nla.ar_meta.stage == "rl" and nla.layer == 1
    assert set(result["evaluations"]) == {0, 1, 2}
    assert {"eval_fve", "eval_fve_shuffled", "eval_failure_rate"} <= set(result["evaluations"][2])
    record = metrics(cfg.out)[1]
    assert record["seconds_rollout"] > 0 and record["seconds_update"] > 0 and "seconds_reward" in record
    # The training pass recomputes the rollout's log-probs: they agree, so the rollout's are reused.
    assert record["logprob_mismatch_k3"] < 1e-6 and record["rollout_logprobs_reused"] == 1.0
    samples = [json.loads(line) for line in (cfg.out / "rl_samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and all("answer" in s for s in samples)
    with pytest.raises(NLAError, match="already holds a finished RL run"):
        rl(cfg, progress=False)
    pytest.importorskip("matplotlib")
    from nla.rl.plots import plot_run

    assert plot_run(cfg.out).read_bytes()[:4] == b"\x89PNG"


def test_the_sft_ar_is_read_from_its_adapter(sft):
    nla, _ = sft
    assert (nla / "ar_adapter").is_dir() and not (nla / "ar").exists()  # what rl --nla reads below


def test_a_resume_with_other_settings_names_each_change(tmp_path, sft):
    rl(config(sft, tmp_path / "run", checkpoint_every=1), progress=False, stop_after=1)
    with pytest.raises(NLAError, match=r"holds an RL run with other settings \(av_lr 0.01 -> 0.005, group_size 4 -> "
                                       r"2\); use the same settings to resume"):
        rl(config(sft, tmp_path / "run", checkpoint_every=1, av_lr=5e-3, group_size=2), progress=False)


def test_a_batch_that_does_not_fit_is_refused_before_the_folder_is_made(tmp_path, sft, monkeypatch):
    from nla.models import memory

    monkeypatch.setattr(memory, "available_memory", lambda device: 50e6)  # 50 MB free
    with pytest.raises(NLAError, match=r"^--batch-size 100 needs about [\d.]+ GB per step \(--group-size 4 "
                                       r"explanations of up to 30 tokens each\), but 50.0 MB is free on cpu; lower "
                                       r"--batch-size to \d+ or less"):
        rl(config(sft, tmp_path / "big", batch_size=100), progress=False)
    assert not (tmp_path / "big").exists()


def test_an_overwrite_clears_the_old_run_and_what_was_made_from_it(tmp_path, sft):
    out = tmp_path / "run"
    rl(config(sft, out, steps=1), progress=False)
    (out / "calibration.json").write_text("{}")  # nla calibrate's thresholds for the old weights
    rl(config(sft, out, steps=1, overwrite=True), progress=False, stop_after=0)  # killed before its first step
    assert not (out / "av").exists() and not (out / "ar").exists() and not (out / "calibration.json").exists()


def test_non_finite_gradients_are_skipped_and_counted(tmp_path, sft):
    nan_reward = lambda explanations, activations: [float("nan")] * len(explanations)
    cfg = config(sft, tmp_path / "nan", steps=2, ar_lr=0, failure_reward=float("nan"))
    rl(cfg, reward=nan_reward, progress=False)
    assert [m["av_skipped"] for m in metrics(cfg.out)] == [1.0, 1.0]
    sft_av, rl_av = load_file(sft[0] / "av" / "model.safetensors"), load_file(cfg.out / "av" / "model.safetensors")
    assert all(torch.equal(sft_av[k], rl_av[k]) for k in sft_av)  # the skipped updates left the AV as it was


def test_an_av_and_ar_of_different_layers_are_refused(tmp_path, sft):
    mixed = tmp_path / "mixed"
    shutil.copytree(sft[0] / "av", mixed / "av")
    shutil.copytree(sft[0] / "ar_adapter", mixed / "ar_adapter")  # the SFT AR is a LoRA run: its adapter only
    meta_path = mixed / "av" / "nla_meta.yaml"  # (an AR's own sidecar must match the blocks it holds)
    meta = yaml.safe_load(meta_path.read_text())
    meta["extraction_layer_index"] = 2
    meta_path.write_text(yaml.safe_dump(meta))
    with pytest.raises(NLAError, match="disagree on extraction_layer_index"):
        rl(config(sft, tmp_path / "out", nla=mixed), progress=False)


def test_activations_of_another_width_are_refused(tmp_path, sft):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"activation_vector": pa.array([[1.0] * 16] * 4, type=pa.list_(pa.float32(), 16))}),
                   tmp_path / "narrow.parquet")
    with pytest.raises(NLAError, match="d_model 32"):
        rl(config(sft, tmp_path / "out", data=tmp_path / "narrow.parquet"), progress=False)


def test_the_command_line_trains_reports_and_plots(tmp_path, sft):
    from typer.testing import CliRunner

    from nla.cli import app

    out = tmp_path / "cli"
    args = ["rl", "--nla", str(sft[0]), "--data", str(sft[1]), "--eval-data", str(sft[1]), "--eval-rows", "4",
            "--out", str(out), "--steps", "1", "--batch-size", "2", "--max-response-tokens", "30", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "step 0: held-out FVE" in result.output and "step 1: held-out FVE" in result.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already holds a finished RL run" in again.output
    bad = CliRunner().invoke(app, [*args[:-6], "--out", str(tmp_path / "other"), "--group-size", "1"])
    assert bad.exit_code == 2 and "group-size must be at least 2" in bad.output
    pytest.importorskip("matplotlib")
    plotted = CliRunner().invoke(app, ["plot", str(out)])
    assert plotted.exit_code == 0 and (out / "rl_curves.png").exists()
    assert CliRunner().invoke(app, ["plot", str(tmp_path / "nowhere")]).exit_code == 2


def test_an_rl_lora_on_an_sft_adapter_is_written_as_one_stacked_adapter(tmp_path, sft):
    """RL's AR LoRA is stacked with the SFT AR adapter it trained on: megabytes, not a merged copy, and the
    folder reads exactly as the trainer's merged weights do."""
    result = rl(config(sft, tmp_path / "stacked", steps=2), progress=False)
    out, trainer = tmp_path / "stacked", result["trainer"]
    assert (out / "ar_adapter" / "adapter_model.safetensors").exists() and not (out / "ar").exists()
    stacked = yaml.safe_load((out / "ar_adapter" / "adapter_config.json").read_text())
    parent = yaml.safe_load((sft[0] / "ar_adapter" / "adapter_config.json").read_text())
    assert stacked["r"] == parent["r"] + 4 and stacked["lora_alpha"] / stacked["r"] == parent["lora_alpha"] / parent["r"]
    texts = ["about river", "about bread and music"]
    loaded = NLA.load(out, device="cpu")  # av/ (merged) beside ar_adapter/: each half on its own
    torch.testing.assert_close(loaded.reconstruct(texts), trainer.reconstruct(texts), atol=1e-4, rtol=1e-4)


def test_rl_stacks_onto_the_adapter_beside_an_exported_sft_folder(tmp_path, sft):
    """After `nla export`, the SFT folder holds ar/ (merged, which loads first) beside ar_adapter/: RL still
    writes a stacked adapter, not a merged copy."""
    from nla.autoencoder.shared import export_nla

    exported = tmp_path / "sft"
    shutil.copytree(sft[0], exported)
    export_nla(exported)
    assert (exported / "ar" / "nla_meta.yaml").exists()
    rl(config((exported, sft[1]), tmp_path / "rl", steps=1), progress=False)
    assert (tmp_path / "rl" / "ar_adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "rl" / "ar").exists()
