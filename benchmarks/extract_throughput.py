"""Extraction throughput: `nla extract`'s forward path against a naive full forward.

    python benchmarks/extract_throughput.py [--model smollm2-135m] [--docs 96] [--repeats 2]

Both sides process the same documents of the default corpus with the same length
batching and read the same sampled positions, in this process:
  naive  full documents, every block + final norm + lm_head, output_hidden_states=True,
         then hidden_states[K+1] at the positions;
  nla    documents cut after their last sampled position, blocks 0..K only (forward hook);
  nla (uncut)  blocks 0..K only on the full documents: shows how much each of the two savings gives.
The ratio of wall times is the speed-up. Tokens/s counts the documents' tokens for both,
so the two figures are comparable. The script also checks that both give the same vectors.
"""

from __future__ import annotations

import argparse
import time

import torch

from nla.data.corpus import load_corpus
from nla.data.extract import ExtractConfig, encode_document, extract_chunk, plan_documents
from nla.inputs import vectors_of
from nla.models import load_target
from nla.models.activations import batched_residual_stream, length_batches, pad_right


@torch.no_grad()
def naive_extract(target, full_ids, positions, layer, batch_tokens):
    vectors = {}
    for batch in length_batches([len(s) for s in full_ids], batch_tokens):
        ids, mask = pad_right([full_ids[i] for i in batch], target.tokenizer.pad_token_id, target.device)
        hidden = target.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer + 1]
        for row, i in enumerate(batch):
            vectors[i] = hidden[row, positions[i]].float().cpu()
    return torch.cat([vectors[i] for i in range(len(full_ids))])


@torch.no_grad()
def uncut_extract(target, full_ids, positions, layer, batch_tokens):
    vectors = {}
    for batch, hidden in batched_residual_stream(target, full_ids, layer, batch_tokens):
        for row, i in enumerate(batch):
            vectors[i] = hidden[row, positions[i]]
    return torch.cat([vectors[i] for i in range(len(full_ids))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=None)
    parser.add_argument("--docs", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    target = load_target(args.model)
    cfg = ExtractConfig(out="unused", model=args.model, layer=args.layer, max_docs=args.docs)
    layer = target.resolve_layer(cfg.layer)
    docs = load_corpus(cfg.corpus, limit=cfg.max_docs)
    planned, _ = plan_documents(target, docs, cfg)
    by_id = {d.doc_id: d for d in docs}
    full_ids = [encode_document(target, by_id[p.doc.doc_id], cfg.max_doc_tokens) for p in planned]
    positions = [p.positions for p in planned]
    doc_tokens = sum(len(x) for x in full_ids)
    print(f"{args.model}, layer {layer} of {target.num_layers}, {len(planned)} documents, {doc_tokens} tokens, "
          f"{sum(map(len, positions))} positions, torch threads {torch.get_num_threads()}")

    # Warm up both paths once (allocator, kernels), then time them interleaved.
    naive_extract(target, full_ids[:4], positions[:4], layer, cfg.batch_tokens)
    extract_chunk(target, planned[:4], layer, cfg.batch_tokens)
    times = {"naive": [], "nla (uncut)": [], "nla": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        naive = naive_extract(target, full_ids, positions, layer, cfg.batch_tokens)
        times["naive"].append(time.perf_counter() - start)
        start = time.perf_counter()
        uncut = uncut_extract(target, full_ids, positions, layer, cfg.batch_tokens)
        times["nla (uncut)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ours = torch.from_numpy(vectors_of(extract_chunk(target, planned, layer, cfg.batch_tokens)).copy())
        times["nla"].append(time.perf_counter() - start)
    diff = max((naive - ours).abs().max().item(), (naive - uncut).abs().max().item())
    best = {k: min(v) for k, v in times.items()}
    for name, seconds in best.items():
        print(f"  {name:>11}: {seconds:7.2f} s  {doc_tokens / seconds:8.0f} tokens/s  "
              f"speed-up {best['naive'] / seconds:.2f}x")
    print(f"  speed-up nla / naive: {best['naive'] / best['nla']:.2f}x   (max |difference| {diff:.2e})")


if __name__ == "__main__":
    main()
