"""Our exported checkpoints against the reference client's own load checks (kitft/natural_language_autoencoders,
nla_inference.py: `load_nla_config` for the AV, `NLACritic` for the AR), restated here from its rules, not from
our writer: what it asserts at load time, and how it reconstructs."""

import copy

import pytest
import torch
import yaml
from conftest import AR_TEMPLATE, build_tiny_nla
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from nla.autoencoder.meta import ModelMeta, read_model_meta
from nla.autoencoder.nla import NLA
from nla.autoencoder.reconstructor import Reconstructor
from nla.autoencoder.shared import reference_client_note
from nla.cli import app

FINAL_LN_ATTRS = ("norm", "final_layernorm", "ln_f")  # the reference's list


class ReferenceCritic:
    """NLACritic's load checks and reconstruct(), as the reference client does them."""

    def __init__(self, folder):
        meta = yaml.safe_load((folder / "nla_meta.yaml").read_text())
        assert meta["role"] in ("critic", "ar")
        assert meta["extraction"]["mse_scale"] is not None
        self.template = meta["prompt_templates"].get("ar") or meta["prompt_templates"]["critic"]
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True)
        probe = self.tokenizer("x", add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        assert bos is None or probe[0] == bos, f"BOS check: bos_token_id={bos}, first token {probe[0]}"
        backbone = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        backbone.lm_head = torch.nn.Identity()
        inner = backbone.model
        attr = next((a for a in FINAL_LN_ATTRS if hasattr(inner, a)), None)
        assert attr is not None, "no final-LN attribute"
        setattr(inner, attr, torch.nn.Identity())
        d = backbone.config.hidden_size
        self.value_head = torch.nn.Linear(d, d, bias=False)
        self.value_head.load_state_dict(load_file(str(folder / "value_head.safetensors")))
        self.backbone = backbone.eval()

    @torch.inference_mode()
    def reconstruct(self, explanation: str) -> torch.Tensor:
        ids = self.tokenizer(self.template.format(explanation=explanation), return_tensors="pt",
                             add_special_tokens=True)["input_ids"]
        return self.value_head(self.backbone.model(ids, use_cache=False).last_hidden_state[0, -1]).float()


def reference_av_checks(folder) -> None:
    """load_nla_config's assertions against the AV's own tokenizer."""
    meta = yaml.safe_load((folder / "nla_meta.yaml").read_text())
    assert meta["kind"] == "nla_model" and meta["extraction"]["injection_scale"] is not None
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    t = meta["tokens"]
    assert tokenizer.encode(t["injection_char"], add_special_tokens=False) == [t["injection_token_id"]]
    content = (meta["prompt_templates"].get("av") or meta["prompt_templates"]["actor"]).format(
        injection_char=t["injection_char"])
    ids = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=True,
                                        add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    matches = [i for i, tok in enumerate(ids) if tok == t["injection_token_id"]]
    assert len(matches) == 1
    p = matches[0]
    assert ids[p - 1] == t["injection_left_neighbor_id"] and ids[p + 1] == t["injection_right_neighbor_id"]


TEXTS = ["about bread", "a river that runs to the sea", "def main(): return 0"]


def test_an_ar_whose_tokenizer_declares_a_bos_it_never_adds_passes_the_bos_check(tmp_path, tiny_llama):
    # SmolLM2's case: bos_token_id 1 (<|im_start|>) declared, nothing added by add_special_tokens=True.
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    declared = copy.deepcopy(tokenizer)
    declared.bos_token = declared.convert_ids_to_tokens(1)
    assert declared.bos_token_id == 1 and declared("x", add_special_tokens=True)["input_ids"][0] != 1
    ar = Reconstructor(AutoModelForCausalLM.from_pretrained(tiny_llama), layer=1)
    ar.save_released(tmp_path / "ar", declared, ModelMeta(
        role="ar", d_model=32, extraction_layer_index=1, injection_scale=None, mse_scale=32 ** 0.5,
        prompt_templates={"ar": AR_TEMPLATE}, base_checkpoint="tiny"))
    reference = ReferenceCritic(tmp_path / "ar")  # refused before: "BOS check: bos_token_id=1, first token ..."
    ours = ar.eval()
    from nla.autoencoder.nla import reconstruct_texts

    mine = reconstruct_texts(ours, tokenizer, AR_TEMPLATE, TEXTS)
    theirs = torch.stack([reference.reconstruct(t) for t in TEXTS])
    assert torch.allclose(mine, theirs, atol=1e-5)


def test_nla_export_writes_folders_the_reference_client_loads_and_reads_as_we_do(tmp_path, tiny_llama):
    folder = build_tiny_nla(tmp_path / "nla", tiny_llama)
    reference_av_checks(folder / "av")
    critic = ReferenceCritic(folder / "ar")
    ours = NLA.load(folder).reconstruct(TEXTS)
    theirs = torch.stack([critic.reconstruct(t) for t in TEXTS])
    assert torch.nn.functional.cosine_similarity(ours, theirs).min() > 0.9999


def test_export_says_when_the_reference_client_would_read_the_av_wrongly(tmp_path, lora_run_residual):
    result = CliRunner().invoke(app, ["export", str(lora_run_residual), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "note: this AV reads the vector at block 1's output (injection: residual)" in result.output
    assert reference_client_note(read_model_meta(tmp_path / "out" / "av")) is not None
    reference_av_checks(tmp_path / "out" / "av")  # it loads there: only its reading would be wrong
    ReferenceCritic(tmp_path / "out" / "ar")


def test_an_embedding_injection_av_gets_no_note():
    meta = ModelMeta(role="av", d_model=32, extraction_layer_index=1, injection_scale=20.0, mse_scale=5.0,
                     injection={"site": "embedding", "layer": None})
    assert reference_client_note(meta) is None


@pytest.fixture(scope="module")
def lora_run_residual(tmp_path_factory, tiny_llama):
    from conftest import write_toy_pairs

    from nla.train.ar import train_ar
    from nla.train.av import train_av
    from nla.train.config import ARTrainConfig, AVTrainConfig

    root = tmp_path_factory.mktemp("residual")
    data, _, _ = write_toy_pairs(root / "pairs.parquet", ["river", "bread"], 16, 0.3, "about {word}")
    common = dict(data=data, out=root / "run", model=str(tiny_llama), layer=1, lora_rank=4, epochs=0.5, lr=1e-2)
    train_av(AVTrainConfig(**common, batch_size=8, injection="residual"), progress=False)
    train_ar(ARTrainConfig(**common, batch_size=16), progress=False)
    return root / "run"


@pytest.mark.real
def test_the_shipped_nla_exported_passes_the_reference_clients_checks(tmp_path):
    from nla.autoencoder.shipped import default_dir

    result = CliRunner().invoke(app, ["export", str(default_dir()), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "note: this AV reads the vector at block 20's output" in result.output  # the shipped AV: residual
    reference_av_checks(tmp_path / "av")
    critic = ReferenceCritic(tmp_path / "ar")
    ours = NLA.load("default").reconstruct(TEXTS)
    theirs = torch.stack([critic.reconstruct(t) for t in TEXTS])
    assert torch.nn.functional.cosine_similarity(ours, theirs).min() > 0.999
