"""Add a vector to the target's residual stream at one layer while it runs (steering).

`residual_added` arms a forward hook on block K that adds the vector to the block's output at one
token position, or at that position and every later one. The hook counts the tokens each forward
carries, so it finds the position in a plain forward over the whole sequence and across the
decoding steps of `generate` with a KV cache alike: one sequence (batch 1), one forward or one
`generate` per `with` block, since a second would start counting where the first stopped.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from nla.errors import NLAError


@contextmanager
def residual_added(layers: torch.nn.ModuleList, layer: int, vector: torch.Tensor | None, position: int, *,
                   later: bool = False):
    """Inside the block, block `layer`'s output gets `vector` added at token `position` (with `later`: at every
    position from it on, generated tokens included). `vector` None: nothing is added (the unsteered run)."""
    if vector is None:
        yield
        return
    seen = [0]  # tokens the forwards so far carried: the absolute position of this forward's first token

    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[0] != 1:
            raise NLAError("steering reads one sequence at a time (batch 1)")
        start, width = seen[0], hidden.shape[1]
        seen[0] += width
        first, last = position - start, width if later else position - start + 1
        first = max(first, 0)
        if first < min(last, width):
            hidden = hidden.clone()
            hidden[0, first : min(last, width)] += vector.to(device=hidden.device, dtype=hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return output

    handle = layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
