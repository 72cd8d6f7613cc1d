"""The JSON of `POST /v1/predict`, and the stable error codes every endpoint answers with.

Request::

    {"inputs": [{"text": "...", "text_pair": "...", "task": "sst2" | "auto"}, ...],
     "task": "sst2",          # optional: the task of inputs that name none
     "top_k": 1,              # optional: labels to return per row, best first
     "return_logits": false}  # optional: the raw logits as computed (float32)

Parsed strictly (duplicate keys, NaN and unknown fields are refused) and by hand rather than by a
schema library, so that every problem maps to one of `ERROR_CODES` with a message naming the
field and row, never to a framework's own error shape or a stack trace.
"""

from __future__ import annotations

from typing import Any

from continual_adapters.core.errors import (
    CadaptError,
    MalformedRequestError,
    OverloadedError,
    RequestError,
    RequestTooLargeError,
    TaskNotFoundError,
)
from continual_adapters.data import strictjson
from continual_adapters.serve.inference import Answer, Row

#: code -> (HTTP status, what it means). Clients may rely on the codes; messages are for people.
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (422, "the body is not one JSON object"),
    "invalid_input": (422, "a field is missing, mistyped or out of range"),
    "unknown_task": (404, "a row names a task this server does not serve"),
    "body_too_large": (413, "the body is over --max-body-bytes"),
    "too_many_rows": (413, "the request has more rows than --max-rows"),
    "queue_full": (503, "the server's queue is full; retry after Retry-After seconds"),
    "not_ready": (503, "the server has not loaded its tasks yet"),
    "timeout": (504, "no answer within --timeout-s"),
    "unauthorized": (401, "a bearer token is required and was missing or wrong"),
    "not_found": (404, "no such endpoint"),
    "method_not_allowed": (405, "the endpoint does not take this HTTP method"),
    "reload_failed": (500, "the registry could not be read; the tasks served before stay served"),
    "internal_error": (500, "the server failed; the log has the details"),
}
REQUEST_FIELDS = {"inputs", "task", "top_k", "return_logits"}
ROW_FIELDS = {"text", "text_pair", "task"}


def error_body(code: str, message: str) -> dict[str, Any]:
    status, _ = ERROR_CODES[code]
    return {"error": {"code": code, "status": status, "message": message}}


def error_code(exc: CadaptError) -> str:
    """The code of a library error as the HTTP layer answers it."""
    if isinstance(exc, TaskNotFoundError):
        return "unknown_task"
    if isinstance(exc, RequestTooLargeError):
        return "too_many_rows" if exc.limit == "rows" else "body_too_large"
    if isinstance(exc, MalformedRequestError):
        return "invalid_json"
    if isinstance(exc, RequestError):
        return "invalid_input"
    if isinstance(exc, OverloadedError):
        return "queue_full"
    return "internal_error"


def parse_request(body: bytes, max_rows: int) -> tuple[list[Row], int, bool]:
    """(rows, top_k, return_logits) from a request body, or RequestError naming what is wrong."""
    try:
        data = strictjson.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedRequestError(f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise MalformedRequestError(f"the body is a JSON {type(data).__name__}, not an object")
    unknown = sorted(set(data) - REQUEST_FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(map(repr, unknown[:5]))}; known: {sorted(REQUEST_FIELDS)}")
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError('"inputs" must be a non-empty list of {"text": ..., "task": ...} objects')
    if len(inputs) > max_rows:
        raise RequestTooLargeError(f"{len(inputs)} rows in one request; at most {max_rows} are taken", "rows")
    default = data.get("task")
    if default is not None and (not isinstance(default, str) or not default):
        raise RequestError('"task" must be a task name or "auto"')
    top_k = data.get("top_k", 1)
    if type(top_k) is not int or top_k < 1:
        raise RequestError(f'"top_k" must be an integer >= 1, got {top_k!r:.40}')
    logits = data.get("return_logits", False)
    if not isinstance(logits, bool):
        raise RequestError(f'"return_logits" must be true or false, got {logits!r:.40}')
    rows = []
    for number, item in enumerate(inputs):
        where = f"inputs[{number}]"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise RequestError(f"{where} must be an object with a text, or a string")
        extra = sorted(set(item) - ROW_FIELDS)
        if extra:
            raise RequestError(f"{where} has unknown field(s) {', '.join(map(repr, extra[:5]))}")
        text, pair, task = item.get("text"), item.get("text_pair"), item.get("task", default)
        if not isinstance(text, str) or not text.strip():
            raise RequestError(f'{where}: "text" must be a non-empty string')
        if pair is not None and not isinstance(pair, str):
            raise RequestError(f'{where}: "text_pair" must be a string')
        if not isinstance(task, str) or not task:
            raise RequestError(f'{where} names no task: give "task" in the row or in the request ("auto" to route)')
        rows.append(Row(text, pair, task))
    return rows, top_k, logits


def answer_json(answer: Answer, top_k: int, with_logits: bool) -> dict[str, Any]:
    """One row's answer: its task and how it was chosen, the label, its score and the top labels."""
    out: dict[str, Any] = {
        "task": answer.task,
        "task_source": answer.source,
        "task_confidence": answer.confidence,
    }
    prediction = answer.prediction
    if prediction is None:
        out.update(label=None, score=None, scores=[], rejected="no task: auto routing below --min-task-confidence")
        return out
    top = prediction.top(top_k) if prediction.probabilities else [(prediction.label, prediction.score)]
    out.update(
        label=prediction.label,
        score=prediction.score,
        scores=[{"label": label, "score": score} for label, score in top],
    )
    if with_logits:
        out["logits"] = answer.logits
    return out


def parse_reload(body: bytes) -> bool:
    """Whether `POST /v1/reload` hashes every served bundle again: its optional body
    `{"verify": true|false}`, true when absent."""
    if not body.strip():
        return True
    try:
        data = strictjson.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedRequestError(f"the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or set(data) - {"verify"} or not isinstance(data.get("verify", True), bool):
        raise RequestError('the body of /v1/reload is {"verify": true|false} or nothing')
    return bool(data.get("verify", True))
