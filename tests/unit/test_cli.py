import json

from typer.testing import CliRunner

from nla.cli import app

runner = CliRunner()


def test_extract_command_prints_a_summary(tmp_path, tiny_llama, small_corpus):
    out = tmp_path / "acts"
    args = ["extract", "--out", str(out), "--model", str(tiny_llama), "--corpus", str(small_corpus),
            "--layer", "1", "--min-position", "4", "--positions-per-doc", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "extracted 80 activations from 40 documents (1 skipped as too short)" in result.output
    assert (out / "summary.json").exists()
    again = runner.invoke(app, args)
    assert again.exit_code == 2
    assert again.output.strip().splitlines()[-1].startswith("error: ") and "--overwrite" in again.output


def test_info_reports_shape_and_norms(tiny_models, small_corpus):
    result = runner.invoke(app, ["info", "--model", str(tiny_models["gemma3"]), "--corpus", str(small_corpus),
                                 "--min-position", "4", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert (info["layers"], info["d_model"], info["default_layer"], info["family"]) == (4, 32, 2, "gemma")
    assert info["embed_scale"] == 32 ** 0.5 and info["chat_template"] is False
    assert info["activation_norm"]["count"] > 100 and info["activation_norm"]["p99"] >= info["activation_norm"]["p50"]
    assert info["suggested_injection_scale"] >= info["activation_norm"]["mean"]


def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, tiny_llama):
    cases = [
        (["info", "--model", "gpt-17"], "unknown model 'gpt-17'"),
        (["info", "--model", str(tiny_llama), "--layer", "12"], "layer 12 is out of range"),
        (["extract", "--out", str(tmp_path / "x"), "--model", str(tiny_llama), "--corpus", str(tmp_path / "none.txt")],
         "corpus"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and message in lines[0], result.output
