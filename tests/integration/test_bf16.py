"""The GPU user's dtype path, on the CPU: `nla train` end to end in bf16 on a tiny model (what `--dtype auto` gives
on CUDA), then trace, index and search reading its NLA in bf16. Losses stay finite, and what is written has the
dtypes the format says: activations fp32, the AR's value head fp32, adapters fp32. What a CPU cannot show (CUDA
kernels, NCCL, memory) is listed in the README as untested until an accelerator run."""

import json
import math

import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from nla.reading.config import IndexSettings, TraceSettings
from nla.reading.index import build_index, load_index_reader
from nla.reading.index_store import open_index
from nla.reading.search import SearchQuery, index_nla, search
from nla.reading.trace import Reader
from nla.pipeline.train import load_config, run_pipeline

pytestmark = [pytest.mark.bf16, pytest.mark.slow]
BF16 = "bfloat16"


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, tiny_llama):
    import yaml

    from conftest import small_corpus_file

    root = tmp_path_factory.mktemp("bf16")
    corpus = small_corpus_file(root / "corpus.jsonl")
    config = {
        "model": str(tiny_llama), "layer": 1, "corpus": str(corpus),
        "extract": {"positions_per_doc": 3, "min_position": 4, "dtype": BF16},
        "explain": {"quote_tokens": 4, "salient_words": 2},
        "ar": {"lora_rank": 4, "batch_size": 8, "epochs": 1.0, "lr": 1e-3, "dtype": BF16},
        "av": {"lora_rank": 4, "batch_size": 8, "epochs": 1.0, "lr": 1e-3, "injection": "residual", "dtype": BF16},
        "refit": {"epochs": 0},
        "rl": {"steps": 2, "batch_size": 2, "group_size": 2, "max_response_tokens": 8, "eval_rows": 4, "dtype": BF16},
        "eval": {"max_rows": 8, "max_new_tokens": 8, "dtype": BF16},
    }
    path = root / "bf16.yaml"
    path.write_text(yaml.safe_dump(config))
    run_pipeline(load_config(path), root / "run", echo=lambda line: None)
    return root / "run"


def logged(path, key):
    return [json.loads(line)[key] for line in path.read_text().splitlines() if key in json.loads(line)]


def test_every_stage_trains_in_bf16_with_finite_losses(bf16_run):
    for path, key in ((bf16_run / "sft" / "ar_metrics.jsonl", "loss"), (bf16_run / "sft" / "av_metrics.jsonl", "loss"),
                      (bf16_run / "rl" / "rl_metrics.jsonl", "reward")):
        values = logged(path, key)
        assert values and all(math.isfinite(v) for v in values), path
    report = json.loads((bf16_run / "eval" / "eval.json").read_text())
    assert math.isfinite(report["fve"]) and (bf16_run / "rl" / "calibration.json").exists()


def test_what_is_written_has_the_formats_dtypes(bf16_run):
    acts = pq.read_table(bf16_run / "acts" / "validation.parquet")
    assert str(acts.schema.field("activation_vector").type.value_type) == "float"  # fp32, never bf16
    for folder in ("sft", "rl"):
        head = load_file(bf16_run / folder / "ar_adapter" / "value_head.safetensors")
        assert head["weight"].dtype == torch.float32, folder
        for role in ("av", "ar"):
            weights = load_file(bf16_run / folder / f"{role}_adapter" / "adapter_model.safetensors")
            assert {w.dtype for w in weights.values()} == {torch.float32}, (folder, role)


def test_trace_index_and_search_read_the_nla_in_bf16(bf16_run, tmp_path, small_corpus):
    reader = Reader.load(bf16_run / "rl", dtype=BF16, max_new_tokens=8)
    assert next(reader.nla.verbalizer.model.parameters()).dtype == torch.bfloat16
    trace = reader.trace("Rivers carry water to the sea.", TraceSettings(max_new_tokens=8))
    assert all(t.mse is None or math.isfinite(t.mse) for t in trace.tokens)
    assert all(math.isfinite(t["norm"]) for t in trace.document["tokens"] if t["traced"])
    settings = IndexSettings(corpus=str(small_corpus), max_docs=6, positions="2", explain="none")
    indexer = load_index_reader(str(bf16_run / "rl"), settings, dtype=BF16)
    build_index(indexer, settings, tmp_path / "index")
    index = open_index(tmp_path / "index")
    try:
        hits = search(index, index_nla(index, dtype=BF16), SearchQuery(query="rivers", by="activation", k=3))["hits"]
        assert hits and all(math.isfinite(h["activation_score"]) for h in hits)
    finally:
        index.close()
