"""Decoding defaults that match the released NLAs, free of heavy imports so the CLI can read them.

The release decodes up to 200 new tokens (its RL trained with a 150 cap) and its examples are
greedy; released explanations run ~100 words (~130-150 tokens), so a lower cap cuts most of them
before their closing tag.
"""

MAX_NEW_TOKENS = 200
TEMPERATURE = 0.0  # greedy
