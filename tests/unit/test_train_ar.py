import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nla.autoencoder.nla import ar_input_ids
from nla.autoencoder.reconstructor import load_reconstructor
from nla.data.dataset import rows_to_table
from nla.errors import NLAError
from nla.eval.metrics import baseline, fidelity
from nla.models.activations import pad_right
from nla.train import loop as loop_module
from nla.train.ar import AR_TEMPLATE, train_ar
from nla.train.config import ARTrainConfig

WORDS = ["river", "python", "music", "bread", "chess", "volcano", "garden", "planet"]


@pytest.fixture()
def toy_data(tmp_path):
    """Each explanation names a word; each word has its own fixed activation direction (plus noise)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(WORDS), 32)).astype(np.float32) * 5
    labels = rng.integers(0, len(WORDS), size=96)
    vectors = centres[labels] + rng.normal(size=(96, 32)).astype(np.float32) * 0.5
    explanations = [f"The text is about {WORDS[i]}." for i in labels]
    columns = {name: [None] * 96 for name in ("doc_id", "position", "n_raw_tokens", "activation_layer", "token_id",
                                               "token", "detokenized_text_truncated", "source", "genre", "topic",
                                               "split")}
    table = rows_to_table(vectors, columns, 32).append_column("explanation", pa.array(explanations))
    path = tmp_path / "ar_sft.parquet"
    pq.write_table(table, path)
    return path, explanations, torch.from_numpy(vectors)


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

    ar, tokenizer, meta = load_reconstructor(cfg.out / "ar")
    assert meta.role == "ar" and meta.stage == "sl" and meta.prompt_templates["ar"] == AR_TEMPLATE
    ids, mask = pad_right(ar_input_ids(tokenizer, texts, AR_TEMPLATE, False), 0, torch.device("cpu"))
    with torch.no_grad():
        predicted = ar(ids, mask)
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
    assert train_ar(killed, progress=False)["steps"] == 6
    logged = [json.loads(line)["step"] for line in (killed.out / "ar_metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, 7))  # steps after the last checkpoint are not logged twice

    a, _, _ = load_reconstructor(straight.out / "ar")
    b, _, _ = load_reconstructor(killed.out / "ar")
    torch.testing.assert_close(a.head.weight, b.head.weight)
    for (name, param_a), (_, param_b) in zip(a.backbone.named_parameters(), b.backbone.named_parameters()):
        torch.testing.assert_close(param_a, param_b, msg=name)


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
