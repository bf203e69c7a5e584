"""Warm-start explanations for SFT: one small interface, several backends (offline facts; API models next)."""
