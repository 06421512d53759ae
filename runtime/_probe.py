"""Child process of `runtime.load(path, isolate=True)`: load the artifact, run it once on zeros, exit.

Exit status: 0 fine, 3 ArtifactError, 4 BackendMissing, 5 TypeError, 6 ValueError, 1 anything else; the
message is the last line on stderr. A crash in native code shows as death by a signal.
"""
from __future__ import annotations

import json
import sys

import numpy as np


def main(argv: list[str]) -> int:
    from runtime.errors import ArtifactError, BackendMissing, RuntimeFailure
    from runtime.loader import load

    path, options = argv[0], json.loads(argv[1]) if len(argv) > 1 else {}
    try:
        with load(path, **options) as runner:
            feeds = {s.name: np.zeros([1 if d is None else d for d in s.shape], dtype=s.dtype)
                     for s in runner.inputs}
            try:
                runner.infer(feeds)
            except RuntimeFailure:
                pass  # zeros may be legitimately refused (e.g. a dimension that must be > 1); only crashes matter
    except Exception as e:  # noqa: BLE001 - mapped to an exit status
        codes = {ArtifactError: 3, BackendMissing: 4, TypeError: 5, ValueError: 6}
        print(str(e).strip().replace("\n", " "), file=sys.stderr)
        return next((c for t, c in codes.items() if isinstance(e, t)), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
