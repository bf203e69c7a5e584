"""Reading tools built on a trained NLA: per-token explanations of a text (more to come: tracing, claims, search)."""
