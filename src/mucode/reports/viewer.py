"""The trajectory viewer: one static HTML page per run folder that opens from disk, with no server
and no network (styles, highlighting and the filter script are all inside the file).

    mucode view runs/bon-n5 --out runs/bon-n5/view.html

One entry per (problem, search or rollout), filterable by solved / unsolved and by the number of
turns; per turn the kept program (highlighted by Pygments when the page is written), its public
feedback, the other candidates with their verifier scores and public verdicts, and the hidden
verdict of the kept program.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mucode.reports.runs import RunResult, load_runs


VIEW_FILE = "view.html"  # the page `mucode report` writes next to report.md

PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #1b1f23; }
header { position: sticky; top: 0; background: #fff; padding: .5rem 0; border-bottom: 1px solid #ddd; }
.filters label { margin-right: 1rem; }
.entry { border: 1px solid #ccc; border-radius: 6px; margin: .6rem 0; padding: .3rem .8rem; }
.entry > summary { cursor: pointer; font-weight: 600; }
.badge { display: inline-block; border-radius: 4px; padding: 0 .4rem; margin-left: .4rem; font-size: .85em; font-weight: 500; }
.pass { background: #d4f7dc; color: #0b5a1f; } .fail { background: #fde2e1; color: #8a1212; }
.none { background: #eee; color: #555; }
.turn { border-left: 3px solid #8ab4f8; margin: .6rem 0; padding-left: .8rem; }
pre.feedback { background: #fff8e5; padding: .5rem; white-space: pre-wrap; }
.candidates table { border-collapse: collapse; } .candidates td, .candidates th { border: 1px solid #ddd; padding: .2rem .5rem; }
.run-title { margin-top: 1.5rem; }
.code pre { overflow-x: auto; padding: .4rem; }
"""

FILTER_JS = """
function applyFilters() {
  const show = {solved: document.getElementById('f-solved').checked, unsolved: document.getElementById('f-unsolved').checked};
  const turns = document.getElementById('f-turns').value;
  const query = document.getElementById('f-query').value.trim().toLowerCase();
  let visible = 0;
  document.querySelectorAll('.entry').forEach(function (entry) {
    const ok = show[entry.dataset.outcome] && (turns === 'any' || entry.dataset.turns === turns)
      && (query === '' || entry.dataset.problem.toLowerCase().includes(query));
    entry.hidden = !ok;
    if (ok) { visible += 1; }
  });
  document.getElementById('visible-count').textContent = String(visible);
}
document.addEventListener('DOMContentLoaded', function () {
  document.querySelectorAll('.filters input, .filters select').forEach(function (el) {
    el.addEventListener('input', applyFilters);
    el.addEventListener('change', applyFilters);
  });
  applyFilters();
});
"""


def highlight(program: str) -> str:
    """`program` as highlighted HTML (Pygments, CSS classes of `PAGE_CSS` + `pygments_css`)."""
    from pygments import highlight as pygments_highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer

    return pygments_highlight(program or "# (empty program)", PythonLexer(), HtmlFormatter(cssclass="code"))


def pygments_css() -> str:
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(cssclass="code").get_style_defs(".code")


def _badge(label: str, value: bool | None) -> str:
    kind = "none" if value is None else ("pass" if value else "fail")
    text = "—" if value is None else ("pass" if value else "fail")
    return f'<span class="badge {kind}">{html.escape(label)}: {text}</span>'


def _candidates_table(turn: dict[str, Any]) -> str:
    rows = []
    for index, candidate in enumerate(turn["candidates"]):
        kept = "kept" if index == turn["selected"] else ""
        score = "—" if candidate.get("score") is None else f"{candidate['score']:.3f}"
        rows.append(
            f"<tr><td>{index + 1} {kept}</td><td>{score}</td><td>{_badge('public', candidate.get('public_passed'))}</td>"
            f"<td>{_badge('hidden', candidate.get('correct'))}</td><td>{candidate.get('completion_tokens', 0)}</td></tr>"
        )
    others = "".join(
        f"<details><summary>candidate {i + 1}</summary>{highlight(c.get('program', ''))}</details>"
        for i, c in enumerate(turn["candidates"])
        if i != turn["selected"]
    )
    return (
        '<div class="candidates"><table><tr><th>candidate</th><th>verifier score</th><th>public tests</th>'
        f"<th>hidden tests</th><th>tokens</th></tr>{''.join(rows)}</table>{others}</div>"
    )


