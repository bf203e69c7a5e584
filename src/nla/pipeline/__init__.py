"""`nla train`: every stage from one YAML config (pipeline/train.py) and its presets (pipeline/presets/*.yaml).

The layer above the stages it runs (extract, explain, train, rl, eval, calibrate): nothing below imports it."""
