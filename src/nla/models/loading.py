"""Load a causal LM for nla: its text decoder only, in a chosen dtype, on one device or spread over GPUs.

    model = load_causal_lm("path/or/hub-id", device="cuda", dtype="auto")

- **dtype** "auto" is bf16 on CUDA and fp32 on CPU (bf16 matmul on a CPU is hundreds of times slower).
- **device** "auto" is the GPU when there is one, else the CPU; with `spread=True` (reading an NLA,
  whose three models may not fit on one GPU) and several GPUs, "auto" spreads the model over all of
  them with accelerate's `device_map="auto"`, which fills each GPU's free memory in turn.
- **Vision-language wrappers.** Gemma 3 12B/27B checkpoints (and the NLAs built from them) are
  `Gemma3ForConditionalGeneration` folders whose config nests the decoder under `text_config`. Only
  the text decoder is loaded, as the family's causal LM with its weights renamed: the vision tower is
  never used, and the wrapper cannot `generate` from `inputs_embeds`, which the AV needs. Its logits
  on text equal the wrapper's.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from nla.errors import NLAError
from nla.inputs import damaged_file

# Checkpoint key prefixes of the wrapper's text decoder (transformers 4.x and 5.x spellings) -> causal LM keys.
TEXT_KEY_MAPPING = {r"^language_model\.model\.": "model.", r"^model\.language_model\.": "model.",
                    r"^language_model\.lm_head\.": "lm_head."}
SPREAD = "auto"  # the device_map that spreads a model over every visible GPU


def pad_id_of(tokenizer) -> int:
    """The one padding rule: the tokenizer's pad id, else 0. Padded positions are masked out of attention and
    never scored or trained on, so any id works; 0 keeps it a valid row of every embedding table."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise NLAError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from err
    if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
        raise NLAError(f"device '{device}' is not available ({torch.cuda.device_count()} CUDA devices here); "
                       "use --device auto or cpu")
    return chosen


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    choices = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
               "float16": torch.float16, "fp16": torch.float16}
    if dtype not in choices:
        raise NLAError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    return choices[dtype]


def placement(device: str, *, spread: bool = False) -> tuple[torch.device | None, str | None]:
    """(one device, None), or (None, "auto") to spread over several GPUs."""
    if device == "auto" and spread and torch.cuda.device_count() > 1:
        return None, SPREAD
    return pick_device(device), None


def placement_dtype(dtype: str | torch.dtype, device: torch.device | None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    return pick_dtype(dtype, device if device is not None else torch.device("cuda"))


def text_only(config) -> object | None:
    """The nested text config of a vision-language wrapper whose decoder loads on its own, else None."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    text = getattr(config, "text_config", None)
    if text is None or getattr(config, "vision_config", None) is None:
        return None
    return text if text.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else None


@contextmanager
def quiet_loading():
    """Silence transformers' load report (an AR lacks its final norm and lm_head by design; a text-only load
    of a wrapper skips the vision tower)."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def load_causal_lm(source, *, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
                   spread: bool = False, **kwargs) -> torch.nn.Module:
    """The causal LM at `source` (a folder, or a hub id; kwargs as for from_pretrained), in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    one, device_map = placement(str(device), spread=spread)
    torch_dtype = placement_dtype(dtype, one)
    with local_model_files(source, kwargs):
        if "gguf_file" not in kwargs:
            config = AutoConfig.from_pretrained(source, trust_remote_code=kwargs.get("trust_remote_code", False))
            text = text_only(config)
            if text is not None:
                kwargs = {**kwargs, "config": text, "key_mapping": TEXT_KEY_MAPPING}
        if device_map is None and one.type == "cuda":
            device_map = str(one)  # load straight onto the GPU, without a full copy in host memory first
        with quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype, device_map=device_map, **kwargs)
    if device_map is None:
        model.to(one)
    return model.eval()


def local_model_files(source, kwargs: dict):
    """A local folder (or GGUF file) whose weights or config are damaged is one line naming it; a hub id's
    errors (network, missing repository) are left to the caller, which knows what was asked for."""
    from contextlib import nullcontext
    from pathlib import Path


    if not Path(str(source)).is_dir():
        return nullcontext()
    if "gguf_file" in kwargs:
        return damaged_file(Path(source) / kwargs["gguf_file"], "a GGUF file", "download or copy it again")
    return damaged_file(source, "a model folder", "copy the folder again (its config.json and *.safetensors "
                        "weights), or rerun the command that wrote it")


def input_device(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go: its input embeddings' device (the first GPU of a spread model)."""
    return model.get_input_embeddings().weight.device


def check_dtype_name(dtype: str) -> str:
    """A CLI-level check of a --dtype value, before any model is loaded."""
    if dtype not in ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"):
        raise NLAError(f"unknown dtype '{dtype}'; use auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16 or float16")
    return dtype
