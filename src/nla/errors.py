"""The one exception type users see.

An `NLAError` carries a single line that names the problem and the fix. The CLI
prints it without a traceback; library callers can catch it.
"""


class NLAError(Exception):
    """A user-facing error: bad input, a missing file, a mismatch. One line."""
