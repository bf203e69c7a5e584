import json

import numpy as np
import pytest
import torch

from conftest import write_toy_pairs
from nla.autoencoder.checkpoint import load_verbalizer
from nla.autoencoder.injection import RESIDUAL, Injection
from nla.autoencoder.nla import NLA
from nla.autoencoder.shared import load_av_folder
from nla.errors import NLAError
from nla.train.ar import train_ar
from nla.train.av import av_batch, build_verbalizer, response_ids, response_loss, train_av
from nla.train.config import ARTrainConfig, AVTrainConfig

pytestmark = pytest.mark.slow  # trains AVs

WORDS = ["river", "python", "music", "bread"]


@pytest.fixture()
def toy_pairs(tmp_path):
    """Each activation points in its word's direction; its explanation names that word."""
    return write_toy_pairs(tmp_path / "av_sft.parquet", WORDS, rows=64, noise=0.3, template="about {word}")[0]


def config(tmp_path, name, data, model, **overrides):
    settings = dict(data=data, out=tmp_path / name, model=str(model), layer=1, lora_rank=8, lr=1e-2, batch_size=16,
                    epochs=10, checkpoint_every=100, warmup_fraction=0.1)
    return AVTrainConfig(**{**settings, **overrides})


def final_loss(out) -> float:
    losses = [json.loads(line)["loss"] for line in (out / "av_metrics.jsonl").read_text().splitlines()]
    return float(np.mean(losses[-5:]))


def test_training_learns_the_response_format_and_saves_a_loadable_av(tmp_path, toy_pairs, tiny_llama):
    # Full fine-tuning: a tiny random model's logits are too small for LoRA alone to move them quickly.
    cfg = config(tmp_path, "real", toy_pairs, tiny_llama, lora_rank=0, lr=1e-2, epochs=20)
    result = train_av(cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (cfg.out / "av_metrics.jsonl").read_text().splitlines()]
    assert result["steps"] == len(losses) == 80 and np.mean(losses[-5:]) < 0.25 * np.mean(losses[:5])
    av, meta = load_verbalizer(cfg.out / "av")
    assert meta.role == "av" and meta.stage == "sl" and meta.injection_scale == result["injection_scale"]
    assert meta.tokens["injection_token_id"] == av.site.marker.token_id
    answers = [e.answer for e in av.explain(torch.randn(3, 32) * 5, max_new_tokens=10)]
    assert all(a.startswith("<explanation>about") for a in answers)  # the format was learned


def test_trained_av_and_ar_load_as_one_nla(tmp_path, toy_pairs, tiny_llama):
    train_av(config(tmp_path, "nla", toy_pairs, tiny_llama, epochs=0.5), progress=False)
    train_ar(ARTrainConfig(data=toy_pairs, out=tmp_path / "nla", model=str(tiny_llama), layer=1, lora_rank=4,
                           epochs=0.5, batch_size=16), progress=False)
    nla = NLA.load(tmp_path / "nla")
    explanations = nla.explain(torch.randn(2, 32), max_new_tokens=8)
    assert len(explanations) == 2
    assert len(nla.mse(torch.randn(2, 32), ["about river", "about bread"])) == 2


def test_existing_av_is_refused(tmp_path, toy_pairs, tiny_llama):
    cfg = config(tmp_path, "once", toy_pairs, tiny_llama, epochs=0.25)
    train_av(cfg, progress=False)
    with pytest.raises(NLAError, match="already holds a trained AV"):
        train_av(cfg, progress=False)


def test_shuffled_control_sees_the_same_batches_with_other_vectors(tmp_path, toy_pairs, tiny_llama, monkeypatch):
    import nla.train.av as av_module

    seen = {}
    real_batch = av_module.av_batch

    def recording_batch(verbalizer, vectors, responses, pad_id):
        seen[run].append((responses, vectors.clone()))
        return real_batch(verbalizer, vectors, responses, pad_id)

    monkeypatch.setattr(av_module, "av_batch", recording_batch)
    for run, shuffle in (("real", False), ("control", True)):
        seen[run] = []
        train_av(config(tmp_path, run, toy_pairs, tiny_llama, epochs=0.5, shuffle_activations=shuffle), progress=False)
    assert [r for r, _ in seen["real"]] == [r for r, _ in seen["control"]]  # paired: same texts, same order
    assert not torch.equal(seen["real"][0][1], seen["control"][0][1])


