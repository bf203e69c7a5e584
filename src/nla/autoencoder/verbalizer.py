"""The activation verbalizer (AV): activation -> explanation text.

Every row of a batch uses the same canonical prompt, so a batch needs no padding:
the prompt's embeddings are repeated, each row gets its own vector at the marker
(see verbalizer_prompt), and HF `generate` decodes from `inputs_embeds` with a KV
cache. The answer is parsed from `<explanation>...</explanation>`; a missing tag is
a failed sample (text None), never a crash.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch

from nla.autoencoder.decoding import MAX_NEW_TOKENS
from nla.autoencoder.injection import RESIDUAL, Injection, ResidualInjection
from nla.autoencoder.soft_tokens import attach, projector_of
from nla.autoencoder.verbalizer_prompt import InjectionSite, inject
from nla.errors import NLAError
from nla.models.loading import pad_id_of

_EXPLANATION = re.compile(r"<explanation>(.*?)</explanation>", re.DOTALL)


def parse_explanation(answer: str) -> str | None:
    """The text inside the first <explanation>...</explanation>, or None when the tags are missing."""
    match = _EXPLANATION.search(answer)
    return match.group(1).strip() if match else None


# One convention for a failed explanation, everywhere: its text is None. A reader labels it "failed" and gives
# it no score; an average over rows (nla eval, RL's logged FVE) counts it at FAILED_MSE, the error of a guess
# orthogonal to the activation, so that failing never scores better than guessing wrong.
FAILED_MSE = 2.0


@dataclass
class Explanation:
    text: str | None  # None: the answer had no complete <explanation> tags (FAILED_MSE below)
    answer: str  # everything the AV wrote
    num_tokens: int
    truncated: bool = False  # the answer reached the token cap before its closing tag: raise max_new_tokens

    @property
    def failed(self) -> bool:
        return self.text is None


def stop_ids(model, tokenizer) -> set[int]:
    """Every id that ends an answer: the tokenizer's EOS and the model's generation EOS ids (an instruct
    model may stop on its end-of-turn token, e.g. Gemma's <end_of_turn>)."""
    ids = {tokenizer.eos_token_id}
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return {i for i in ids if i is not None}


def check_vectors(vectors: torch.Tensor, d_model: int) -> torch.Tensor:
    """(N, d) finite, non-zero activations, or a one-line error naming what is wrong."""
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[1] != d_model:
        raise NLAError(f"activations have shape {tuple(vectors.shape)}, but this NLA reads d_model {d_model}; "
                       "extract them from the NLA's target at its layer")
    bad = ~torch.isfinite(vectors).all(dim=1)
    if bad.any():
        raise NLAError(f"{int(bad.sum())} activation(s) hold NaN or inf (first at row {int(bad.nonzero()[0])}); "
                       "drop or recompute them")
    zero = vectors.abs().sum(dim=1) == 0
    if zero.any():
        raise NLAError(f"{int(zero.sum())} activation(s) are all zeros (first at row {int(zero.nonzero()[0])}); "
                       "a zero vector has no direction to explain")
    return vectors


class Verbalizer:
    def __init__(self, model, tokenizer, prompt: list[int], site: InjectionSite, injection_scale: float,
                 injection: Injection = Injection()):
        self.model = model
        self.tokenizer = tokenizer
        self.prompt = prompt
        self.site = site
        self.injection_scale = injection_scale
        self.injection = injection
        self._residual = None
        if injection.soft_tokens and projector_of(model) is None:  # fresh: a loader fills it from its file
            attach(model, injection.soft_tokens)
        if injection.site == RESIDUAL:
            self._residual = ResidualInjection(model, injection.layers, prompt.index(site.marker.token_id),
                                               len(prompt), site.marker.token_id,
                                               projector_of(model) if injection.soft_tokens else None)

    def reading(self):
        """Wrap every AV forward (training, generate, RL log-probs) in this: it arms a residual injection."""
        return self._residual.active() if self._residual else contextlib.nullcontext()

    @property
    def shared_prefix(self) -> int:
        """How many leading prompt tokens every row has in common: those before the marker."""
        return self.prompt.index(self.site.marker.token_id)

    @property
    def d_model(self) -> int:
        return self.model.get_input_embeddings().weight.shape[1]

    def prompt_embeddings(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, inputs_embeds, attention_mask) for one prompt per vector: (B, T), (B, T, d), (B, T)."""
        device = self.model.get_input_embeddings().weight.device
        ids = torch.tensor([self.prompt], device=device).expand(len(vectors), -1)
        embeds = self.model.get_input_embeddings()(ids)
        embeds = inject(embeds, ids, vectors.to(device), self.site, self.injection_scale)
        return ids, embeds, torch.ones_like(ids)

    @torch.no_grad()
    def explain(self, vectors: torch.Tensor, *, max_new_tokens: int = MAX_NEW_TOKENS, temperature: float = 0.0,
                batch_size: int = 32, no_repeat_ngram: int = 0) -> list[Explanation]:
        """One explanation per activation; greedy when temperature is 0 (the default, as in the release).
        `no_repeat_ngram` N > 0 forbids any N tokens from appearing twice in an answer (HF's
        no_repeat_ngram_size): a cure for an AV that loops on a phrase, measured in benchmarks/av_readability.py."""
        vectors = check_vectors(vectors, self.d_model)
        if max_new_tokens < 1 or temperature < 0 or no_repeat_ngram < 0:
            raise NLAError("max-new-tokens must be at least 1, temperature at least 0 (0: greedy) and "
                           "no-repeat-ngram at least 0 (0: off)")
        stops = stop_ids(self.model, self.tokenizer)
        results = []
        for start in range(0, len(vectors), batch_size):
            _, embeds, mask = self.prompt_embeddings(vectors[start : start + batch_size])
            # Greedy overrides any sampling defaults in the checkpoint's generation_config.
            sampling = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0) if temperature > 0 \
                else dict(do_sample=False, temperature=None, top_p=None, top_k=None)
            if no_repeat_ngram:
                sampling["no_repeat_ngram_size"] = no_repeat_ngram
            with self.reading():
                out = self.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                                          pad_token_id=pad_id_of(self.tokenizer), eos_token_id=sorted(stops) or None,
                                          **sampling)
            for row in out:  # generate() from embeddings returns only the new tokens
                row = row.tolist()
                end = next((i for i, token in enumerate(row) if token in stops), None)
                length = end + 1 if end is not None else len(row)
                answer = self.tokenizer.decode(row[:length], skip_special_tokens=True)
                text = parse_explanation(answer)
                truncated = text is None and end is None and length >= max_new_tokens
                results.append(Explanation(text, answer, length, truncated))
        return results
