"""Shared fixtures: tiny random models of each supported family, built offline.

Each tiny model is a real HF architecture (llama, qwen2, gemma3) with a few layers and
d_model 32, saved to a folder with a small byte-level BPE tokenizer trained here on
Python's own documentation, so tests need no network and run in seconds.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>"]
D_MODEL = 32
NUM_LAYERS = 4


@functools.lru_cache(maxsize=1)
def _trained_tokenizer():
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(topics.values())[:20], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def _config(family: str, vocab: int):
    common = dict(vocab_size=vocab, hidden_size=D_MODEL, intermediate_size=64, num_hidden_layers=NUM_LAYERS,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common, tie_word_embeddings=True)
    if family == "qwen2":
        from transformers import Qwen2Config

        return Qwen2Config(**common)
    if family == "gemma3":
        from transformers import Gemma3TextConfig

        return Gemma3TextConfig(**common, head_dim=8, sliding_window=4)
    raise ValueError(family)


def build_tiny_model(folder: Path, family: str) -> Path:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    tokenizer = _trained_tokenizer()
    # Gemma's base model has no chat template, and its GGUF tokenizer adds no BOS: mirror both.
    tokenizer.chat_template = None if family == "gemma3" else CHATML
    model = AutoModelForCausalLM.from_config(_config(family, len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: build_tiny_model(root / family, family) for family in ("llama", "qwen2", "gemma3")}


@pytest.fixture(scope="session")
def tiny_llama(tiny_models) -> Path:
    return tiny_models["llama"]


@pytest.fixture()
def trained_lora(tiny_llama):
    """The tiny llama with a rank-8 "av" LoRA whose B is not zero, as after training."""
    from transformers import AutoModelForCausalLM

    from nla.autoencoder.lora import add_lora

    torch.manual_seed(0)
    model = add_lora(AutoModelForCausalLM.from_pretrained(tiny_llama), 8, adapter_name="av")
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            weight.data = torch.randn_like(weight) * 0.1
    return model


SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden porch.",
    "Python functions are defined with the def keyword, followed by a name, parameters and a colon.",
    "A list comprehension builds a new list by applying an expression to every item of an iterable object.",
    "Rivers carry water from the mountains to the sea, shaping valleys and feeding farms along their banks.",
    "The museum opened a new exhibition of impressionist paintings, drawing crowds from across the region.",
    "Hi.",
]


@pytest.fixture()
def small_corpus(tmp_path) -> Path:
    """A .jsonl corpus of 40 labelled documents (plain and chat), one of them too short to sample."""
    return small_corpus_file(tmp_path / "corpus.jsonl")


def small_corpus_file(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(40):
            text = " ".join(SAMPLE_TEXTS[(i + k) % 5] for k in range(1 + i % 3))
            if i % 4 == 0:
                record = {"id": f"doc-{i}", "genre": "chat", "messages": [
                    {"role": "user", "content": f"Tell me something, number {i}."},
                    {"role": "assistant", "content": text}]}
            else:
                record = {"id": f"doc-{i}", "genre": "prose", "topic": f"t{i % 3}", "text": text}
            f.write(json.dumps(record) + "\n")
        f.write(json.dumps({"id": "short", "text": SAMPLE_TEXTS[-1]}) + "\n")
    return path


PAIR_COLUMNS = ("doc_id", "position", "n_raw_tokens", "activation_layer", "token_id", "token",
                "detokenized_text_truncated", "source", "genre", "topic", "split")


def write_toy_pairs(path: Path, words: list[str], rows: int, noise: float, template: str) -> tuple:
    """An explanations parquet where each activation points in its word's direction and its text names the word."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nla.data.dataset import rows_to_table

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(words), D_MODEL)).astype(np.float32) * 5
    labels = rng.integers(0, len(words), size=rows)
    vectors = centres[labels] + rng.normal(size=(rows, D_MODEL)).astype(np.float32) * noise
    texts = [template.format(word=words[i]) for i in labels]
    table = rows_to_table(vectors, {c: [None] * rows for c in PAIR_COLUMNS}, D_MODEL)
    pq.write_table(table.append_column("explanation", pa.array(texts)), path)
    return path, texts, torch.from_numpy(vectors)


@pytest.fixture()
def extracted_dataset(tmp_path, tiny_llama, small_corpus) -> Path:
    """A finished `nla extract` of the small corpus on the tiny llama (layer 1, 3 positions per document)."""
    from nla.data.extract import ExtractConfig, extract

    cfg = ExtractConfig(out=tmp_path / "acts", model=str(tiny_llama), corpus=str(small_corpus), layer=1,
                        positions_per_doc=3, min_position=4)
    extract(cfg, progress=False)
    return cfg.out


