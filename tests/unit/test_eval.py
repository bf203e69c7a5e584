"""`nla eval` on tiny models: figures and controls, outputs, resume, refusals, the oracle AR, the CLI."""

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from test_nla_checkpoint import build_tiny_nla
from typer.testing import CliRunner

from conftest import write_toy_pairs
from nla.autoencoder.verbalizer import Explanation
from nla.cli import app
from nla.data.dataset import rows_to_table
from nla.errors import NLAError
from nla.eval import evaluate as evaluate_module
from nla.eval.evaluate import EvalConfig, derangement, evaluate
from nla.eval.metrics import baseline
from nla.train.ar import train_ar
from nla.train.av import train_av
from nla.train.config import ARTrainConfig, AVTrainConfig

pytestmark = pytest.mark.slow  # its fixture trains an AR for 12 epochs

WORDS = ["river", "python", "music", "bread"]
D = 32


def write_split(path, rows: int, seed: int, offset: float = 0.0):
    """An activation split: each row's vector points in its word's direction, its context and explanation name it.

    `offset` adds one shared direction to every vector, as real residual streams have; it makes the
    mean direction dominate, which is where predict-the-mean scores FVE ~0."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(len(WORDS), D)).astype(np.float32) * 5
    labels = rng.integers(0, len(WORDS), size=rows)
    vectors = centres[labels] + rng.normal(size=(rows, D)).astype(np.float32) * 0.3
    vectors += offset * np.ones(D, dtype=np.float32)
    texts = [f"about {WORDS[i]}" for i in labels]
    columns = {"doc_id": [f"doc-{i // 4}" for i in range(rows)], "position": [16 + 7 * (i % 9) for i in range(rows)],
               "n_raw_tokens": [17 + 7 * (i % 9) for i in range(rows)], "activation_layer": [1] * rows,
               "token_id": [5] * rows, "token": [WORDS[i] for i in labels], "detokenized_text_truncated": texts,
               "source": ["toy"] * rows, "genre": ["prose"] * rows, "topic": [WORDS[i] for i in labels],
               "split": ["validation"] * rows}
    table = rows_to_table(vectors, columns, D).append_column("explanation", pa.array(texts))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_models):
    """A tiny NLA on toy pairs: an AR trained to read the word, an AV trained two steps (it writes no tags yet)."""
    root = tmp_path_factory.mktemp("eval")
    data = root / "data"
    train = write_split(data / "ar_sft.parquet", rows=96, seed=1)
    write_split(data / "validation.parquet", rows=24, seed=2)
    (data / "config.yaml").write_text("model: tiny\n")  # marks the folder as an extraction, as nla extract does
    model = str(tiny_models["llama"])
    train_av(AVTrainConfig(data=train, out=root / "nla", model=model, layer=1, lora_rank=8, batch_size=16,
                           epochs=0.3), progress=False)
    train_ar(ARTrainConfig(data=train, out=root / "nla", model=model, layer=1, lora_rank=8, lr=1e-2, batch_size=16,
                           epochs=12, checkpoint_every=1000, warmup_fraction=0.1), progress=False)
    return root / "nla", data


@pytest.fixture()
def reading_av(monkeypatch):
    """Stand in for a well-trained AV: name the word whose direction the activation points in."""
    centres = torch.from_numpy(np.random.default_rng(0).normal(size=(len(WORDS), D)).astype(np.float32) * 5)

    def explain(self, vectors, **generation):
        nearest = torch.cdist(vectors.float(), centres).argmin(dim=1).tolist()
        return [Explanation(f"about {WORDS[i]}", f"<explanation>about {WORDS[i]}</explanation>", 5) for i in nearest]

    monkeypatch.setattr(evaluate_module.NLA, "explain", explain)


def run(nla, folder, out, **overrides):
    settings = dict(nla=nla, data=folder / "validation.parquet", out=out, batch_size=8, max_new_tokens=26, device="cpu")
    return evaluate(EvalConfig(**{**settings, **overrides}), progress=False)


def test_eval_reports_figures_and_controls_and_writes_its_files(trained, tmp_path, reading_av):
    nla, data = trained
    result = run(nla, data, tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert saved["rows"] == 24 and saved["d_model"] == D
    for key in ("fve", "mse", "cosine", "failure_rate", "mean_explanation_tokens", "baseline_denominator"):
        assert math.isfinite(saved[key]), key
    assert saved["cosine"] == pytest.approx(1 - saved["mse"] / 2)
    controls = saved["controls"]
    assert "skipped" in controls["oracle_ar"]
    assert controls["mean"]["mean_from"].endswith("ar_sft.parquet")  # the split next to the held-out one
    # An AV that reads the vector: its own activation's explanation beats another row's, scored on the true one.
    assert saved["failure_rate"] == 0 and saved["mean_explanation_tokens"] == 5
    assert saved["fve"] > 0.3 and saved["fve"] > controls["shuffled_av"]["fve"] + 0.3

    rows = pq.read_table(tmp_path / "eval" / "rows.parquet")
    assert rows.num_rows == 24
    assert {"doc_id", "position", "token", "norm", "mse_nla", "mse_shuffled_av", "mse_mean",
            "explanation"} <= set(rows.column_names)
    assert np.mean(rows.column("mse_nla").to_numpy()) == pytest.approx(saved["mse"], rel=1e-5)
    for name in ("fve_by_position.png", "fve_by_norm.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sum(b["rows"] for b in saved["by_norm"]["buckets"]) == 24
    [prose] = saved["by_genre"]["genres"]  # the toy split has one genre: its FVE is the whole split's
    assert prose["genre"] == "prose" and prose["rows"] == 24 and prose["nla"] == pytest.approx(saved["fve"])


def test_predict_the_mean_of_the_same_rows_scores_fve_near_zero(trained, tmp_path):
    nla, data = trained
    shifted = write_split(tmp_path / "shifted" / "validation.parquet", rows=24, seed=3, offset=40.0)
    same = run(nla, data, tmp_path / "eval", data=shifted, mean_from=shifted)["controls"]["mean"]
    # The metric's identity: predicting mu (normalised to sqrt(d)) gives FVE = (r - 1) / (r + 1), r = |mu| / sqrt(d).
    golds = torch.from_numpy(pq.read_table(shifted).column("activation_vector").combine_chunks()
                             .flatten().to_numpy().reshape(-1, D).copy())
    r = float(baseline(golds).mean.norm()) / math.sqrt(D)
    assert same["fve"] == pytest.approx((r - 1) / (r + 1), abs=1e-4)
    assert abs(same["fve"]) < 0.05  # the mean direction dominates, as in real residual streams
    other = run(nla, data, tmp_path / "other", data=shifted, mean_from=data / "ar_sft.parquet")["controls"]["mean"]
    assert other["fve"] < same["fve"] - 0.5  # a mean from another distribution is a far worse guess


def test_untagged_explanations_are_failures_scored_as_orthogonal(trained, tmp_path):
    nla, data = trained
    result = run(nla, data, tmp_path / "eval", max_rows=6, max_new_tokens=4)  # too short to close the tag
    assert result["failure_rate"] == 1.0 and result["mse"] == 2.0 and result["cosine"] == 0.0
    assert result["controls"]["shuffled_av"]["mse"] == 2.0 and result["mean_explanation_tokens"] == 4
    assert pq.read_table(tmp_path / "eval" / "rows.parquet").column("explanation").null_count == 6


def test_finished_eval_is_not_overwritten_and_explanations_are_reused(trained, tmp_path, monkeypatch):
    nla, data = trained
    run(nla, data, tmp_path / "eval", max_rows=6)
    with pytest.raises(NLAError, match="already holds an evaluation"):
        run(nla, data, tmp_path / "eval", max_rows=6)
    calls = []
    real_explain = evaluate_module.NLA.explain

    def counted(self, vectors, **kw):
        calls.append(len(vectors))
        return real_explain(self, vectors, **kw)

    monkeypatch.setattr(evaluate_module.NLA, "explain", counted)
    again = run(nla, data, tmp_path / "eval", max_rows=6, overwrite=True)
    assert again["rows"] == 6 and calls == []  # same AV settings: the cached explanations serve the rerun
    run(nla, data, tmp_path / "eval", max_rows=6, overwrite=True, max_new_tokens=5)
    assert calls  # other AV settings: explained afresh
    monkeypatch.setattr(evaluate_module, "write_rows", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # an overwrite killed after its rows, before its report
        run(nla, data, tmp_path / "eval", max_rows=6, overwrite=True)
    assert not (tmp_path / "eval" / "eval.json").exists()  # no old report beside the new rows: unfinished


def test_killed_eval_resumes_from_finished_batches(trained, tmp_path, monkeypatch):
    nla, data = trained
    real_explain = evaluate_module.NLA.explain
    seen = {"batches": 0}

    def die_on_third_batch(self, vectors, **kw):
        seen["batches"] += 1
        if seen["batches"] == 3:
            raise KeyboardInterrupt
        return real_explain(self, vectors, **kw)

    monkeypatch.setattr(evaluate_module.NLA, "explain", die_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run(nla, data, tmp_path / "eval", max_rows=16)
    assert not (tmp_path / "eval" / "eval.json").exists()
    seen["batches"] = -100  # no more kills
    result = run(nla, data, tmp_path / "eval", max_rows=16)
    assert seen["batches"] == -100 + 2  # 4 batches (nla + shuffled, 8 rows each), 2 already done
    fresh = run(nla, data, tmp_path / "fresh", max_rows=16)
    assert result["fve"] == pytest.approx(fresh["fve"]) and result["controls"] == fresh["controls"]


def test_oracle_ar_trained_on_contexts_is_evaluated_and_a_mismatched_one_refused(trained, tmp_path, tiny_models):
    nla, data = trained
    model = str(tiny_models["llama"])
    oracle = tmp_path / "oracle"
    train_ar(ARTrainConfig(data=data / "ar_sft.parquet", out=oracle, model=model, layer=1, lora_rank=8, lr=1e-2,
                           batch_size=16, epochs=6, warmup_fraction=0.1, text_column="detokenized_text_truncated"),
             progress=False)
    result = run(nla, data, tmp_path / "eval", oracle_ar=oracle)
    controls = result["controls"]
    assert controls["oracle_ar"]["fve"] > controls["mean"]["fve"] + 0.3  # the context tells it the word
    assert "mse_oracle_ar" in pq.read_table(tmp_path / "eval" / "rows.parquet").column_names

    other_layer = tmp_path / "other-layer"  # trained at layer 2 on pairs that do not say their layer
    unlabelled = write_toy_pairs(tmp_path / "unlabelled.parquet", ["river", "bread"], rows=8, noise=0.3,
                                 template="about {word}")[0]
    train_ar(ARTrainConfig(data=unlabelled, out=other_layer, model=model, layer=2, epochs=0.2), progress=False)
    with pytest.raises(NLAError, match="extraction_layer_index 2 but the NLA has 1"):
        run(nla, data, tmp_path / "eval2", oracle_ar=other_layer)
    other_model = build_tiny_nla(tmp_path / "other-model", tiny_models["llama"])
    with pytest.raises(NLAError, match="has base_checkpoint tiny but the NLA has"):
        run(nla, data, tmp_path / "eval2", oracle_ar=other_model)


def test_train_ar_reads_the_text_column_it_is_given(tmp_path, tiny_models):
    path = write_split(tmp_path / "split.parquet", rows=16, seed=0)
    with pytest.raises(NLAError, match="has no summary column"):
        train_ar(ARTrainConfig(data=path, out=tmp_path / "a", model=str(tiny_models["llama"]), layer=1,
                               text_column="summary"), progress=False)


def test_default_held_out_split_is_the_validation_split_the_nla_was_trained_beside(trained, tmp_path):
    nla, data = trained
    result = evaluate(EvalConfig(nla=nla, out=tmp_path / "eval", max_rows=4, batch_size=4, max_new_tokens=4,
                                 device="cpu"), progress=False)
    assert result["data"] == str(data / "validation.parquet")
    (data / "config.yaml").rename(data / "config.yaml.away")
    try:
        with pytest.raises(NLAError, match="cannot find the dataset .* pass --data"):
            evaluate(EvalConfig(nla=nla, out=tmp_path / "eval2", device="cpu"), progress=False)
    finally:
        (data / "config.yaml.away").rename(data / "config.yaml")


def test_derangement_moves_every_row():
    order = derangement(50, seed=3)
    assert sorted(order) == list(range(50)) and (order != np.arange(50)).all()
    assert (order == derangement(50, seed=3)).all() and not (order == derangement(50, seed=4)).all()


def test_without_matplotlib_eval_still_writes_json_and_says_how_to_plot(trained, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    nla, data = trained
    result = run(nla, data, tmp_path / "eval", max_rows=4)
    assert "pip install 'nla[plot]'" in result["plots"]["skipped"]
    assert (tmp_path / "eval" / "eval.json").exists() and not (tmp_path / "eval" / "fve_by_norm.png").exists()


def test_cli_eval_prints_the_figures_and_names_bad_input(trained, tmp_path):
    nla, data = trained
    runner = CliRunner()
    args = ["eval", "--nla", str(nla), "--data", str(data / "validation.parquet"), "--out", str(tmp_path / "e"),
            "--max-rows", "4", "--batch-size", "4", "--max-new-tokens", "6", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "shuffled_av: FVE" in result.output and "oracle_ar: skipped" in result.output
    assert json.loads((tmp_path / "e" / "eval.json").read_text())["rows"] == 4
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds an evaluation" in again.output
    missing = runner.invoke(app, args[:3] + ["--data", str(tmp_path / "nope.parquet")] + args[5:] + ["--overwrite"])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_a_split_of_another_layer_is_refused_before_any_work(trained, tmp_path):
    """The issue's case: a layer-1 NLA scored on a layer-2 split would report an FVE; it is one line instead."""
    nla, data = trained
    table = pq.read_table(data / "validation.parquet")
    column = table.column_names.index("activation_layer")
    other = tmp_path / "layer2.parquet"
    pq.write_table(table.set_column(column, "activation_layer", pa.array([2] * table.num_rows, pa.int16())), other)
    with pytest.raises(NLAError, match=r"layer2.parquet has layer 2 but the NLA .* has layer 1"):
        run(nla, data, tmp_path / "eval", data=other)
    assert not (tmp_path / "eval").exists()


