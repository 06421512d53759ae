"""The one error type the CLI turns into a one-line message and a non-zero exit."""


class CompressError(Exception):
    """A user-facing failure: bad input, a missing dependency, a failed check. The message names the fix."""

    exit_code = 2


class GateFailed(CompressError):
    """A run or check completed but missed a stated bar (parity, accuracy, latency)."""

    exit_code = 1
