"""The runtime's own error types; every message is one line that names the cause."""


class RuntimeFailure(Exception):
    """Base class of every error the runtime raises on purpose."""


class ArtifactError(RuntimeFailure):
    """The file is missing, empty, truncated, corrupt or of a format no backend reads."""


class BackendMissing(RuntimeFailure):
    """The library that runs this kind of artifact is not installed; the message names the extra."""


class InputError(RuntimeFailure, ValueError):
    """Inputs do not match the model's names, shapes or dtypes; the message says what was expected."""
