"""Supervised stages: the reconstructor (AR) and verbalizer (AV) SFT, the refit AR, and the shared training loop
with its resumable state. RL is the package above (nla.rl); `nla train` and its presets sit in nla.pipeline."""
