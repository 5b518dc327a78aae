"""``--format html``: one self-contained page (inline style and script, nothing from the network).

The scan page lists variables grouped by layer; a click on a column header sorts (groups
give way to one sorted list), selects filter by kind, decision and confidence, and each
variable's evidence opens in place (``<details>``, so it works without script too). The
verify page lists each variable's verdict the same way. Filters can be set from the URL
fragment (``report.html#kind=bias&decision=decayed``, ``#sort=size&dir=desc``, ``#q=dense``), so a
filtered view can be linked.

Every name from a model file is HTML-escaped; the page has a Content-Security-Policy that
allows only its own inline style and script, so nothing is fetched from anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

_STYLE = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#1b1f24}
h1{font-size:1.3em;margin:0 0 .3em}.meta{color:#57606a;margin:.2em 0}
.controls{margin:1em 0;display:flex;gap:1em;flex-wrap:wrap;align-items:center}
table{border-collapse:collapse;width:100%}th,td{padding:.3em .6em;border-bottom:1px solid #d0d7de;
text-align:left;vertical-align:top}th{background:#f6f8fa;cursor:pointer;user-select:none;position:sticky;top:0}
th[data-dir=asc]::after{content:" \\25B2"}th[data-dir=desc]::after{content:" \\25BC"}
tr.group td{background:#eef1f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}td.shape{white-space:nowrap}
.yes{color:#1a7f37;font-weight:600}.no{color:#57606a}.low{color:#bc4c00;font-weight:600}
.fail{background:#ffebe9}.fail td.verdict{color:#cf222e;font-weight:600}.ok td.verdict{color:#1a7f37}
details summary{cursor:pointer}code{font-size:.95em}.notes li{color:#57606a}
table.summary{width:auto;margin-top:1em}
"""

