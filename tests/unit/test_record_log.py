"""Append-only JSONL files after a kill -9 in the middle of an append: the cut-short last line is dropped
and the file rewritten whole, so resuming neither crashes nor glues the next record onto the fragment."""

import json

from nla.data.build_corpus import BuildConfig, generate_documents, generation_jobs
from nla.record_log import RecordLog, append_records, complete_records
from nla.train.checkpoint import truncate_log


def _cut_after(path, records):
    """The file a kill leaves: whole records, then half of the next one, no newline."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + json.dumps({"step": 99, "loss": 0.5})[:9])


def test_a_line_cut_short_is_dropped_and_the_next_append_starts_a_line(tmp_path):
    path = tmp_path / "log.jsonl"
    _cut_after(path, [{"step": 1}, {"step": 2}])
    assert complete_records(path) == [{"step": 1}, {"step": 2}]
    append_records(path, [{"step": 3}])
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert complete_records(tmp_path / "missing.jsonl") == []


def test_rl_resume_after_a_kill_mid_append_keeps_the_logged_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _cut_after(path, [{"step": 1, "reward": 0.1}, {"step": 2, "reward": 0.2}, {"step": 3, "reward": 0.3}])
    truncate_log(path, 2)  # resuming from the state saved at step 2
    assert [r["step"] for r in complete_records(path)] == [1, 2]
    assert not list(tmp_path.glob(".*tmp*"))  # rewritten atomically, no temporary left


def test_corpus_build_resumes_after_a_kill_mid_append(tmp_path, monkeypatch):
    partial = tmp_path / "corpus.jsonl.gz.partial.jsonl"
    jobs = generation_jobs()[:2]
    _cut_after(partial, [{**job, "answer": "An answer."} for job in jobs])
    monkeypatch.setattr("nla.data.build_corpus.load_target", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    generate_documents(BuildConfig(out=tmp_path / "corpus.jsonl.gz", limit=2), partial)  # both done: no model
    assert [r["id"] for r in complete_records(partial)] == [j["id"] for j in jobs]


def test_a_record_log_cut_mid_append_reads_its_whole_records_and_appends_on_a_new_line(tmp_path):
    path = tmp_path / "tokens.jsonl"
    _cut_after(path, [{"settings": {"k": 1}}, {"position": 0}, {"position": 1}])
    log = RecordLog(path, {"k": 1})
    assert log.read() == [{"position": 0}, {"position": 1}]
    log.append([{"position": 2}])
    assert log.read() == [{"position": 0}, {"position": 1}, {"position": 2}]
    assert RecordLog(path, {"k": 2}).read() == [] and not path.exists()  # other settings: the log goes
    RecordLog(path, {"k": 2}).append([{"position": 5}])
    assert complete_records(path) == [{"settings": {"k": 2}}, {"position": 5}]
