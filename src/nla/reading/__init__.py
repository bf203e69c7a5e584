"""Reading tools built on a trained NLA: per-token explanations (nla explain), traces with calibrated scores and
claim checks (Reader, Trace: nla trace), the demo, and the audit index and search over many transcripts."""
