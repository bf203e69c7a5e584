"""Training stages: reconstructor (AR) and verbalizer (AV) SFT; RL comes later."""
