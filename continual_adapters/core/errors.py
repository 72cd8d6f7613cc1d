"""Typed exceptions. Library code raises these; only the CLI turns them into `Error: ...`.

Every error a user can cause (bad data, unknown task, tampered file) has its own class so
callers, tests and the CLI can tell them apart without parsing messages.
"""


class CadaptError(Exception):
    """Base class of every error cadapt raises on purpose."""


class ConfigError(CadaptError):
    """An invalid setting: bad adapter size, unknown activation, bad task name."""


class UnsupportedArchitectureError(CadaptError):
    """The encoder's architecture has no entry in the attribute map."""


class TaskExistsError(CadaptError):
    """A task of that name is already registered (or already attached to the model)."""


class TaskNotFoundError(CadaptError):
    """No task of that name."""


class BundleError(CadaptError):
    """A bundle file cannot be used: unreadable, malformed, or not matching its config."""


class IntegrityError(BundleError):
    """A checksum or recorded hash does not match what is on disk or in memory."""


class DataError(CadaptError):
    """A dataset file cannot be used: missing, empty, unknown column or label, bad row."""


class RegistryError(CadaptError):
    """The registry cannot be opened or written (schema version, bad URL, bad state)."""


class SchemaVersionError(RegistryError):
    """The database was written by a newer or older schema than this code knows."""


class StorageError(CadaptError):
    """A file could not be written (disk full, I/O error, read-only folder); no part of it was left.

    Callers that write on behalf of something bigger (a registry, a saved task) turn it into their
    own error, naming what was being written; `step` and `reason` say where the write failed.
    """

    def __init__(self, path: str, step: str, reason: str):
        super().__init__(f"{path}: cannot write ({step} failed: {reason})")
        self.path, self.step, self.reason = path, step, reason
