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


class RequestError(CadaptError):
    """A request to the HTTP server (`cadapt serve`) cannot be answered as sent: not JSON, a missing
    or mistyped field, a task that needs routing statistics nobody has."""


class MalformedRequestError(RequestError):
    """A request body that is not one JSON object at all."""


class RequestTooLargeError(RequestError):
    """A request over the server's limits, refused unread so one client cannot make the server
    tokenize megabytes. `limit` says which: "body" (bytes) or "rows" (inputs per request)."""

    def __init__(self, message: str, limit: str = "body"):
        super().__init__(message)
        self.limit = limit


class OverloadedError(CadaptError):
    """The server's bounded queue is full. Refused at once, so that under overload clients see an
    answer to retry on instead of latency that grows without end."""


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
