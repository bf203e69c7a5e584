"""Released-layout NLAs load in nla, and nla's checkpoints read the way the reference client reads them.

One direction: `released_layout.py` writes tiny checkpoints by hand as the release lays them out (schema
1 and 2 sidecars, `{injection_char}`, the legacy `critic.num_hidden_layers` = K, a bf16 value head, Gemma's
nested text_config) and nla must load them and compute what the format says. The other: nla trains and
writes a tiny NLA, and a small reader written here from the format (as the reference client reads it)
must parse it and reproduce nla's numbers.
"""

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from nla import NLA
from nla.cli import app
from nla.errors import NLAError
from released_layout import AR_TEMPLATE, AV_TEMPLATE, LAYOUTS, build_released_pair, chat_ids

K = 1


@pytest.fixture(scope="module", params=list(LAYOUTS))
def released(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    return (request.param, *build_released_pair(root, request.param, layer=K))


def expected_reconstruction(base, ar, text: str, gemma: bool) -> torch.Tensor:
    """What the format says the AR computes: block K's output at the last token of the AR prompt (BOS first),
    through the bf16 head — computed on the full base model, which the AR's blocks 0..K were cut from."""
    from safetensors.torch import load_file as read
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ar)
    ids = tokenizer(AR_TEMPLATE.format(explanation=text), add_special_tokens=True)["input_ids"]
    if gemma and ids[0] != tokenizer.bos_token_id:  # a real Gemma tokenizer adds BOS; the tiny one does not
        ids = [tokenizer.bos_token_id] + ids
    model = AutoModelForCausalLM.from_pretrained(base)
    with torch.no_grad():
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[K + 1][0, -1]
    return read(ar / "value_head.safetensors")["weight"].float() @ hidden


def test_released_pair_loads_and_computes_what_the_format_says(released):
    layout, av, ar, base = released
    nla = NLA.load(av=av, ar=ar, device="cpu")
    assert (nla.layer, nla.d_model, nla.av_meta.extraction_layer_index) == (K, 32, K)  # legacy key: K, not K-1
    sidecar = yaml.safe_load((av / "nla_meta.yaml").read_text())
    tokens = sidecar["tokens"]
    # The AV's prompt is the released template with the marker, tokenized with the chat template in one step.
    assert nla.verbalizer.prompt == chat_ids(nla.verbalizer.tokenizer, AV_TEMPLATE.format(
        injection_char=tokens["injection_char"]))
    assert nla.verbalizer.site.left_neighbor_id == tokens["injection_left_neighbor_id"]
    assert nla.reconstructor.head.weight.dtype == torch.float32  # the bf16 head, held in fp32
    texts = ["rivers and farms", "python code"]
    expected = torch.stack([expected_reconstruction(base, ar, t, "gemma" in layout) for t in texts])
    torch.testing.assert_close(nla.reconstruct(texts), expected, atol=1e-4, rtol=1e-4)
    explanations = nla.explain(torch.randn(2, 32), max_new_tokens=3)
    assert all(e.text is None and e.truncated and e.num_tokens == 3 for e in explanations)
    # The target defaults to the sidecar's base_checkpoint.
    assert nla.target().d_model == 32 and nla.activations([1, 5, 6]).shape == (3, 32)


@pytest.mark.parametrize("released", ["gemma3-nested-v2"], indirect=True)
def test_gemma_wrapper_loads_as_its_text_decoder_with_the_same_logits(released):
    from transformers import AutoModelForCausalLM

    layout, av, ar, base = released
    assert "text_config" in json.loads((ar / "config.json").read_text())
    nla = NLA.load(av=av, ar=ar, device="cpu")
    assert type(nla.verbalizer.model).__name__ == "Gemma3ForCausalLM"  # generate() from embeddings works on it
    wrapper = AutoModelForCausalLM.from_pretrained(av)
    ids = torch.tensor([nla.verbalizer.prompt])
    with torch.no_grad():
        torch.testing.assert_close(nla.verbalizer.model(ids).logits, wrapper(ids).logits)


def test_legacy_av_without_a_layer_reads_its_ars(tmp_path):
    av, ar, _ = build_released_pair(tmp_path, "qwen2-v1", layer=2, av_has_layer=False)
    nla = NLA.load(av=av, ar=ar, device="cpu")
    assert nla.av_meta.extraction_layer_index == 2 and nla.layer == 2  # not the AV's own layer count minus one


