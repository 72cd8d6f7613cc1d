"""The read-only dashboard at `/`: one server-rendered HTML page, no script, no front-end build.

It shows what `cadapt report` computes (report/reporting.py: the tasks, the accuracy matrix, the
continual-learning metrics, the parameter-growth ledger), with the same two figures `cadapt report
--plots` writes (report/plots.py) inlined as PNG data, what this server serves or refused and
why, the registry's latest audit as `cadapt audit` recorded it (passed or failed, when, each task's
verdict; stream/audit_record.py), and the proof the latest addition recorded (earlier tasks'
bundles and base weights hashed before and after).

Rendering runs matplotlib (about a second), so a page is kept until the served tasks change or
`max_age_s` passes; pyplot is not thread-safe, hence one lock around it.
"""

from __future__ import annotations

import base64
import html
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from continual_adapters.registry import Registry
from continual_adapters.report.reporting import stream_report, write_plots
from continual_adapters.serve.state import ServingState
from continual_adapters.stream.audit_record import latest_audit

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 80rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; font-size: 0.9rem; }
th { background: #f3f3f3; } code { font-size: 0.85rem; }
.ok { color: #1a7f37; } .bad { color: #b42318; } figure { display: inline-block; margin: 0 1rem 1rem 0; }
img { max-width: 38rem; border: 1px solid #ddd; }
"""


def _e(value: Any) -> str:
    return html.escape("–" if value is None else str(value))


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _figures(report: dict[str, Any]) -> dict[str, str]:
    """The report's PNGs as base64 data, by file stem (accuracy_matrix, parameter_growth)."""
    with tempfile.TemporaryDirectory(prefix="cadapt-dashboard-") as folder:
        paths = write_plots(report, folder)
        return {Path(p).stem: base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in paths}


def _verdict(ok: bool, text: str | None = None) -> str:
    return f"<span class='ok'>{text or 'passed'}</span>" if ok else f"<span class='bad'>{text or 'failed'}</span>"


def _latest_audit(registry: Registry) -> list[str]:
    """The latest audit `cadapt audit` recorded (stream/audit_record.py): its verdict, when, which
    stream state, and per task its verdict, how it was confirmed and its score against the one
    recorded at registration. The problems' wording is not stored: `cadapt audit` prints it."""
    latest = latest_audit(registry)
    if latest is None:
        return [
            "<p id='audit' data-ok=''>No audit recorded in the registry (<code>cadapt audit</code> checks every "
            "task, exits 0 only if nothing regressed, and records its outcome here).</p>"
        ]
    passed = sum(t.ok for t in latest.tasks)
    out = [
        f"<p id='audit' data-ok='{str(latest.ok).lower()}'>Latest audit: {_verdict(latest.ok)}, "
        f"<time datetime='{latest.at.isoformat()}'>{latest.at:%Y-%m-%d %H:%M:%S} UTC</time>, "
        f"after task {latest.after_tasks}: {passed} of {len(latest.tasks)} task(s) passed.",
    ]
    if latest.not_covered:
        out[-1] += f" Added since, not audited yet: {_e(', '.join(latest.not_covered))}."
    out[-1] += " The problems' wording is not stored: <code>cadapt audit</code> prints it.</p>"
    out.append(
        "<table id='audit-tasks'><tr><th>task</th><th>verdict</th><th>confirmed by</th>"
        "<th>score at registration</th><th>audited score</th><th>predictions as recorded</th></tr>"
    )
    for t in latest.tasks:
        if t.problems is None:
            verdict = _verdict(False, "no verdict recorded (its registry rows did not verify)")
        else:
            verdict = _verdict(t.ok, None if t.ok else f"failed: {t.problems} problem(s)")
        same = "–" if t.predictions_equal is None else ("yes" if t.predictions_equal else "<b>no</b>")
        out.append(
            f"<tr data-audit-task='{_e(t.task)}' data-ok='{str(t.ok).lower()}'><td>{_e(t.task)}</td><td>{verdict}"
            f"</td><td>{_e(t.confirmed_by)}</td><td>{_score(t.recorded)}</td><td>{_score(t.audited)}</td>"
            f"<td>{same}</td></tr>"
        )
    return [*out, "</table>"]


def _latest_addition(registry: Registry, report: dict[str, Any]) -> list[str]:
    """The proof the latest addition recorded: base weights and earlier bundles hashed before and after."""
    tasks = report["tasks"]
    if not tasks:
        return ["<p>No task registered yet.</p>"]
    last = registry.task(tasks[-1]["name"])
    proof = last.proof or {}
    unchanged = proof.get("unchanged")
    verdict = "<span class='ok'>unchanged</span>" if unchanged else "<span class='bad'>changed</span>"
    earlier = len(proof.get("before", {}).get("bundle_files", {}))
    return [
        f"<p id='addition'>Latest addition, <b>{_e(last.name)}</b>: base weights and {earlier} earlier "
        f"bundle(s) hashed before and after: {verdict if unchanged is not None else '–'}; earlier tasks confirmed "
        f"by {_e(proof.get('confirmation'))}.</p>"
    ]


def render(registry: Registry, state: ServingState) -> str:
    """The whole page for the registry as it is now and the server's `state`."""
    report = stream_report(registry)
    figures = _figures(report)
    base = report["base_model"]
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cadapt registry</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>cadapt registry</h1>",
        f"<p>Base model <code>{_e(base['name'])}</code> ({base['parameters']:,} parameters)."
        if base
        else "<p>No base model recorded yet.",
        f" Serving {len(state.tasks)} task(s), snapshot version {state.version}.</p>",
        "<h2>Tasks</h2>",
        "<table id='tasks'><tr><th>#</th><th>task</th><th>metric</th><th>score at registration</th>"
        "<th>labels</th><th>parameters</th><th>bundle sha256</th><th>served</th></tr>",
    ]
    for task in report["tasks"]:
        name = task["name"]
        served = state.tasks.get(name)
        if served is not None:
            status = "<span class='ok'>served</span>"
        elif name in state.refused:
            status = f"<span class='bad'>refused: {_e(state.refused[name].reason)}</span>"
        else:
            status = "not selected"
        params = served.param_counts.get("total") if served else None
        sha = served.bundle_sha256[:16] + "…" if served else "–"
        out.append(
            f"<tr data-task='{_e(name)}'><td>{_e(task['position'])}</td><td>{_e(name)}</td><td>{_e(task['metric'])}"
            f"</td><td>{_score(task['score'])}</td><td>{_e(task['labels'])}</td>"
            f"<td>{'–' if params is None else f'{params:,}'}</td><td><code>{_e(sha)}</code></td><td>{status}</td></tr>"
        )
    out.append("</table>")
    metrics = report["metrics"]
    if metrics:
        out.append(
            f"<p>ACC {_score(metrics.get('acc'))} · BWT {_score(metrics.get('bwt'))} · "
            f"forgetting {_score(metrics.get('forgetting'))}</p>"
        )
    out.append("<h2>Accuracy matrix and parameter growth</h2>")
    captions = {
        "accuracy_matrix": ("heatmap", "Accuracy matrix R[i][j]: row i after task i, column j task j"),
        "parameter_growth": ("growth", "Stored parameters (× base) as tasks are added"),
    }
    for stem, (element, caption) in captions.items():
        if stem in figures:
            out.append(
                f"<figure><img id='{element}' alt='{_e(caption)}' src='data:image/png;base64,{figures[stem]}'>"
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    if not figures:
        out.append("<p>No figure yet: the registry has no task.</p>")
    out += ["<h2>Audit</h2>", *_latest_audit(registry), *_latest_addition(registry, report), "</body></html>"]
    return "\n".join(out)


class Dashboard:
    """Caches the rendered page per served-state version, for at most `max_age_s` seconds."""

    def __init__(self, registry: Registry, max_age_s: float = 30.0):
        self.registry, self.max_age_s = registry, max_age_s
        self._lock = threading.Lock()
        self._page: tuple[int, float, str] | None = None

    def page(self, state: ServingState) -> str:
        with self._lock:
            cached = self._page
            if cached and cached[0] == state.version and time.monotonic() - cached[1] < self.max_age_s:
                return cached[2]
            text = render(self.registry, state)
            self._page = (state.version, time.monotonic(), text)
            return text
