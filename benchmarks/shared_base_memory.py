"""Peak memory of reading a text with an NLA: one shared base (LoRA adapters) versus three model copies.

    python benchmarks/shared_base_memory.py                 # smollm2-135m
    python benchmarks/shared_base_memory.py --run RUN       # an existing run with av_adapter/ and ar_adapter/

Reading a text needs three models: the target (activations), the AV (explanations) and
the AR (scores). Merged folders hold three copies of the weights (the AR's truncated
to blocks 0..K); a LoRA run holds one base with two named adapters. Each setup runs
`explain_text` on the same sentence in its own fresh process, which reports its peak
resident memory (VmHWM) and its memory before any model was loaded.
Without --run, a LoRA run is made first (two training steps per stage on random
pairs: the weights' quality does not matter for memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

TEXT = "The capital of France is Paris, and the capital of Italy is Rome."


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec
    from the parent, which here has just trained models."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux: KiB on most systems


def child(setup: str, run: Path) -> None:
    import torch  # noqa: F401  (imported before the baseline: both setups pay for it)

    from nla.autoencoder.nla import NLA
    from nla.reading.transcript import explain_text

    baseline = peak_rss_mb()
    nla = NLA.load(run, device="cpu", shared_base=setup == "shared")
    readings = explain_text(nla, TEXT, min_position=8, max_new_tokens=16)
    print(json.dumps({"setup": setup, "baseline_mb": baseline, "peak_mb": peak_rss_mb(),
                      "readings": len(readings), "shared_base": nla.shared_base}))


def make_lora_run(model: str, folder: Path) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nla.data.dataset import rows_to_table
    from nla.models import load_target
    from nla.train.ar import train_ar
    from nla.train.av import train_av
    from nla.train.config import ARTrainConfig, AVTrainConfig

    target = load_target(model, device="cpu")
    columns = ("doc_id", "position", "n_raw_tokens", "activation_layer", "token_id", "token",
               "detokenized_text_truncated", "source", "genre", "topic", "split")
    rows = 16
    vectors = np.random.default_rng(0).normal(size=(rows, target.d_model)).astype(np.float32)
    table = rows_to_table(vectors, {c: [None] * rows for c in columns}, target.d_model)
    data = folder / "pairs.parquet"
    pq.write_table(table.append_column("explanation", pa.array(["a short explanation of a thought"] * rows)), data)
    common = dict(data=data, out=folder / "run", model=model, layer=target.default_layer, device="cpu",
                  batch_size=8, epochs=1.0)
    train_ar(ARTrainConfig(**common), progress=False)
    train_av(AVTrainConfig(**common), progress=False)
    return folder / "run"


def measure(setup: str, run: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", setup, "--run", str(run)], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--run", type=Path, help="A run with av_adapter/, ar_adapter/, av/ and ar/.")
    parser.add_argument("--child", choices=["shared", "copies"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.run)
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or make_lora_run(args.model, Path(tmp))
        copies, shared = measure("copies", run), measure("shared", run)
    assert shared["shared_base"] and not copies["shared_base"]
    for r in (copies, shared):
        r["models_mb"] = r["peak_mb"] - r["baseline_mb"]
        print(f"{r['setup']:>7}: peak {r['peak_mb']:7.0f} MB, of which models and work {r['models_mb']:6.0f} MB "
              f"({r['readings']} tokens read)")
    models = f"{shared['models_mb'] / copies['models_mb']:.2f}x" if copies["models_mb"] > 0 else "n/a (too small)"
    print(f"shared base / three copies: peak {shared['peak_mb'] / copies['peak_mb']:.2f}x, models and work {models}")


if __name__ == "__main__":
    main()
