"""Tiny NLAs in the *released* layout, written by hand from the format's description — not by nla's writers.

What the release lays out (shared/REFERENCE.md beside the repository, "Checkpoint format"), and what is written here:

    AV/  a full HF causal LM (config.json, model.safetensors, tokenizer, chat template) + nla_meta.yaml
    AR/  config.json with num_hidden_layers = K+1 (nested under text_config for Gemma 3, with
         layer_types sliced), the backbone's weights for blocks 0..K (no final norm, no lm_head),
         value_head.safetensors = {"weight": [d, d] bf16}, the tokenizer with right padding, nla_meta.yaml

Sidecars are plain YAML dicts: schema 2 (`role: av|ar`, `prompt_templates: {av, ar}`, a top-level
`extraction_layer_index`) or schema 1 (`role: actor|critic`, `prompt_templates: {actor, critic}`, and
the layer only as the legacy `critic.num_hidden_layers`, which means K itself). The AV template writes
its placeholder `{injection_char}`. Weights come from the same tiny random models the other tests use
(conftest), saved by transformers, then cut by key name here.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import CHATML, D_MODEL, _config, _trained_tokenizer, build_tiny_model

# The shapes of the released templates (the Qwen NLA's AR template verbatim; the AV's in its form).
AV_TEMPLATE = ("You are given one activation vector from a language model. Describe its content inside "
               "<explanation> tags.\n\nHere is the vector:\n\n<concept>{injection_char}</concept>")
AR_TEMPLATE = "Summary of the following text: <text>{explanation}</text> <summary>"
GEMMA_CHAT = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}"
              "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
INJECTION_SCALE = 20.0
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")
# The layouts the tests build: (family of the tiny model, schema version, Gemma's nested text_config).
LAYOUTS = {"llama-v2": ("llama", 2, False), "qwen2-v1": ("qwen2", 1, False), "gemma3-nested-v2": ("gemma3", 2, True)}


def build_base(folder: Path, family: str, nested: bool) -> Path:
    """A tiny target: conftest's model, or (nested) a Gemma3ForConditionalGeneration with a tiny vision tower,
    saved by transformers as the Gemma 3 12B/27B checkpoints are. Both get a chat template, as instruct models do."""
    if not nested:
        build_tiny_model(folder, family)
    else:
        from transformers import AutoModelForCausalLM, Gemma3Config, SiglipVisionConfig

        torch.manual_seed(0)
        tokenizer = _trained_tokenizer()
        text = _config("gemma3", len(tokenizer))
        vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=28, patch_size=14)
        config = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4,
                              image_token_index=len(tokenizer) - 1, boi_token_index=len(tokenizer) - 2,
                              eoi_token_index=len(tokenizer) - 3)
        AutoModelForCausalLM.from_config(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config["chat_template"] = GEMMA_CHAT if family == "gemma3" else CHATML
    config_path.write_text(json.dumps(tokenizer_config))
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


def chat_ids(tokenizer, content: str) -> list[int]:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=True,
                                        add_generation_prompt=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def find_marker(tokenizer, template: str) -> dict:
    """As the release picks its marker: the first character of a scanned range that is one token and sits once,
    inside, the canonical prompt; its neighbours are recorded."""
    for code in range(0x21, 0x7F):
        char = chr(code)
        encoded = tokenizer.encode(char, add_special_tokens=False)
        if len(encoded) != 1:
            continue
        ids = chat_ids(tokenizer, template.format(injection_char=char))
        if ids.count(encoded[0]) == 1 and 0 < ids.index(encoded[0]) < len(ids) - 1:
            p = ids.index(encoded[0])
            return {"injection_char": char, "injection_token_id": encoded[0],
                    "injection_left_neighbor_id": ids[p - 1], "injection_right_neighbor_id": ids[p + 1]}
    raise AssertionError("no marker for the tiny tokenizer")


def suffix_ids(tokenizer, template: str) -> list[int]:
    """critic_suffix_ids: the last tokens of every AR prompt (those of the text after {explanation})."""
    n = len(tokenizer.encode(template.split("{explanation}")[1], add_special_tokens=False))
    tails = {tuple(tokenizer(template.format(explanation=e), add_special_tokens=True)["input_ids"][-n:])
             for e in ("hello world", "numbers 1 2 3")}
    assert len(tails) == 1, tails
    return list(tails.pop())


def sidecar(role: str, schema: int, layer: int | None, tokens: dict, base: Path, *, with_layer: bool = True) -> dict:
    v1 = schema == 1
    data = {"kind": "nla_model", "schema_version": schema,
            "role": {"av": "actor", "ar": "critic"}[role] if v1 else role, "d_model": D_MODEL,
            "extraction": {"injection_scale": INJECTION_SCALE if role == "av" else None,
                           "mse_scale": math.sqrt(D_MODEL)},
            "tokens": tokens,
            "prompt_templates": {"actor" if v1 else "av": AV_TEMPLATE, "critic" if v1 else "ar": AR_TEMPLATE},
            "base_checkpoint": str(base), "stage": "rl", "trained_on": ["rl.parquet"],
            "parent_checkpoints": ["sl"], "created_at": "2026-01-01T00:00:00+00:00",
            "training": {"lr": 1e-5, "loss_type": "grpo", "global_batch_size": 256}}
    if with_layer:
        if v1:
            data["critic"] = {"num_hidden_layers": layer}  # legacy: K itself
        else:
            data["extraction_layer_index"] = layer
    return data


def write_sidecar(folder: Path, data: dict) -> None:
    (folder / "nla_meta.yaml").write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def truncate_ar(base: Path, folder: Path, layer: int) -> None:
    """config (num_hidden_layers = K+1, layer_types sliced; nested for Gemma), weights of blocks 0..K only."""
    folder.mkdir(parents=True)
    config = json.loads((base / "config.json").read_text())
    text = config.get("text_config", config)
    text["num_hidden_layers"] = layer + 1
    if text.get("layer_types"):
        text["layer_types"] = text["layer_types"][: layer + 1]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    weights = load_file(base / "model.safetensors")
    kept = {}
    for name, tensor in weights.items():
        block = re.search(r"\.layers\.(\d+)\.", name)
        if (block and int(block.group(1)) > layer) or name.endswith("model.norm.weight") or "lm_head" in name \
                or name.startswith(("vision_tower", "multi_modal_projector", "model.vision_tower")):
            continue
        kept[name] = tensor.contiguous()
    save_file(kept, folder / "model.safetensors", metadata={"format": "pt"})


def build_released_pair(root: Path, layout: str, *, layer: int = 1, av_has_layer: bool = True,
                        base: Path | None = None) -> tuple[Path, Path, Path]:
    """(AV folder, AR folder, base model folder) of a released-layout NLA on a tiny model."""
    from transformers import AutoTokenizer

    family, schema, nested = LAYOUTS[layout]
    base = base or build_base(root / "base", family, nested)
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokens = {**find_marker(tokenizer, AV_TEMPLATE), "critic_suffix_ids": suffix_ids(tokenizer, AR_TEMPLATE)}

    av = root / "av"
    shutil.copytree(base, av)
    write_sidecar(av, sidecar("av", schema, layer, tokens, base, with_layer=av_has_layer))

    ar = root / "ar"
    truncate_ar(base, ar, layer)
    torch.manual_seed(1)
    head = torch.eye(D_MODEL) + 0.05 * torch.randn(D_MODEL, D_MODEL)
    save_file({"weight": head.to(torch.bfloat16).contiguous()}, ar / "value_head.safetensors")
    for name in TOKENIZER_FILES:
        if (base / name).exists():
            shutil.copy(base / name, ar / name)
    tokenizer_config = json.loads((ar / "tokenizer_config.json").read_text())
    tokenizer_config["padding_side"] = "right"
    (ar / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    write_sidecar(ar, sidecar("ar", schema, layer, tokens, base))
    return av, ar, base
