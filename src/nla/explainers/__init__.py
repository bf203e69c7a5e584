"""Warm-start explanations for SFT: one small interface, two kinds of backend (the offline facts format, with its
salient words; API models: Anthropic, OpenAI and any OpenAI-compatible server)."""
