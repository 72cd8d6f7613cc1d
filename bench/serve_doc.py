"""What bench/serve.py makes of its measurements: the goals, the table, and its section of
docs/performance.md. Pure (no torch, no server), so the section is what the results say and
nothing else, and the tests can check it on synthetic results.

The section sits between two markers and is replaced whole on each run; what lies outside them
(the analysis a person writes) is never touched.
"""

from __future__ import annotations

from pathlib import Path

BEGIN = "<!-- bench/serve.py: begin (generated; re-running the command below replaces it) -->"
END = "<!-- bench/serve.py: end -->"
HEADING = "## Serving over HTTP (`cadapt serve`)"


def goals(rows: list[dict]) -> list[str]:
    """The issue's two goals, as measured at the largest task count with both settings."""
    by = {(r["setting"], r["tasks"]): r for r in rows}
    counts = sorted({r["tasks"] for r in rows if ("batched", r["tasks"]) in by and ("unbatched", r["tasks"]) in by})
    if not counts:
        return []
    t = counts[-1]
    a, b = by[("batched", t)], by[("unbatched", t)]
    ratio = a["rows_per_s"] / b["rows_per_s"] if b["rows_per_s"] else float("inf")
    p99 = "met" if a["p99_ms"] < 1000 else "not met"
    return [
        f"at {t} tasks: batched {a['rows_per_s']:.1f} rows/s = {ratio:.2f}x unbatched (goal >= 3x: "
        f"{'met' if ratio >= 3 else 'not met'})",
        f"at {t} tasks: batched p99 {a['p99_ms']:.0f} ms (goal < 1000 ms: {p99})",
    ]


def table(rows: list[dict]) -> list[str]:
    out = ["| tasks | setting | rows/s | p50 ms | p99 ms | requests | errors |", "|---:|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["tasks"], ("batched", "unbatched", "per-task").index(r["setting"]))):
        out.append(
            f"| {r['tasks']} | {r['setting']} | {r['rows_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['requests']} | {r['errors']} |"
        )
    return out


def section(result: dict) -> str:
    """The generated part of the section, markers included."""
    start, end = result["load_average"], result["load_average_end"]
    lines = [
        BEGIN,
        "",
        f"`{result['command']}` ({result['date']}; {result['cpus']} CPUs, torch threads {result['threads']}, "
        f"load average {start[0]:.1f} at the start and {end[0]:.1f} at the end; torch {result['versions']['torch']}, "
        f"transformers {result['versions']['transformers']}). {result['clients']} closed-loop clients for "
        f"{result['seconds']:g} s per measurement (after a warm-up), requests of 1–8 rows, each row's task "
        f"drawn from the first T tasks of {result['registry_note']}. Raw numbers: `{result['out']}`.",
        "",
        *table(result["rows"]),
        "",
    ]
    lines += [f"* per-task at {t} tasks: not run ({why})" for t, why in result.get("skipped", {}).items()]
    lines += [f"* {line}" for line in result["goals"]]
    if result["quick"]:
        lines.append("* `--quick`: a tiny random encoder; these numbers check the script and claim nothing")
    return "\n".join([*lines, "", END])


def write_section(path: Path, text: str) -> None:
    """Replaces the generated part of the section in `path`, or appends the section."""
    doc = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + text + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + f"\n\n{HEADING}\n\n{text}\n"
    path.write_text(doc, encoding="utf-8")
