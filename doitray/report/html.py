"""Assemble one self-contained HTML page: inline plotly.js (once), figures, sortable tables, a status line.

The page works offline from disk. A small script records script errors (``window.onerror`` and
``console.error``) and, after load, writes into ``#doitray-status`` how many figure containers hold
a rendered plot with data (``data-rendered`` of ``data-expected``) and how many errors happened.
"""
from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd

MAX_TABLE_ROWS = 2000

_HEAD_JS = """
window.__doitrayErrors = [];
window.addEventListener('error', function (e) { window.__doitrayErrors.push(String(e.message || e)); });
(function () { var ce = console.error; console.error = function () {
  window.__doitrayErrors.push(Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); }; })();
"""

_TAIL_JS = """
function doitraySort(th) {
  var table = th.closest('table'), idx = Array.prototype.indexOf.call(th.parentNode.children, th);
  var asc = th.getAttribute('data-dir') !== 'asc';
  Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute('data-dir'); });
  th.setAttribute('data-dir', asc ? 'asc' : 'desc');
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = a.cells[idx].getAttribute('data-v'), y = b.cells[idx].getAttribute('data-v');
    var nx = parseFloat(x), ny = parseFloat(y), c;
    if (!isNaN(nx) && !isNaN(ny)) c = nx - ny; else c = String(x).localeCompare(String(y));
    return asc ? c : -c;
  });
  rows.forEach(function (r) { body.appendChild(r); });
}
document.querySelectorAll('table.sortable th').forEach(function (th) {
  th.addEventListener('click', function () { doitraySort(th); });
});
function doitrayCheck() {
  var figs = document.querySelectorAll('div.figure'), ok = 0, names = [];
  figs.forEach(function (f) {
    var g = f.querySelector('.plotly-graph-div');
    if (g && g.data && g.data.length > 0 && g._fullLayout && g.querySelector('svg.main-svg')) ok++;
    else names.push(f.getAttribute('data-figure'));
  });
  var errs = window.__doitrayErrors, st = document.getElementById('doitray-status');
  st.setAttribute('data-expected', figs.length);
  st.setAttribute('data-rendered', ok);
  st.setAttribute('data-errors', errs.length);
  st.setAttribute('data-done', '1');
  st.textContent = 'figures rendered: ' + ok + '/' + figs.length + '; script errors: ' + errs.length +
    (errs.length ? ' (' + errs.join(' | ').slice(0, 500) + ')' : '') +
    (names.length ? '; not rendered: ' + names.join(', ') : '');
}
window.addEventListener('load', function () { setTimeout(doitrayCheck, 200); });
"""

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0 auto; max-width: 1320px;
       padding: 0 24px 60px; color: #222; }
h1 { margin-top: 24px; } h2 { margin-top: 40px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.banner { padding: 10px 14px; border-radius: 6px; margin: 12px 0; }
.partial { background: #fff4e5; border: 1px solid #f0b429; } .complete { background: #e8f5e9; border: 1px solid #66bb6a; }
.caption { color: #555; font-size: 0.92em; max-width: 1100px; }
nav a { margin-right: 12px; font-size: 0.92em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; cursor: pointer; position: sticky; top: 0; }
th[data-dir=asc]::after { content: ' ▲'; } th[data-dir=desc]::after { content: ' ▼'; }
td.s, th.s { text-align: left; }
details { margin: 6px 0 12px; } .scroll { max-height: 420px; overflow: auto; display: inline-block; }
#doitray-status { color: #777; font-size: 0.8em; margin-top: 30px; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; }
"""


def _cell(v) -> tuple[str, str]:
    """(display text, sort value) of one table cell."""
    if v is None or (isinstance(v, (float, np.floating)) and (math.isnan(v) or math.isinf(v))):
        return "", ""
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no"), str(int(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}", str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}", repr(float(v))
    s = str(v)
    return s, s


def table_html(df: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS) -> str:
    """A sortable HTML table (click a header); long tables are cut to ``max_rows`` with a note."""
    if df is None or df.empty:
        return "<p class='caption'>(no rows)</p>"
    d = df.head(max_rows)
    num = {c: pd.api.types.is_numeric_dtype(d[c]) and not pd.api.types.is_bool_dtype(d[c]) for c in d.columns}
    head = "".join(f"<th class='{'' if num[c] else 's'}'>{html.escape(str(c))}</th>" for c in d.columns)
    rows = []
    for rec in d.itertuples(index=False):
        tds = []
        for c, v in zip(d.columns, rec):
            text, key = _cell(v)
            tds.append(f"<td class='{'' if num[c] else 's'}' data-v='{html.escape(key, quote=True)}'>"
                       f"{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    note = (f"<p class='caption'>first {max_rows:,} of {len(df):,} rows</p>" if len(df) > max_rows else "")
    return (f"<div class='scroll'><table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table></div>{note}")


def figure_html(key: str, fig) -> str:
    height = fig.layout.height or 480
    inner = fig.to_html(full_html=False, include_plotlyjs=False, default_height=f"{height}px",
                        default_width="100%", config={"displaylogo": False, "responsive": True})
    return f"<div class='figure' data-figure='{html.escape(key, quote=True)}'>{inner}</div>"


def page(title: str, sections: list[str], nav: list[tuple[str, str]], plotly_js: str) -> str:
    links = "".join(f"<a href='#{html.escape(k)}'>{html.escape(t)}</a>" for k, t in nav)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<script>{_HEAD_JS}</script>\n<script type='text/javascript'>{plotly_js}</script>\n<style>{_CSS}</style>"
        f"</head><body><nav>{links}</nav>{''.join(sections)}"
        "<div id='doitray-status' data-done='0'>status: page scripts did not finish</div>"
        f"<script>{_TAIL_JS}</script></body></html>\n")