def test_robustness_scores_each_rewrite_beside_its_control_and_the_fresh_ar(trained, tmp_path, reading_av):
    nla, data = trained
    result = run(nla, data, tmp_path / "eval", robustness=True, fresh_ar=nla)
    robust = result["robustness"]
    # The reading AV writes "about WORD": one sentence, no quotes, no fixed phrase. What leaves it unchanged keeps
    # all of its FVE; quotes only leaves nothing to read (every row a failure).
    for name in ("shuffled_sentences", "no_quotes", "paraphrase"):
        assert robust[name]["changed"] == 0 and robust[name]["kept"] == pytest.approx(1.0), name
        assert robust[name]["shuffled_av"] < robust[name]["nla"] - 0.3, name
    assert robust["quotes_only"]["changed"] == 1 and robust["quotes_only"]["kept"] < 0.2
    assert "API backend" in robust["translation"]["skipped"]
    assert robust["fresh_ar"]["kept"] == pytest.approx(1.0)  # the NLA's own AR, read as if fresh
    assert all(math.isfinite(r["nla"]) for r in robust.values() if "nla" in r)


def test_an_api_backend_adds_a_model_paraphrase_and_a_translation(trained, tmp_path, reading_av, monkeypatch):
    pytest.importorskip("openai")
    from fake_api_server import FakeAPI

    nla, data = trained
    # The fake model answers with the text it was given (the part after the instruction), in upper case.
    with FakeAPI(answer=lambda prompt: prompt.split("\n\n", 1)[1].upper()) as api:
        result = run(nla, data, tmp_path / "eval", robustness=True, rewrite_backend="openai",
                     base_url=api.url + "/v1", api_key_env="none")
        asked = len(api.requests)
    robust = result["robustness"]
    assert {"api_paraphrase", "translation"} <= set(robust) and "skipped" not in robust["translation"]
    assert robust["translation"]["changed"] == 1 and math.isfinite(robust["translation"]["nla"])
    assert 0 < asked <= 2 * len(WORDS)  # the distinct explanations of each arm, once per instruction
    assert "Translate this description" in api.requests[-1].prompt or "Paraphrase" in api.requests[-1].prompt


def test_a_rewrite_backend_without_its_key_is_refused_before_any_model_work(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(NLAError, match=r"needs an API key in \$OPENAI_API_KEY"):
        evaluate(EvalConfig(out=tmp_path / "eval", nla=str(tmp_path / "nowhere"), robustness=True,
                            rewrite_backend="openai"), progress=False)
    assert not (tmp_path / "eval").exists()