@pytest.mark.parametrize("released", ["llama-v2"], indirect=True)
def test_a_released_pair_reads_in_bf16(released):
    layout, av, ar, _ = released
    nla = NLA.load(av=av, ar=ar, device="cpu", dtype="bfloat16")
    assert nla.verbalizer.model.dtype == torch.bfloat16 and nla.reconstructor.backbone.dtype == torch.bfloat16
    assert nla.reconstruct(["rivers"]).dtype == torch.float32
    assert len(nla.explain(torch.randn(1, 32), max_new_tokens=2)) == 1


@pytest.mark.parametrize("released", ["qwen2-v1"], indirect=True)
def test_explain_reads_a_released_pair_from_the_command_line(released):
    layout, av, ar, _ = released
    result = CliRunner().invoke(app, ["explain", "Rivers carry water.", "--nla-av", str(av), "--nla-ar", str(ar),
                                      "--max-new-tokens", "2", "--device", "cpu", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert "truncated" in result.stdout


# ---------------------------------------------------------------- placeholders and template problems

def edit(folder, **fields):
    path = folder / "nla_meta.yaml"
    data = yaml.safe_load(path.read_text())
    for key, value in fields.items():
        section, _, name = key.partition("__")
        data[section] = value if not name else {**data[section], name: value}
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


@pytest.fixture()
def pair(tmp_path):
    av, ar, _ = build_released_pair(tmp_path, "llama-v2", layer=K)
    return av, ar


def test_the_older_marker_placeholder_still_reads(pair):
    av, ar = pair
    edit(av, prompt_templates__av=AV_TEMPLATE.replace("{injection_char}", "{marker}"))
    assert NLA.load(av=av, ar=ar, device="cpu").verbalizer.prompt  # same prompt, same neighbours


@pytest.mark.parametrize("role,template,message", [
    ("av", AV_TEMPLATE.replace("</concept>", "</concept> {topic}"), r"prompt_templates.av has the placeholder \{topic\}"),
    ("av", AV_TEMPLATE.replace("{injection_char}", "{injection_char"), "prompt_templates.av is not a valid template"),
    ("av", AV_TEMPLATE.replace("{injection_char}", "X"), "prompt_templates.av holds 0 injection placeholders"),
    ("av", AV_TEMPLATE + " {marker}", "prompt_templates.av holds 2 injection placeholders"),
    ("ar", AR_TEMPLATE.replace("{explanation}", "{text}"), r"prompt_templates.ar has the placeholder \{text\}"),
    ("ar", AR_TEMPLATE + " {explanation}", r"prompt_templates.ar holds \{explanation\} 2 times"),
    ("ar", None, "prompt_templates.ar is missing"),
], ids=["av-unknown-field", "av-unbalanced", "av-no-placeholder", "av-two-placeholders", "ar-unknown-field",
        "ar-two-placeholders", "ar-missing"])
def test_a_bad_template_is_one_line_naming_the_field(pair, role, template, message):
    av, ar = pair
    if role == "av":
        edit(av, prompt_templates__av=template)
    else:
        edit(ar, prompt_templates__ar=template)
    with pytest.raises(NLAError, match=message):
        NLA.load(av=av, ar=ar, device="cpu")
    result = CliRunner().invoke(app, ["explain", "Hi there.", "--nla-av", str(av), "--nla-ar", str(ar)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "Traceback" not in result.output


def test_ar_prompt_drift_is_named(pair):
    av, ar = pair
    edit(ar, tokens__critic_suffix_ids=[1, 2, 3])
    with pytest.raises(NLAError, match="prompt drift .* critic_suffix_ids"):
        NLA.load(av=av, ar=ar, device="cpu")


def test_a_value_head_without_its_weight_is_named(pair):
    from safetensors.torch import save_file

    av, ar = pair
    save_file({"linear.weight": torch.zeros(32, 32)}, ar / "value_head.safetensors")
    with pytest.raises(NLAError, match="no 'weight'"):
        NLA.load(av=av, ar=ar, device="cpu")


# ---------------------------------------------------------------- the other direction: nla's checkpoints

def reference_reads_av(folder, vector: torch.Tensor):
    """The AV as the reference client reads it: sidecar fields, `template.format(injection_char=...)`, one-step
    chat tokenization, neighbour checks, and the prompt embeddings with the rescaled vector at the marker."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = yaml.safe_load((folder / "nla_meta.yaml").read_text(encoding="utf-8"))
    assert meta["kind"] == "nla_model" and meta["role"] in ("av", "actor")
    tokens, scale = meta["tokens"], float(meta["extraction"]["injection_scale"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.encode(tokens["injection_char"], add_special_tokens=False) == [tokens["injection_token_id"]]
    template = meta["prompt_templates"].get("av") or meta["prompt_templates"]["actor"]
    ids = chat_ids(tokenizer, template.format(injection_char=tokens["injection_char"]))
    where = [i for i, t in enumerate(ids) if t == tokens["injection_token_id"]]
    assert len(where) == 1
    p = where[0]
    assert (ids[p - 1], ids[p + 1]) == (tokens["injection_left_neighbor_id"], tokens["injection_right_neighbor_id"])
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.hidden_size == meta["d_model"]
    with torch.no_grad():
        embeds = model.get_input_embeddings()(torch.tensor([ids]))
    embeds[0, p] = vector / vector.norm().clamp_min(1e-12) * scale
    return ids, embeds


def reference_reads_ar(folder, texts: list[str]) -> torch.Tensor:
    """The AR as the reference client reads it: role, mse_scale, template, config with K+1 layers, a strict
    `weight`-only value head, the final norm and lm_head set to identity, the prediction at the last token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    meta = yaml.safe_load((folder / "nla_meta.yaml").read_text(encoding="utf-8"))
    assert meta["kind"] == "nla_model" and meta["role"] in ("ar", "critic") and meta["extraction"]["mse_scale"]
    layer = meta["extraction_layer_index"]
    config = json.loads((folder / "config.json").read_text())
    assert config.get("text_config", config)["num_hidden_layers"] == layer + 1
    template = meta["prompt_templates"].get("ar") or meta["prompt_templates"]["critic"]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.padding_side == "right"
    head_weights = load_file(folder / "value_head.safetensors")
    assert set(head_weights) == {"weight"}
    backbone = AutoModelForCausalLM.from_pretrained(folder)
    backbone.lm_head = torch.nn.Identity()
    backbone.model.norm = torch.nn.Identity()
    d = backbone.config.hidden_size
    head = torch.nn.Linear(d, d, bias=False)
    head.load_state_dict(head_weights)  # strict: exactly one tensor named weight
    suffix = meta["tokens"]["critic_suffix_ids"]
    out = []
    for text in texts:
        ids = tokenizer(template.format(explanation=text), add_special_tokens=True)["input_ids"]
        assert ids[-len(suffix):] == suffix  # the reference's training checks every AR prompt's tail
        with torch.no_grad():
            out.append(head(backbone.model(torch.tensor([ids]), use_cache=False).last_hidden_state[0, -1]))
    return torch.stack(out)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def written_by_nla(request, tmp_path_factory, tiny_models):
    """A tiny NLA trained and written by nla itself (train-av, then train-ar with full fine-tuning)."""
    from conftest import write_toy_pairs
    from nla.train.ar import train_ar
    from nla.train.av import train_av
    from nla.train.config import ARTrainConfig, AVTrainConfig

    root = tmp_path_factory.mktemp(f"ours-{request.param}")
    data = write_toy_pairs(root / "pairs.parquet", ["river", "bread"], rows=16, noise=0.3, template="about {word}")[0]
    model = str(tiny_models[request.param])
    train_av(AVTrainConfig(data=data, out=root / "nla", model=model, layer=K, lora_rank=0, batch_size=8, epochs=0.5,
                           checkpoint_every=1000), progress=False)
    train_ar(ARTrainConfig(data=data, out=root / "nla", model=model, layer=K, lora_rank=0, batch_size=8, epochs=0.5,
                           checkpoint_every=1000), progress=False)
    return root / "nla"


def test_nla_checkpoints_read_as_the_reference_reads_them(written_by_nla):
    nla = NLA.load(written_by_nla, device="cpu")
    raw = yaml.safe_load((written_by_nla / "av" / "nla_meta.yaml").read_text())
    assert "{injection_char}" in raw["prompt_templates"]["av"]  # the released placeholder name
    vector = torch.randn(32) * 3
    ids, embeds = reference_reads_av(written_by_nla / "av", vector)
    ours_ids, ours_embeds, _ = nla.verbalizer.prompt_embeddings(vector[None])
    assert ours_ids[0].tolist() == ids
    torch.testing.assert_close(ours_embeds, embeds, atol=1e-5, rtol=1e-5)
    texts = ["about river", "about bread and more"]
    torch.testing.assert_close(reference_reads_ar(written_by_nla / "ar", texts), nla.reconstruct(texts),
                               atol=1e-4, rtol=1e-4)
    assert math.isclose(yaml.safe_load((written_by_nla / "ar" / "nla_meta.yaml").read_text())["extraction"][
        "mse_scale"], math.sqrt(32))
