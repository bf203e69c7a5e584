"""Memory that reading with each released NLA needs, computed from parameter counts (no weights downloaded).

    python benchmarks/released_memory.py            # bf16, the default on CUDA
    python benchmarks/released_memory.py --fp32     # what an fp32 load would need

Each model is built on the meta device from its target's public decoder shape (nla.models.memory.RELEASED)
and its parameters counted: the AV is the full causal LM, the AR its embeddings + blocks 0..K plus the
d x d head (fp32 in nla), and the target the full causal LM again. Gemma 3 counts the text decoder only
(nla never loads the vision tower). Add a few GB for activations, the KV cache and the CUDA context.
"""

from __future__ import annotations

import argparse

from nla.models.memory import RELEASED, config_of, nla_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", action="store_true", help="4 bytes per parameter instead of bf16's 2")
    args = parser.parse_args()
    width = 4 if args.fp32 else 2
    print(f"| NLA (hub prefix) | target | K | params | AV GB | AR GB | target GB | total GB ({'fp32' if args.fp32 else 'bf16'}) |")
    print("|---|---|---|---|---|---|---|---|")
    for released in RELEASED:
        m = nla_memory(config_of(released), released.layer, width)
        print(f"| `{released.prefix}` | {released.target} | {released.layer} | {m['parameters'] / 1e9:.2f}B | "
              f"{m['av_gb']:.1f} | {m['ar_gb']:.1f} | {m['target_gb']:.1f} | **{m['total_gb']:.1f}** |")


if __name__ == "__main__":
    main()