def _turn_html(number: int, turn: dict[str, Any]) -> str:
    chosen = turn["candidates"][turn["selected"]]
    feedback = turn.get("feedback") or ""
    parts = [
        f'<div class="turn"><h4>turn {number} {_badge("public", chosen.get("public_passed"))}'
        f"{_badge('hidden', chosen.get('correct'))}</h4>",
        highlight(chosen.get("program", "")),
    ]
    if feedback:
        parts.append(f'<pre class="feedback">{html.escape(feedback)}</pre>')
    if len(turn["candidates"]) > 1:
        parts.append(_candidates_table(turn))
    parts.append("</div>")
    return "".join(parts)


def entry_html(record: dict[str, Any]) -> str:
    """One search (or rollout) of one problem: a collapsible entry with its data attributes for
    the filters (outcome = solved iff the answer is correct; turns = turns taken)."""
    outcome = "solved" if record.get("correct") else "unsolved"
    turns = record["turns"]
    title = f"{record['problem_id']} · search {record.get('search', 0)} · {len(turns)} turn{'s' if len(turns) != 1 else ''}"
    body = "".join(_turn_html(i, turn) for i, turn in enumerate(turns, 1))
    return (
        f'<details class="entry" data-outcome="{outcome}" data-turns="{len(turns)}" '
        f'data-problem="{html.escape(str(record["problem_id"]), quote=True)}">'
        f"<summary>{html.escape(title)}{_badge('public', record.get('solved_public'))}{_badge('correct', record.get('correct'))}</summary>"
        f"{body}</details>"
    )


def page_html(runs: Sequence[RunResult]) -> str:
    """The whole page for `runs` (each with its records in the search schema)."""
    max_turns = max((len(r["turns"]) for run in runs for r in run.records), default=1)
    total = sum(len(run.records) for run in runs)
    turn_options = "".join(f'<option value="{t}">{t}</option>' for t in range(1, max_turns + 1))
    sections = []
    for run in runs:
        solved = sum(bool(r.get("correct")) for r in run.records)
        sections.append(
            f'<h2 class="run-title">{html.escape(run.name)} <small>({solved} of {len(run.records)} correct; '
            f"{html.escape(str(run.folder))})</small></h2>" + "".join(entry_html(record) for record in run.records)
        )
    filters = (
        '<div class="filters"><label><input type="checkbox" id="f-solved" checked> solved</label>'
        '<label><input type="checkbox" id="f-unsolved" checked> unsolved</label>'
        f'<label>turns <select id="f-turns"><option value="any">any</option>{turn_options}</select></label>'
        '<label>problem <input type="search" id="f-query" placeholder="id contains"></label>'
        f'<span><span id="visible-count">{total}</span> of {total} shown</span></div>'
    )
    meta = json.dumps({"runs": [run.name for run in runs], "entries": total})
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>mucode trajectories</title>'
        f'<meta name="mucode-view" content="{html.escape(meta, quote=True)}">'
        f"<style>{PAGE_CSS}{pygments_css()}</style></head><body>"
        f"<header><h1>mucode trajectories</h1>{filters}</header>{''.join(sections)}"
        f"<script>{FILTER_JS}</script></body></html>"
    )


def write_view(run_dirs: Sequence[str | Path], out: str | Path, names: Sequence[str] | None = None) -> Path:
    """Write the viewer page for search, rollout or pipeline folders to `out`; returns its path."""
    runs = load_runs(run_dirs, names)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page_html(runs), encoding="utf-8")
    return out
