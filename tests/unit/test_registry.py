"""The registry of known NLAs: what NLA.load, --nla and nla info read."""

import json
import re
from pathlib import Path

import huggingface_hub
import pytest
from typer.testing import CliRunner

from nla.autoencoder.hub import nla_facts, resolve_nla
from nla.autoencoder.shipped import default_dir
from nla.cli import app
from nla.errors import NLAError
from nla.registry import known, registry, source_of

README = Path(__file__).parents[2] / "README.md"


def test_the_registry_holds_the_shipped_nla_and_the_four_released_ones():
    sources = {entry["source"] for entry in registry().values()}
    assert {"kitft/nla-qwen2.5-7b-L20", "kitft/nla-gemma3-12b-L32", "kitft/nla-gemma3-27b-L41",
            "kitft/Llama-3.3-70B-NLA-L53"} <= sources and "default" in registry()
    assert known("kitft/nla-gemma3-12b-L32")["name"] == "gemma3-12b-L32" and known("nope") is None


def test_its_memory_matches_the_readmes_table_and_its_default_fve_the_shipped_report():
    table = {m.group(1): float(m.group(2)) for m in
             re.finditer(r"^\| `([\w./-]+)` \|.*\*\*([\d.]+) GB\*\*", README.read_text(), re.MULTILINE)}
    for entry in registry().values():
        if entry["source"] in table:
            assert entry["memory_gb"] == table[entry["source"]], entry["source"]
    assert len(table) == 4
    shipped = json.loads((default_dir() / "eval" / "eval.json").read_text())["fve"]
    assert registry()["default"]["fve"] == pytest.approx(shipped, abs=5e-4)


def test_a_registry_name_loads_its_hub_prefix(monkeypatch, tmp_path):
    asked = []

    def snapshot(repo_id, **kwargs):
        asked.append(repo_id)
        raise huggingface_hub.errors.LocalEntryNotFoundError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.chdir(tmp_path)
    assert source_of("qwen2.5-7b-L20") == "kitft/nla-qwen2.5-7b-L20" and source_of("runs/x") == "runs/x"
    with pytest.raises(NLAError):
        resolve_nla("qwen2.5-7b-L20")
    assert asked == ["kitft/nla-qwen2.5-7b-L20-av"]


def test_nla_info_lists_and_describes_without_loading_anything():
    listed = CliRunner().invoke(app, ["info", "--nlas"])
    assert listed.exit_code == 0 and "llama3.3-70b-L53" in listed.output and "377.0" in listed.output
    shipped = CliRunner().invoke(app, ["info", "--nla", "default", "--json"])
    facts = json.loads(shipped.output)
    assert facts["layer"] == 20 and facts["injection"]["site"] == "residual" and facts["calibrated"]
    assert nla_facts("qwen2.5-7b-L20")["fve"] == 0.752
    unknown = CliRunner().invoke(app, ["info", "--nla", "nope"])
    assert unknown.exit_code == 2 and "neither a known NLA" in unknown.output
