"""One base model serving target, AV and AR (LoRA adapters by role), and `nla export` of merged folders."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import write_toy_pairs
from nla.autoencoder.nla import NLA
from nla.cli import app
from nla.errors import NLAError
from nla.models import load_target
from nla.train.ar import train_ar
from nla.train.av import train_av
from nla.train.config import ARTrainConfig, AVTrainConfig

pytestmark = pytest.mark.slow  # trains LoRA runs of three families

WORDS = ["river", "bread", "music", "stone"]
TEXT = "Rivers carry water from the mountains to the sea."


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_llama):
    """A run trained with LoRA: av_adapter/ and ar_adapter/ only (no merged folders without --export)."""
    root = tmp_path_factory.mktemp("shared")
    data, _, _ = write_toy_pairs(root / "pairs.parquet", WORDS, 64, 0.3, "about {word}")
    run = root / "run"
    common = dict(data=data, out=run, model=str(tiny_llama), layer=1, lora_rank=4, epochs=1.0, lr=1e-2)
    train_av(AVTrainConfig(**common, batch_size=8), progress=False)
    train_ar(ARTrainConfig(**common, batch_size=16), progress=False)
    return run


def test_a_lora_run_writes_its_adapters_and_no_merged_copy(lora_run, tiny_llama):
    for name in ("av_adapter", "ar_adapter"):
        assert (lora_run / name / "nla_meta.yaml").exists(), name
    assert not (lora_run / "av").exists() and not (lora_run / "ar").exists()
    assert (lora_run / "ar_adapter" / "value_head.safetensors").exists()
    weights = load_file(lora_run / "av_adapter" / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)  # the adapter only, not the base
    written = sum(f.stat().st_size for f in lora_run.rglob("*") if f.is_file() and "_state" not in str(f))
    assert written < (tiny_llama / "model.safetensors").stat().st_size  # less than one copy of the model


def test_export_flag_writes_the_merged_folder_beside_the_adapter(tmp_path, tiny_llama, lora_run):
    data, _, _ = write_toy_pairs(tmp_path / "pairs.parquet", WORDS, 16, 0.3, "about {word}")
    run = tmp_path / "run"
    shutil.copytree(lora_run / "av_adapter", run / "av_adapter")
    result = train_ar(ARTrainConfig(data=data, out=run, model=str(tiny_llama), layer=1, lora_rank=4, epochs=1.0,
                                    batch_size=16, export=True), progress=False)
    assert result["out"] == str(run / "ar_adapter")
    assert (run / "ar" / "nla_meta.yaml").exists() and (run / "ar_adapter" / "nla_meta.yaml").exists()
    texts = ["about river", "about stone"]
    merged = NLA.load(av=run / "av_adapter", ar=run / "ar")
    assert torch.allclose(merged.reconstruct(texts), NLA.load(run).reconstruct(texts), atol=1e-4)


def test_a_stale_merged_folder_goes_when_the_adapter_is_retrained(tmp_path, tiny_llama, lora_run):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    CliRunner().invoke(app, ["export", str(run)])
    (run / "calibration.json").write_text("{}")  # made from the old weights
    data, _, _ = write_toy_pairs(tmp_path / "pairs.parquet", WORDS, 16, 0.3, "about {word}")
    train_ar(ARTrainConfig(data=data, out=run, model=str(tiny_llama), layer=1, lora_rank=4, epochs=1.0,
                           batch_size=16, overwrite=True), progress=False)
    assert not (run / "ar").exists() and (run / "ar_adapter" / "nla_meta.yaml").exists()
    assert (run / "av" / "nla_meta.yaml").exists()  # the other half's export is untouched
    assert not (run / "calibration.json").exists()


def test_shared_base_matches_merged_folders(lora_run):
    shared = NLA.load(lora_run)
    merged = NLA.load(lora_run, shared_base=False)
    assert shared.shared_base and not merged.shared_base
    vectors = torch.randn(3, 32) * 5
    greedy = {"max_new_tokens": 12}
    assert [e.answer for e in shared.explain(vectors, **greedy)] == [e.answer for e in merged.explain(vectors, **greedy)]
    texts = ["about river", "about music", "something else"]
    assert torch.allclose(shared.reconstruct(texts), merged.reconstruct(texts), atol=1e-4)


@pytest.mark.parametrize("family", ["qwen2", "gemma3"])  # gemma3: sqrt(d) embeddings, BOS, no chat template
def test_other_families_share_a_base_too(tmp_path, tiny_models, family):
    data, _, _ = write_toy_pairs(tmp_path / "pairs.parquet", WORDS, 16, 0.3, "about {word}")
    common = dict(data=data, out=tmp_path / "run", model=str(tiny_models[family]), layer=1, lora_rank=4,
                  epochs=1.0, lr=1e-2, batch_size=8)
    train_av(AVTrainConfig(**common), progress=False)
    train_ar(ARTrainConfig(**common), progress=False)
    shared, merged = NLA.load(tmp_path / "run"), NLA.load(tmp_path / "run", shared_base=False)
    vectors = torch.randn(2, 32) * 5
    assert [e.answer for e in shared.explain(vectors, max_new_tokens=8)] == \
        [e.answer for e in merged.explain(vectors, max_new_tokens=8)]
    assert torch.allclose(shared.reconstruct(["about stone"]), merged.reconstruct(["about stone"]), atol=1e-4)


def test_shared_base_reads_the_plain_target(lora_run, tiny_llama):
    shared = NLA.load(lora_run)
    plain = load_target(str(tiny_llama))
    ids = plain.encode(TEXT)
    shared.explain(torch.randn(1, 32), max_new_tokens=2)  # leave the AV adapter active: reading must switch it off
    assert torch.allclose(shared.activations(ids), NLA.load(lora_run, shared_base=False).activations(ids, plain),
                          atol=1e-5)
    # ...and the check has teeth: with the AR's adapter on, the same blocks give other activations
    assert not torch.allclose(_hidden_with_role(shared, ids, "ar"), shared.activations(ids), atol=1e-3)


def _hidden_with_role(nla, ids, role):
    from nla.models.activations import pad_right, residual_stream

    target = nla.target()
    input_ids, mask = pad_right([ids], target.pad_id, target.device)
    with torch.no_grad(), nla.role(role):
        return residual_stream(target, input_ids, mask, nla.layer)[0]


def test_after_any_nla_call_the_shared_base_runs_as_the_plain_target(lora_run, tiny_llama):
    from nla.models import load_target

    shared, plain = NLA.load(lora_run), load_target(str(tiny_llama))
    ids = torch.tensor([plain.encode(TEXT)])
    target = shared.target()
    shared.explain(torch.randn(1, 32), max_new_tokens=2)
    shared.reconstruct(["about bread"])
    with torch.no_grad():  # the bug: target.model silently ran as the AV after explain()
        assert torch.allclose(target.model(ids).logits, plain.model(ids).logits, atol=1e-5)
        with shared.role("av"):
            assert not torch.allclose(target.model(ids).logits, plain.model(ids).logits, atol=1e-3)
            with shared.role("ar"):  # nested: restores the AV after the block, then the target
                pass
            as_av = target.model(ids).logits
        assert torch.allclose(target.model(ids).logits, plain.model(ids).logits, atol=1e-5)
        with shared.role("av"):
            assert torch.allclose(target.model(ids).logits, as_av)


def test_export_round_trips(lora_run, tmp_path):
    out = tmp_path / "exported"
    result = CliRunner().invoke(app, ["export", str(lora_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = NLA.load(out)
    assert not exported.shared_base
    texts = ["about bread"]
    assert torch.allclose(exported.reconstruct(texts), NLA.load(lora_run).reconstruct(texts), atol=1e-4)
    vectors = torch.randn(2, 32) * 5
    assert [e.answer for e in exported.explain(vectors, max_new_tokens=8)] == \
        [e.answer for e in NLA.load(lora_run).explain(vectors, max_new_tokens=8)]
    again = CliRunner().invoke(app, ["export", str(lora_run), "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_export_into_the_run_refuses_to_replace_without_overwrite(lora_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    first = CliRunner().invoke(app, ["export", str(run)])
    assert first.exit_code == 0 and (run / "av" / "nla_meta.yaml").exists(), first.output
    marker = run / "av" / "kept.txt"
    marker.write_text("the folder a second export would replace")
    again = CliRunner().invoke(app, ["export", str(run)])
    assert again.exit_code == 2 and again.output.strip().splitlines()[-1] == \
        f"error: {run}/av/, {run}/ar/ already exist; pass --overwrite to replace them, or another --out"
    assert marker.exists()
    forced = CliRunner().invoke(app, ["export", str(run), "--overwrite"])
    assert forced.exit_code == 0 and not marker.exists(), forced.output


def test_an_adapter_only_run_loads_as_two_models_and_by_halves(lora_run):
    merged = NLA.load(lora_run, shared_base=False)  # each adapter merged into its own copy of the base
    assert merged.verbalizer.model is not merged.reconstructor.backbone
    assert merged.source.av == lora_run / "av_adapter" and merged.source.ar == lora_run / "ar_adapter"
    halves = NLA.load(av=lora_run / "av_adapter", ar=lora_run)  # a run folder given for its AR half
    texts = ["about music"]
    assert torch.allclose(halves.reconstruct(texts), merged.reconstruct(texts), atol=1e-5)


def test_export_without_adapters_is_named(tmp_path):
    result = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 2 and "no av_adapter/ or ar_adapter/" in result.output
    (tmp_path / "av").mkdir()
    (tmp_path / "ar").mkdir()
    with pytest.raises(NLAError, match="no av_adapter/ and ar_adapter/"):
        NLA.load(tmp_path, shared_base=True)


def test_full_fine_tuning_replaces_a_stale_adapter(lora_run, tmp_path, tiny_llama):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    data, _, _ = write_toy_pairs(tmp_path / "pairs.parquet", WORDS, 16, 0.3, "about {word}")
    train_ar(ARTrainConfig(data=data, out=run, model=str(tiny_llama), layer=1, lora_rank=0, epochs=1.0,
                           batch_size=16, overwrite=True), progress=False)
    assert not (run / "ar_adapter").exists()  # else NLA.load would prefer the old adapter
    assert not NLA.load(run).shared_base


def test_shared_base_refuses_another_target(lora_run):
    with pytest.raises(NLAError, match="adapters sit on"):
        NLA.load(lora_run).target("some-other-model")


def test_ship_copies_a_run_as_fp16_adapters_with_run_relative_paths(lora_run, tmp_path, monkeypatch):
    from nla.autoencoder.shipped import ship

    run = tmp_path / "run"
    shutil.copytree(lora_run, run / "sft")
    (run / "eval").mkdir()
    (run / "eval" / "eval.json").write_text(json.dumps({"nla": "run/sft", "fve": 0.1, "mean_from": "/data/acts/x",
                                                        "data": str(run / "acts" / "validation.parquet")}))
    monkeypatch.chdir(tmp_path)
    shipped = ship(Path("run"), tmp_path / "shipped")  # the run as a user types it, relative
    report = json.loads((shipped / "eval" / "eval.json").read_text())
    # The training machine's run folder means nothing where the package is installed; other paths stay.
    assert report == {"nla": "RUN/sft", "fve": 0.1, "mean_from": "/data/acts/x", "data": "RUN/acts/validation.parquet"}
    weights = load_file(shipped / "av_adapter" / "adapter_model.safetensors")
    assert weights and all(w.dtype == torch.float16 for w in weights.values())
    assert all(k.startswith("base_model.model.") for k in weights)  # peft's key layout: PeftModel reads it
    ours, theirs = NLA.load(shipped, device="cpu"), NLA.load(run / "sft", device="cpu")
    assert torch.allclose(ours.reconstruct(["about river"]), theirs.reconstruct(["about river"]), atol=1e-2)