@pytest.mark.parametrize("injection", [Injection(), Injection(RESIDUAL, 1)])
@pytest.mark.parametrize("shared", [False, True])
def test_response_loss_equals_the_models_own_loss_over_the_response(tiny_llama, injection, shared):
    # The training loss keeps only the logits that predict response tokens, and may run the prompt's
    # common prefix once for the batch; HF's `labels=` loss over the whole sequence of every row (prompt
    # labels ignored) is the independent reading it must equal, in value and in gradient.
    av, target = build_verbalizer(str(tiny_llama), 1.0, 0, "cpu", injection)
    assert 0 < av.shared_prefix < len(av.prompt)
    responses = [response_ids(target.tokenizer, text, 40) for text in ("about river", "about a long loaf of bread",
                                                                        "bread")]
    vectors = torch.randn(3, av.d_model)

    def loss_and_grads(compute):
        av.model.zero_grad()
        embeds, mask, labels = av_batch(av, vectors, responses, target.pad_id)
        with av.reading():
            loss = compute(embeds, mask, labels)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in av.model.parameters() if p.grad is not None]

    prefix = av.shared_prefix if shared else 0
    ours, our_grads = loss_and_grads(lambda e, m, labels: response_loss(av.model, e, m, labels, len(av.prompt), prefix))
    theirs, their_grads = loss_and_grads(lambda e, m, labels: av.model(inputs_embeds=e, attention_mask=m,
                                                                       labels=labels).loss)
    assert ours == pytest.approx(theirs, rel=1e-5)
    assert len(our_grads) == len(their_grads) > 0
    for mine, reference in zip(our_grads, their_grads):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-6)


def test_a_warm_start_continues_from_the_given_avs_own_weights(tmp_path, toy_pairs, tiny_llama):
    from safetensors.torch import load_file

    from nla.autoencoder.meta import read_model_meta

    first = config(tmp_path, "first", toy_pairs, tiny_llama, epochs=0.5, injection="residual")
    train_av(first, progress=False)
    # A learning rate too small to move anything: what the warm run saves is what it started from.
    warm = config(tmp_path, "warm", toy_pairs, tiny_llama, epochs=0.25, lr=1e-12, init_from=str(first.out),
                  injection_scale=99.0)
    train_av(warm, progress=False)
    before = load_file(first.out / "av_adapter" / "adapter_model.safetensors")
    after = load_file(warm.out / "av_adapter" / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert any(k.endswith("lora_B.weight") and before[k].abs().sum() > 0 for k in before)  # trained, not fresh
    meta, first_meta = read_model_meta(warm.out / "av_adapter"), read_model_meta(first.out / "av_adapter")
    assert meta.parent_checkpoints == [str(first.out)]
    assert meta.injection == first_meta.injection  # the site and scale it learnt to read, not this config's
    assert meta.injection_scale == first_meta.injection_scale != 99.0


def test_a_warm_start_of_another_layer_prompt_or_no_av_is_refused(tmp_path, toy_pairs, tiny_llama):
    import yaml

    first = config(tmp_path, "first", toy_pairs, tiny_llama, epochs=0.25)
    train_av(first, progress=False)
    with pytest.raises(NLAError, match="at layer 1, this data is of .* at layer 0"):
        train_av(config(tmp_path, "other", toy_pairs, tiny_llama, layer=0, init_from=str(first.out)), progress=False)
    with pytest.raises(NLAError, match="holds no AV adapter"):
        train_av(config(tmp_path, "none", toy_pairs, tiny_llama, init_from=str(tmp_path)), progress=False)
    sidecar = first.out / "av_adapter" / "nla_meta.yaml"  # an AV whose weights learnt another prompt
    meta = yaml.safe_load(sidecar.read_text())
    meta["prompt_templates"]["av"] = "Say what this is ({injection_char})."
    sidecar.write_text(yaml.safe_dump(meta))
    with pytest.raises(NLAError, match="its AV reads another prompt template than nla's"):
        train_av(config(tmp_path, "template", toy_pairs, tiny_llama, init_from=str(first.out)), progress=False)


def test_save_rank_stores_a_smaller_adapter_that_loads_and_says_what_it_kept(tmp_path, toy_pairs, tiny_llama):
    from peft import LoraConfig

    result = train_av(config(tmp_path, "cut", toy_pairs, tiny_llama, epochs=0.5, save_rank=3), progress=False)
    av, meta = load_av_folder(tmp_path / "cut" / "av_adapter")
    assert LoraConfig.from_pretrained(tmp_path / "cut" / "av_adapter").r == 3
    assert meta.training["lora_rank"] == 8 and meta.training["saved_rank"] == 3
    assert 0 < meta.training["saved_rank_kept"] <= 1 and result["steps"] == 2
    assert len(av.explain(torch.randn(2, 32), max_new_tokens=4)) == 2