AR_TEMPLATE = "A language model's thought, described:\n{explanation}\nThe thought described above is"


def build_tiny_nla(folder: Path, model_path: Path, layer: int = 1, base_checkpoint: str = "tiny") -> Path:
    """An untrained NLA in the released layout on a tiny model: its AV never closes its tag. `base_checkpoint`:
    what its sidecars name as the target (the model's path lets commands that load the target run on it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nla.autoencoder.checkpoint import save_verbalizer, verbalizer_tokens
    from nla.autoencoder.meta import ModelMeta
    from nla.autoencoder.reconstructor import Reconstructor
    from nla.autoencoder.verbalizer import Verbalizer
    from nla.autoencoder.verbalizer_prompt import AV_TEMPLATE, choose_marker, injection_site, prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    marker = choose_marker(tokenizer)
    ids = prompt_ids(tokenizer, AV_TEMPLATE, marker)
    av = Verbalizer(AutoModelForCausalLM.from_pretrained(model_path), tokenizer, ids, injection_site(ids, marker), 20.0)
    templates = {"av": AV_TEMPLATE, "ar": AR_TEMPLATE}
    save_verbalizer(folder / "av", av, ModelMeta(
        role="av", d_model=32, extraction_layer_index=layer, injection_scale=20.0, mse_scale=32 ** 0.5,
        tokens=verbalizer_tokens(av), prompt_templates=templates, base_checkpoint=base_checkpoint))
    ar = Reconstructor(AutoModelForCausalLM.from_pretrained(model_path), layer=layer)
    ar.save_released(folder / "ar", tokenizer, ModelMeta(
        role="ar", d_model=32, extraction_layer_index=layer, injection_scale=None, mse_scale=32 ** 0.5,
        prompt_templates=templates, base_checkpoint=base_checkpoint))
    return folder


TOY_WORDS = ["river", "python", "music", "bread"]


@pytest.fixture(scope="module")
def nla_folder(tmp_path_factory, tiny_llama) -> Path:
    """A tiny untrained NLA in the released layout, one per module (the reading tests read it through a
    scripted AV; a module may define its own)."""
    return build_tiny_nla(tmp_path_factory.mktemp("reading") / "nla", tiny_llama)


@pytest.fixture()
def reader(nla_folder, tiny_llama, tmp_path, monkeypatch):
    """A Reader on `nla_folder` with the scripted AV of reading_helpers.py, its calibration cached in tmp_path."""
    from reading_helpers import scripted_reader

    monkeypatch.setenv("NLA_CACHE_DIR", str(tmp_path / "cache"))
    return scripted_reader(nla_folder, tiny_llama)


def build_sft_nla(root: Path, model: Path, av_rank: int = 0) -> tuple[Path, Path]:
    """A tiny NLA whose AV has learned the `<explanation>about WORD</explanation>` format (not perfectly):
    (its folder, the pairs it was trained on). av_rank 0 trains the AV fully, else as a LoRA adapter."""
    from nla.train.ar import train_ar
    from nla.train.av import train_av
    from nla.train.config import ARTrainConfig, AVTrainConfig

    data = write_toy_pairs(root / "pairs.parquet", TOY_WORDS, rows=64, noise=0.3, template="about {word}")[0]
    # A LoRA AV learns the format slower: after 20 epochs its greedy answers close the tag in 0 of 32 rows,
    # after 80 in all 32 (measured); 100 leaves a margin.
    train_av(AVTrainConfig(data=data, out=root / "nla", model=str(model), layer=1, lora_rank=av_rank, lr=1e-2,
                           batch_size=16, epochs=100 if av_rank else 20, checkpoint_every=1000), progress=False)
    train_ar(ARTrainConfig(data=data, out=root / "nla", model=str(model), layer=1, lora_rank=4, lr=1e-2,
                           batch_size=16, epochs=4, checkpoint_every=1000), progress=False)
    return root / "nla", data


def torchrun(processes: int) -> list[str]:
    """The command that starts `processes` fresh CPU processes (gloo) on a free local port. Fresh, as
    `accelerate launch` makes them: a fork of the pytest process can hang in OpenMP once torch used threads."""
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port())]


def free_port() -> int:
    """A port nothing listens on at 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_benchmark(name: str):
    """A script of benchmarks/ (not a package) imported as a module, so tests can call its functions."""
    path = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    if str(path.parent) not in sys.path:  # as when run as a script: a benchmark may import another
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
