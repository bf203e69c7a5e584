import json

import numpy as np
import pytest
import torch
import yaml

from conftest import write_toy_pairs
from nla.autoencoder.nla import reconstruct_texts
from nla.autoencoder.shared import load_ar_folder
from nla.errors import NLAError
from nla.eval.metrics import baseline, fidelity
from nla.train import loop as loop_module
from nla.train.ar import AR_TEMPLATE, train_ar
from nla.train.config import ARTrainConfig

pytestmark = pytest.mark.slow  # trains ARs

WORDS = ["river", "python", "music", "bread", "chess", "volcano", "garden", "planet"]


@pytest.fixture()
def toy_data(tmp_path):
    """Each explanation names a word; each word has its own fixed activation direction (plus noise)."""
    return write_toy_pairs(tmp_path / "ar_sft.parquet", WORDS, rows=96, noise=0.5, template="The text is about {word}.")


def config(tmp_path, data, tiny_llama, **overrides):
    settings = dict(data=data, out=tmp_path / "run", model=str(tiny_llama), layer=1, lora_rank=8, lr=1e-2,
                    batch_size=16, epochs=12, checkpoint_every=100, warmup_fraction=0.1)
    return ARTrainConfig(**{**settings, **overrides})


def test_training_lowers_the_loss_and_beats_the_shuffled_control(tmp_path, toy_data, tiny_llama):
    path, texts, golds = toy_data
    cfg = config(tmp_path, path, tiny_llama)
    result = train_ar(cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (cfg.out / "ar_metrics.jsonl").read_text().splitlines()]
    assert result["steps"] == len(losses) == 72
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])

    assert result["out"] == str(cfg.out / "ar_adapter") and not (cfg.out / "ar").exists()  # LoRA: the adapter only
    ar, tokenizer, meta = load_ar_folder(cfg.out / "ar_adapter")
    assert meta.role == "ar" and meta.stage == "sl" and meta.prompt_templates["ar"] == AR_TEMPLATE
    predicted = reconstruct_texts(ar, tokenizer, AR_TEMPLATE, texts)
    reference = baseline(golds)
    real = fidelity(predicted, golds, reference)["fve"]
    shuffled = fidelity(predicted, golds[torch.randperm(len(golds), generator=torch.Generator().manual_seed(0))],
                        reference)["fve"]
    assert real > 0.5 and real > shuffled + 0.5


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, toy_data, tiny_llama, monkeypatch):
    path, _, _ = toy_data
    straight = config(tmp_path / "a", path, tiny_llama, epochs=1)
    train_ar(straight, progress=False)

    killed = config(tmp_path / "b", path, tiny_llama, epochs=1, checkpoint_every=2)
    real_save = loop_module.save_training_state
    saves = {"n": 0}

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        saves["n"] += 1
        if saves["n"] == 1:
            raise KeyboardInterrupt  # killed right after the step-2 checkpoint

    monkeypatch.setattr(loop_module, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_ar(killed, progress=False)
    monkeypatch.setattr(loop_module, "save_training_state", real_save)
    with (killed.out / "ar_metrics.jsonl").open("a") as metrics:
        metrics.write('{"step": 4, "loss": 0.')  # a kill -9 in the middle of writing a line
    assert train_ar(killed, progress=False)["steps"] == 6
    logged = [json.loads(line)["step"] for line in (killed.out / "ar_metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 7))  # steps after the last checkpoint are not logged twice

    a, _, _ = load_ar_folder(straight.out / "ar_adapter")
    b, _, _ = load_ar_folder(killed.out / "ar_adapter")
    torch.testing.assert_close(a.head.weight, b.head.weight)
    for (name, param_a), (_, param_b) in zip(a.backbone.named_parameters(), b.backbone.named_parameters()):
        torch.testing.assert_close(param_a, param_b, msg=name)


def test_resume_with_other_settings_names_each_change(tmp_path, toy_data, tiny_llama, monkeypatch):
    path, _, _ = toy_data
    killed = config(tmp_path, path, tiny_llama, epochs=1, checkpoint_every=2)
    real_save = loop_module.save_training_state

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt  # killed right after the step-2 checkpoint

    monkeypatch.setattr(loop_module, "save_training_state", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_ar(killed, progress=False)
    monkeypatch.undo()
    changed = config(tmp_path, path, tiny_llama, epochs=1, checkpoint_every=2, lr=5e-3, warmup_fraction=0.2)
    with pytest.raises(NLAError, match=r"holds a run with other settings \(lr 0.01 -> 0.005, warmup_fraction 0.1 -> "
                                       r"0.2\); use the same settings to resume, or pass --overwrite"):
        train_ar(changed, progress=False)
    assert train_ar(killed, progress=False)["steps"] == 6  # the same settings resume


def test_finished_run_is_not_overwritten(tmp_path, toy_data, tiny_llama):
    path, _, _ = toy_data
    cfg = config(tmp_path, path, tiny_llama, epochs=0.2)
    train_ar(cfg, progress=False)
    with pytest.raises(NLAError, match="already holds a trained AR"):
        train_ar(cfg, progress=False)
    again = config(tmp_path, path, tiny_llama, epochs=0.2, overwrite=True)
    assert train_ar(again, progress=False)["steps"] == 1
    assert len((cfg.out / "ar_metrics.jsonl").read_text().splitlines()) == 1


def test_resume_with_other_settings_is_refused_before_loading(tmp_path, toy_data, tiny_llama):
    path, _, _ = toy_data
    state = tmp_path / "run" / "ar_state"
    state.mkdir(parents=True)
    (state / "state.json").write_text(json.dumps({"step": 1, "settings": {"lora_rank": 99}}))  # no tensors at all
    with pytest.raises(NLAError, match="holds a run with other settings"):
        train_ar(config(tmp_path, path, tiny_llama, epochs=1), progress=False)


def test_a_warm_start_continues_from_the_given_ars_adapter_and_head(tmp_path, toy_data, tiny_llama):
    from peft import LoraConfig
    from safetensors.torch import load_file

    from nla.autoencoder.meta import read_model_meta

    path, _, _ = toy_data
    first = config(tmp_path / "first", path, tiny_llama, epochs=1)
    train_ar(first, progress=False)
    # A learning rate too small to move anything: what the warm run saves is what it started from, at its rank.
    still = config(tmp_path / "still", path, tiny_llama, epochs=0.25, lr=1e-12, lora_rank=4, init_from=str(first.out))
    train_ar(still, progress=False)
    moved = config(tmp_path / "moved", path, tiny_llama, epochs=0.25, init_from=str(first.out))
    train_ar(moved, progress=False)

    def weights(cfg, name):
        return load_file(cfg.out / "ar_adapter" / name)

    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        before, after = weights(first, name), weights(still, name)
        assert before.keys() == after.keys()
        assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert not torch.equal(weights(first, "value_head.safetensors")["weight"],
                           weights(moved, "value_head.safetensors")["weight"])  # the head trains on
    assert not torch.eye(weights(first, "value_head.safetensors")["weight"].shape[0]).equal(
        weights(first, "value_head.safetensors")["weight"])  # and started trained, not fresh
    assert LoraConfig.from_pretrained(still.out / "ar_adapter").r == 8  # the adapter's rank, not --lora-rank 4
    meta = read_model_meta(still.out / "ar_adapter")
    assert meta.parent_checkpoints == [str(first.out)] and meta.training["lora_rank"] == 8


def test_a_warm_start_of_another_layer_or_no_ar_is_refused(tmp_path, toy_data, tiny_llama):
    path, _, _ = toy_data
    first = config(tmp_path / "first", path, tiny_llama, epochs=0.25)
    train_ar(first, progress=False)
    with pytest.raises(NLAError, match="at layer 1, this data is of .* at layer 0"):
        train_ar(config(tmp_path / "other", path, tiny_llama, layer=0, init_from=str(first.out)), progress=False)
    with pytest.raises(NLAError, match="holds no AR adapter"):
        train_ar(config(tmp_path / "none", path, tiny_llama, init_from=str(tmp_path)), progress=False)
    sidecar = first.out / "ar_adapter" / "nla_meta.yaml"
    meta = yaml.safe_load(sidecar.read_text())
    meta["prompt_templates"]["ar"] = "Another prompt: {explanation}"
    sidecar.write_text(yaml.safe_dump(meta))
    with pytest.raises(NLAError, match="another prompt template"):
        train_ar(config(tmp_path / "template", path, tiny_llama, init_from=str(first.out)), progress=False)
