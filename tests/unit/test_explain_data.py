import json

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from nla.cli import app
from nla.errors import NLAError
from nla.explainers.stage import ExplainDataConfig, explain_data
from nla.layout import sidecar_path


@pytest.fixture()
def dataset(extracted_dataset):
    return extracted_dataset


def test_every_row_gets_a_factual_explanation(dataset):
    summary = explain_data(ExplainDataConfig(dataset=dataset), progress=False)
    out = dataset / "explanations-offline"
    for split in ("ar_sft", "av_sft"):
        table = pq.read_table(out / f"{split}.parquet")
        source = pq.read_table(dataset / f"{split}.parquet")
        assert table.num_rows == source.num_rows == summary["splits"][split]["explained"]
        assert table.column("doc_id").to_pylist() == source.column("doc_id").to_pylist()
        for row in table.select(["explanation", "genre", "detokenized_text_truncated"]).to_pylist():
            assert row["genre"] in row["explanation"]
            last_word = row["detokenized_text_truncated"].split()[-1]
            assert last_word in row["explanation"]
        meta = yaml.safe_load(sidecar_path(out / f"{split}.parquet").read_text())
        assert meta["row_count"] == table.num_rows and meta["explanations"]["explainer"] == "offline"
    assert json.loads((out / "summary.json").read_text())["explainer"] == "offline"


def test_existing_explanations_are_refused(dataset):
    explain_data(ExplainDataConfig(dataset=dataset), progress=False)
    with pytest.raises(NLAError, match="already holds explanations of ar_sft, av_sft; pass --overwrite"):
        explain_data(ExplainDataConfig(dataset=dataset), progress=False)


def test_a_split_is_added_to_a_finished_folder_with_its_settings(dataset):
    out = dataset / "explanations-offline"
    explain_data(ExplainDataConfig(dataset=dataset, quote_tokens=4), progress=False)
    before = (out / "av_sft.parquet").stat().st_mtime_ns
    with pytest.raises(NLAError, match=r"other settings \(quote_tokens 4 -> 6\)"):
        explain_data(ExplainDataConfig(dataset=dataset, splits=("validation",), quote_tokens=6), progress=False)
    assert not (out / "validation.parquet").exists()
    summary = explain_data(ExplainDataConfig(dataset=dataset, splits=("av_sft", "validation"), quote_tokens=4),
                           progress=False)
    assert (out / "av_sft.parquet").stat().st_mtime_ns == before  # kept, not explained again
    assert sorted(summary["splits"]) == ["ar_sft", "av_sft", "validation"] == sorted(summary["config"]["splits"])
    table = pq.read_table(out / "validation.parquet")
    assert table.num_rows == pq.read_metadata(dataset / "validation.parquet").num_rows
    assert json.loads((out / "summary.json").read_text())["splits"]["validation"]["explained"] == table.num_rows
    with pytest.raises(NLAError, match="already holds explanations of validation"):
        explain_data(ExplainDataConfig(dataset=dataset, splits=("validation",), quote_tokens=4), progress=False)


def test_a_damaged_summary_is_named(dataset):
    out = dataset / "explanations-offline"
    out.mkdir()
    (out / "summary.json").write_text("[]")
    with pytest.raises(NLAError, match="summary.json cannot be read as a JSON summary.*pass --overwrite"):
        explain_data(ExplainDataConfig(dataset=dataset, splits=("validation",)), progress=False)
    summary = explain_data(ExplainDataConfig(dataset=dataset, splits=("validation",), overwrite=True), progress=False)
    assert list(summary["splits"]) == ["validation"]  # the fix the refusal names works


def test_an_overwrite_killed_mid_way_leaves_no_old_split_beside_new_ones(dataset, monkeypatch):
    import nla.explainers.stage as stage

    explain_data(ExplainDataConfig(dataset=dataset, quote_tokens=4), progress=False)
    out = dataset / "explanations-offline"
    real_split, done = stage._explain_split, []

    def dying_split(cfg, split, *args):
        if done:
            raise KeyboardInterrupt  # killed while explaining the second split
        done.append(split)
        return real_split(cfg, split, *args)

    monkeypatch.setattr(stage, "_explain_split", dying_split)
    with pytest.raises(KeyboardInterrupt):
        explain_data(ExplainDataConfig(dataset=dataset, quote_tokens=6, overwrite=True), progress=False)
    monkeypatch.undo()
    assert not (out / "summary.json").exists()  # unfinished, and it looks it
    assert sorted(p.name for p in out.glob("*.parquet")) == [f"{done[0]}.parquet"]  # the new split only
    summary = explain_data(ExplainDataConfig(dataset=dataset, quote_tokens=6), progress=False)  # resumes
    assert summary["splits"][done[0]]["resumed"] and summary["config"]["quote_tokens"] == 6


def test_a_changed_corpus_is_detected(dataset, small_corpus):
    lines = small_corpus.read_text().splitlines()
    record = json.loads(lines[1])
    record["text"] = "Completely different words now stand in this document, so its tokens moved."
    lines[1] = json.dumps(record)
    small_corpus.write_text("\n".join(lines) + "\n")
    with pytest.raises(NLAError, match="no longer tokenises as it did at extraction"):
        explain_data(ExplainDataConfig(dataset=dataset, splits=("ar_sft", "av_sft", "rl", "validation", "test")),
                     progress=False)


def test_not_an_extraction_and_unknown_explainer(tmp_path):
    with pytest.raises(NLAError, match="is not a finished extraction"):
        explain_data(ExplainDataConfig(dataset=tmp_path), progress=False)
    with pytest.raises(NLAError, match="unknown explainer 'gpt'"):
        ExplainDataConfig(dataset=tmp_path, explainer="gpt")


def test_command_line(dataset):
    result = CliRunner().invoke(app, ["explain-data", "--dataset", str(dataset), "--splits", "av_sft"])
    assert result.exit_code == 0, result.output
    assert "av_sft: rows" in result.stdout and (dataset / "explanations-offline" / "av_sft.parquet").exists()


def test_quotes_stop_at_special_tokens_and_occur_in_the_context(dataset, tiny_llama):
    from nla.explainers.stage import quote_window
    from nla.models import load_target

    assert quote_window([5, 6, 2, 7, 8], 4, frozenset({2})) == [7, 8]
    assert quote_window([5, 6, 7, 8], 3, frozenset({2})) == [6, 7, 8]
    explain_data(ExplainDataConfig(dataset=dataset, quote_tokens=12), progress=False)
    special = load_target(str(tiny_llama)).tokenizer.all_special_tokens
    table = pq.read_table(dataset / "explanations-offline" / "ar_sft.parquet")
    for row in table.select(["quote", "detokenized_text_truncated"]).to_pylist():
        assert row["quote"] and row["detokenized_text_truncated"].endswith(row["quote"])
        assert not any(token in row["quote"] for token in special)