_SCRIPT = """
(function(){
  const table=document.getElementById('variables'), body=table.tBodies[0];
  const rows=Array.from(body.querySelectorAll('tr.var')), groups=Array.from(body.querySelectorAll('tr.group'));
  const selects=Array.from(document.querySelectorAll('select[data-filter]'));
  const text=document.getElementById('search'), status=document.getElementById('status');
  const original=Array.from(body.rows);
  let sortKey=null, sortDir=1;
  function apply(){
    const wanted={}; selects.forEach(s=>{ if(s.value) wanted[s.dataset.filter]=s.value; });
    const needle=(text.value||'').toLowerCase(); let shown=0;
    rows.forEach(r=>{
      let ok=Object.keys(wanted).every(k=>r.dataset[k]===wanted[k]) && r.dataset.path.toLowerCase().includes(needle);
      r.hidden=!ok; if(ok) shown++;
    });
    groups.forEach(g=>{
      const members=rows.filter(r=>r.dataset.group===g.dataset.group);
      g.hidden=sortKey!==null || members.every(r=>r.hidden);
    });
    status.textContent=shown+' of '+rows.length+' variables shown';
    status.dataset.shown=shown;
  }
  function sort(th){
    const key=th.dataset.key;
    if(sortKey===key){ sortDir=-sortDir; } else { sortKey=key; sortDir=1; }
    table.querySelectorAll('th').forEach(h=>h.removeAttribute('data-dir'));
    th.dataset.dir=sortDir>0?'asc':'desc';
    const numeric=th.dataset.type==='num';
    const sorted=rows.slice().sort((a,b)=>{
      const x=a.dataset[key]||'', y=b.dataset[key]||'';
      const c=numeric?(parseFloat(x)||0)-(parseFloat(y)||0):x.localeCompare(y);
      return c*sortDir;
    });
    sorted.forEach(r=>body.appendChild(r)); apply();
  }
  table.querySelectorAll('th[data-key]').forEach(th=>th.addEventListener('click',()=>sort(th)));
  document.getElementById('reset').addEventListener('click',()=>{
    sortKey=null; table.querySelectorAll('th').forEach(h=>h.removeAttribute('data-dir'));
    original.forEach(r=>body.appendChild(r)); selects.forEach(s=>s.value=''); text.value=''; apply();
  });
  selects.forEach(s=>s.addEventListener('change',apply)); text.addEventListener('input',apply);
  const params=new URLSearchParams(location.hash.slice(1));
  params.forEach((v,k)=>{
    const s=selects.find(x=>x.dataset.filter===k); if(s) s.value=v; if(k==='q') text.value=v;
  });
  const by=params.get('sort') && table.querySelector('th[data-key="'+CSS.escape(params.get('sort'))+'"]');
  if(by){ sort(by); if(params.get('dir')==='desc') sort(by); }
  apply();
})();
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _page(title: str, header: str, controls: str, table: str, after: str = "") -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<meta name="viewport" content="width=device-width"><title>{escape(title)}</title>'
        f'<style>{_STYLE}</style></head><body>\n{header}\n<div class="controls">{controls}'
        '<input id="search" type="search" placeholder="filter by path" aria-label="filter by path">'
        '<button id="reset" type="button">reset</button><span id="status" role="status"></span></div>\n'
        f"{table}\n{after}\n<script>{_SCRIPT}</script></body></html>\n"
    )


def _select(name: str, label: str, values: Iterable[str]) -> str:
    options = "".join(f'<option value="{_attr(v)}">{escape(v)}</option>' for v in values)
    return (
        f'<label>{escape(label)} <select data-filter="{_attr(name)}">'
        f'<option value="">all</option>{options}</select></label>'
    )


def _head(columns: Sequence[tuple[str, str, str]]) -> str:
    cells = "".join(
        f'<th data-key="{key}" data-type="{kind}" scope="col">{escape(label)}</th>' for label, key, kind in columns
    )
    return f"<thead><tr>{cells}</tr></thead>"


def _data(**values: object) -> str:
    return " ".join(f'data-{key}="{_attr(value)}"' for key, value in values.items())


def _evidence(first: str, rest: Sequence[str], conflicts: Sequence[str]) -> str:
    if not rest and not conflicts:
        return escape(first)
    items = "".join(f"<li>{escape(e)}</li>" for e in rest)
    items += "".join(f"<li><strong>conflict:</strong> {escape(c)}</li>" for c in conflicts)
    return f"<details><summary>{escape(first)}</summary><ul>{items}</ul></details>"


# --- scan --------------------------------------------------------------------------------

SCAN_COLUMNS = (
    ("variable", "path", "text"),
    ("shape", "size", "num"),
    ("parameters", "size", "num"),
    ("kind", "kind", "text"),
    ("decay", "decision", "text"),
    ("confidence", "confidence", "text"),
    ("evidence", "evidence", "text"),
)


def scan_html(report: Any) -> str:
    from decay_audit.kinds import Confidence, Kind

    summary = report.summary()
    groups: dict[tuple[str, str], list[Any]] = {}
    for variable in report.variables:
        groups.setdefault((variable.record.layer or "-", variable.record.layer_class or ""), []).append(variable)
    body = []
    for index, ((layer, layer_class), members) in enumerate(groups.items()):
        label = escape(layer) + (f' <span class="no">({escape(layer_class)})</span>' if layer_class else "")
        body.append(
            f'<tr class="group" data-group="{index}"><td colspan="{len(SCAN_COLUMNS)}">{label}'
            f' <span class="no">{len(members)} variable{"s" if len(members) != 1 else ""}</span></td></tr>'
        )
        for variable in members:
            record, classification, decision = variable.record, variable.classification, variable.decision
            evidence = list(classification.evidence) or [""]
            decided = "decayed" if decision.decay else "excluded"
            shape = "(" + ", ".join("?" if d is None else str(d) for d in record.shape) + ")"
            body.append(
                f'<tr class="var" {_data(group=index, path=record.path, size=record.size, kind=classification.kind.value, decision=decided, confidence=classification.confidence.value, evidence=evidence[0])}>'
                f'<td><code>{escape(record.path)}</code></td><td class="shape">{escape(shape)}</td>'
                f'<td class="num">{record.size:,}</td><td>{escape(classification.kind.value)}</td>'
                f'<td class="{"yes" if decision.decay else "no"}" title="{_attr(decision.reason)}">'
                f"{'yes' if decision.decay else 'no'}</td>"
                f'<td class="{"low" if classification.confidence is Confidence.LOW else ""}">'
                f"{escape(classification.confidence.value)}</td>"
                f"<td>{_evidence(evidence[0], evidence[1:], classification.conflicts)}</td></tr>"
            )
    table = f'<table id="variables">{_head(SCAN_COLUMNS)}<tbody>{"".join(body)}</tbody></table>'
    notes = [escape(n) for n in report.notes]
    notes += [f"override {escape(d)} matches no variable" for d in report.policy_findings.dead_overrides]
    notes += [escape(c) for c in report.policy_findings.conflicts]
    optimizer = report.inventory.optimizer
    if optimizer is not None and optimizer.weight_decay:
        notes.append(
            f"saved optimizer {escape(optimizer.class_name)} with weight_decay={optimizer.weight_decay}: "
            "exclusions are not saved, so after load_model it decays every variable"
        )
    header = (
        f"<h1>decay-audit scan: <code>{escape(report.source)}</code></h1>"
        f'<p class="meta">{escape(report.loader)} · policy {escape(report.policy.describe())} · '
        f"{summary.variables} variables, {summary.parameters:,} parameters · decayed "
        f"{summary.decayed_variables} ({summary.decayed_parameters:,} parameters) · excluded "
        f"{summary.excluded_variables} ({summary.excluded_parameters:,}) · low confidence "
        f"{summary.low_confidence} · conflicting {summary.conflicting}</p>"
        + (f'<ul class="notes">{"".join(f"<li>{n}</li>" for n in notes)}</ul>' if notes else "")
    )
    kinds = [k.value for k in Kind if any(v.classification.kind is k for v in report.variables)]
    controls = (
        _select("kind", "kind", kinds)
        + _select("decision", "decay", ["decayed", "excluded"])
        + _select("confidence", "confidence", [c.value for c in Confidence])
    )
    per_kind = "".join(
        f'<tr><td>{escape(k.kind.value)}</td><td class="num">{k.variables}</td>'
        f'<td class="num">{k.parameters:,}</td><td class="num">{k.decayed}</td></tr>'
        for k in summary.per_kind
    )
    after = (
        '<table class="summary"><thead><tr><th>kind</th><th>variables</th><th>parameters</th>'
        f"<th>decayed</th></tr></thead><tbody>{per_kind}</tbody></table>"
    )
    return _page(f"decay-audit scan {report.source}", header, controls, table, after)


# --- verify ------------------------------------------------------------------------------

VERIFY_COLUMNS = (
    ("variable", "path", "text"),
    ("expected", "expected", "text"),
    ("measured", "measured", "text"),
    ("ratio", "ratio", "num"),
    ("l1", "l1", "text"),
    ("verdict", "verdict", "text"),
    ("detail", "detail", "text"),
)


def verify_html(report: Any) -> str:
    from decay_audit.report.verify_format import steps_lines

    groups: dict[str, list[Any]] = {}
    for measurement in report.measurements:
        groups.setdefault(measurement.path.rpartition("/")[0] or "-", []).append(measurement)
    body = []
    for index, (layer, members) in enumerate(groups.items()):
        body.append(
            f'<tr class="group" data-group="{index}"><td colspan="{len(VERIFY_COLUMNS)}">{escape(layer)}</td></tr>'
        )
        for m in members:
            expected = "decay" if m.expected_decay else "no decay"
            ratio = "" if m.decoupled_ratio is None else f"{m.decoupled_ratio:.4g}"
            body.append(
                f'<tr class="var {"ok" if m.ok else "fail"}" {_data(group=index, path=m.path, expected=expected, measured=m.measured, ratio=ratio, l1=m.l1, verdict=m.outcome.value, detail=m.detail)}>'
                f"<td><code>{escape(m.path)}</code></td><td>{escape(expected)}</td><td>{escape(m.measured)}</td>"
                f'<td class="num">{escape(ratio)}</td><td>{escape(m.l1)}</td>'
                f'<td class="verdict">{escape(m.outcome.value)}</td>'
                f"<td>{_evidence(m.detail, [f'intent: {m.intent}', f'decoupled in {m.decoupled_steps} of {m.steps} steps, coupled in {m.coupled_steps}, L1 in {m.l1_steps}'], [])}</td></tr>"
            )
    table = f'<table id="variables">{_head(VERIFY_COLUMNS)}<tbody>{"".join(body)}</tbody></table>'
    notes = [*steps_lines(report), *report.notes]
    verdict = (
        "all variables get the intended decay"
        if report.ok
        else f"{len(report.mismatches)} of {len(report.measurements)} variables get the wrong decay"
    )
    header = (
        f"<h1>decay-audit verify: <code>{escape(report.setup)}</code></h1>"
        f'<p class="meta">{escape(report.optimizer)}, weight_decay={escape(str(report.weight_decay))}, '
        f"{report.steps} steps on {escape(report.device)} · <strong>{escape(verdict)}</strong></p>"
        + (f'<ul class="notes">{"".join(f"<li>{escape(n)}</li>" for n in notes)}</ul>' if notes else "")
    )
    verdicts = sorted({m.outcome.value for m in report.measurements})
    controls = _select("verdict", "verdict", verdicts) + _select("expected", "expected", ["decay", "no decay"])
    return _page(f"decay-audit verify {report.setup}", header, controls, table)
