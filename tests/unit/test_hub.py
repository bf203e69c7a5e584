"""NLAs by hub id: a prefix expands to its -av and -ar repositories, fetched once through huggingface_hub's
cache; a cached copy loads offline; every bad form of --nla / --nla-av / --nla-ar is one line. No network:
the one download call is replaced, or the cache is filled by hand in huggingface_hub's layout."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub
import pytest
from typer.testing import CliRunner

from nla import NLA
from nla.autoencoder.hub import resolve_nla
from nla.cli import app
from nla.errors import NLAError
from released_layout import build_released_pair

PREFIX = "kitft/nla-tiny-L1"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    av, ar, _ = build_released_pair(tmp_path_factory.mktemp("released"), "llama-v2", layer=1)
    return av, ar


def errors_of(result) -> list[str]:
    return [line for line in result.output.splitlines() if line.startswith("error:")]


def test_a_prefix_loads_both_repositories_through_snapshot_download(pair, monkeypatch):
    calls = []

    def snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str({f"{PREFIX}-av": pair[0], f"{PREFIX}-ar": pair[1]}[repo_id])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    nla = NLA.load(PREFIX, device="cpu")
    assert [repo for repo, _ in calls] == [f"{PREFIX}-av", f"{PREFIX}-ar"] and nla.layer == 1
    assert "*.safetensors" in calls[0][1]["allow_patterns"] and "original/*" in calls[0][1]["ignore_patterns"]
    calls.clear()
    NLA.load(f"{PREFIX}-av", device="cpu")  # one half named: both meant
    NLA.load(av=f"{PREFIX}-av", ar=str(pair[1]), device="cpu")  # a hub id and a local folder
    assert [repo for repo, _ in calls] == [f"{PREFIX}-av", f"{PREFIX}-ar", f"{PREFIX}-av"]


def fill_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """huggingface_hub's cache layout: models--org--name/refs/main -> commit, snapshots/<commit>/<files>."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(COMMIT)
    shutil.copytree(folder, storage / "snapshots" / COMMIT)


@pytest.fixture()
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_a_cached_copy_loads_offline(pair, offline_cache):
    fill_cache(offline_cache, f"{PREFIX}-av", pair[0])
    fill_cache(offline_cache, f"{PREFIX}-ar", pair[1])
    nla = NLA.load(PREFIX, device="cpu")
    assert nla.source.av == offline_cache / "models--kitft--nla-tiny-L1-av" / "snapshots" / COMMIT
    result = CliRunner().invoke(app, ["explain", "Rivers.", "--nla", PREFIX, "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output


def test_a_missing_repository_offline_is_one_line(pair, offline_cache):
    fill_cache(offline_cache, f"{PREFIX}-av", pair[0])  # the AR was never downloaded
    result = CliRunner().invoke(app, ["explain", "Rivers.", "--nla", PREFIX])
    assert result.exit_code == 2 and len(errors_of(result)) == 1
    assert f"{PREFIX}-ar is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in errors_of(result)[0]


@pytest.mark.slow  # a fresh process
def test_a_missing_hub_id_offline_fails_fast_in_a_fresh_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(SRC)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "nla.cli", "explain", "Hi.", "--nla", "kitft/no-such-nla"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: kitft/no-such-nla not found: no such folder here, and as a hub prefix: kitft/no-such-nla-av is not "
        "in the Hugging Face cache and HF_HUB_OFFLINE is set; download it once online (unset HF_HUB_OFFLINE), or "
        "pass a local folder"]
    assert time.monotonic() - started < 60  # the import of torch and transformers; no retries


def test_hub_errors_are_named(monkeypatch, tmp_path):
    import httpx2
    from huggingface_hub import errors

    response = httpx2.Response(404, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))

    def missing(repo_id, **kwargs):
        raise errors.RepositoryNotFoundError("404 Client Error", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", missing)
    with pytest.raises(NLAError, match=f"hub repository {PREFIX}-av not found"):
        NLA.load(PREFIX)
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(tmp_path / "empty"))
    with pytest.raises(NLAError, match=f"hub repository {PREFIX}-av has no nla_meta.yaml"):
        NLA.load(PREFIX)


def test_bad_nla_options_are_one_line(pair, tmp_path, monkeypatch):
    av, ar = map(str, pair)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    cases = [
        (["--nla-av", av], "--nla-av and --nla-ar go together"),
        (["--nla", av, "--nla-av", av, "--nla-ar", ar], "either --nla or --nla-av with --nla-ar"),
        (["--nla", av], "is one checkpoint, not an NLA"),
        (["--nla", str(tmp_path)], "is not an NLA folder"),
        (["--nla", "./nowhere/x"], "neither an NLA folder nor a hub prefix"),
        (["--nla", "runs/typo"], "runs/typo not found (and runs/ is a local folder"),
        (["--nla-av", ar, "--nla-ar", ar], "holds an AR, not an AV"),
        (["--nla-av", av, "--nla-ar", ar, "--dtype", "fp8"], "unknown dtype 'fp8'"),
        (["--nla-av", av, "--nla-ar", ar, "--device", "cuda:7"], "device 'cuda:7' is not available"),
        (["--nla-av", av, "--nla-ar", ar, "--temperature", "-1"], "temperature must be at least 0"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, ["explain", "Rivers carry water.", *args])
        assert result.exit_code == 2 and len(errors_of(result)) == 1, (args, result.output)
        assert message in errors_of(result)[0], (args, result.output)


def test_a_local_looking_path_that_does_not_exist_is_not_found_first(tmp_path, monkeypatch):
    """`--nla runs/nla` in a fresh clone: the first words say no such folder, before any hub detail."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(NLAError, match=r"^runs/nla not found: no such folder here, and as a hub prefix: "):
        resolve_nla("runs/nla")
