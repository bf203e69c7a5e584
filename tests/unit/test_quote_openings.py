"""benchmarks/quote_openings.py: the context quotes' openings, counted from an eval folder."""

import json

from conftest import load_benchmark


def test_context_quotes_are_counted_by_opening_and_predictions_are_left_out(tmp_path):
    rows = [{"control": "nla", "text": 'It reads "…, but also have some" here.'},
            {"control": "nla", "text": 'It reads "but also the cat". Next it expects "but also".'},
            {"control": "nla", "text": None},
            {"control": "shuffled", "text": 'It reads "other words entirely".'}]
    (tmp_path / "explanations.jsonl").write_text("\n".join(json.dumps(r) for r in [{"settings": {}}] + rows))
    result = load_benchmark("quote_openings").report(tmp_path)
    assert result["quotes"] == 2 and result["distinct_openings"] == 2 and result["but_also"] == 1.0
