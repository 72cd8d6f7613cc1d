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


class MissingExtraError(CadaptError):
    """A feature needs an optional extra that is not installed. Raised where the feature is first
    used, not at import, so that everything else works without it; the message is the pip command."""


class UnitsFailedError(CadaptError):
    """Some independent runs of a scenario failed while the others finished (an executor that runs
    them in parallel lets every run end rather than stopping at the first error). `failures` maps
    each failed run's name to its error; `audits` holds the audit verdicts of the runs that ended,
    so a caller can still compare what finished before it reports the failures."""

    def __init__(self, failures: dict[str, str], audits: dict[tuple[str, int], bool], total: int) -> None:
        listed = "; ".join(f"[{name}] {error}" for name, error in failures.items())
        super().__init__(f"{len(failures)} of {total} scenario run(s) failed: {listed}")
        self.failures, self.audits, self.total = failures, audits, total


class RegistryError(CadaptError):
    """The registry cannot be opened or written (schema version, bad URL, bad state)."""


class SchemaVersionError(RegistryError):
    """The database was written by a newer or older schema than this code knows."""


class UnknownVersionError(TaskNotFoundError):
    """The task exists, but not the version or alias a reference asked for (`sst2@7`, `sst2@prod`)."""


class LifecycleError(RegistryError):
    """A task version is not in the state an operation on it needs: what a refused promote, alias,
    remove, restore or serve raises, through one of the subclasses that say which state it was in."""


class VersionNotReadyError(LifecycleError):
    """The version never finished registering (pending or failed): nothing of it may be served,
    promoted or aliased."""


class VersionRetiredError(LifecycleError):
    """The version is retired: kept on disk until `cadapt gc` or restored with `cadapt restore`,
    but not served, promoted or aliased meanwhile."""


class VersionPurgedError(LifecycleError):
    """The version's bundle and probe were deleted for good (`remove --purge`, `gc`, or a removal
    before retention existed): it can no longer be restored."""


class RecordError(CadaptError):
    """A run record (report/run_record.py) that cannot be read: not JSON, another format, or packed
    per-example scores that do not fit their count."""


class StorageError(CadaptError):
    """A file could not be written (disk full, I/O error, read-only folder); no part of it was left.

    Callers that write on behalf of something bigger (a registry, a saved task) turn it into their
    own error, naming what was being written; `step` and `reason` say where the write failed.
    """

    def __init__(self, path: str, step: str, reason: str):
        super().__init__(f"{path}: cannot write ({step} failed: {reason})")
        self.path, self.step, self.reason = path, step, reason
