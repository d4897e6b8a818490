"""The demo's HTML report: one self-contained file that opens offline.

Its charts are drawn by Chart.js (MIT, shipped in this package as
`chart.umd.min.js` with its licence, inlined into the page). The page's data is
JSON in a script tag; when every chart has drawn its points the page sets
`data-charts-drawn` on <body> (and `data-points` on each canvas), which is what a
headless browser checks.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

CHART_JS = "chart.umd.min.js"


def chart_library() -> str:
    """Chart.js as shipped, without its source-map comment (no map in the page)."""
    code = resources.files(__package__).joinpath(CHART_JS).read_text(encoding="utf-8")
    return "\n".join(
        line for line in code.splitlines() if not line.startswith("//# sourceMappingURL=")
    )


def _script_json(data: dict[str, Any]) -> str:
    """JSON that cannot end its <script> element early, nor open a comment in it."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1180px;
       color: #1d232b; background: #fff; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.verdict { padding: 10px 14px; border-radius: 6px; font-weight: 600; }
.pass { background: #e3f4e6; color: #14532d; } .fail { background: #fde2e1; color: #7f1d1d; }
table { border-collapse: collapse; margin-top: 8px; }
th, td { border-bottom: 1px solid #dde3ea; padding: 5px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 18px; }
.chart { border: 1px solid #dde3ea; border-radius: 6px; padding: 10px 12px; height: 290px; }
.chart h3 { margin: 0 0 4px; font-size: 14px; } .chart div { position: relative; height: 250px; }
.events { columns: 2; font-size: 13px; } .muted { color: #5b6672; }
"""

# Builds the charts from the page's data. Every chart has animation off, so it is
# drawn when made; the "drawn" plugin marks each chart once it drew some points.
_CHARTS = r"""
const data = JSON.parse(document.getElementById("demo-data").textContent);
const colours = {email: "#2563eb", crm: "#d97706", enrichment: "#059669"};
let drawn = 0;
Chart.register({
  id: "drawn",
  afterRender(chart) {
    const points = chart.data.datasets.reduce(
      (n, _, i) => n + chart.getDatasetMeta(i).data.length, 0);
    if (points > 0 && !chart.canvas.dataset.points) {
      chart.canvas.dataset.points = String(points);
      drawn += 1;
      document.body.dataset.chartsDrawn = String(drawn);
    }
  },
});
const bands = {
  id: "bands",
  beforeDatasetsDraw(chart, _, options) {
    const {ctx, chartArea: area, scales: {x}} = chart;
    for (const band of options.bands || []) {
      const left = Math.max(area.left, x.getPixelForValue(band.from));
      const right = Math.min(area.right, x.getPixelForValue(band.to));
      ctx.save();
      ctx.fillStyle = "rgba(220, 38, 38, 0.08)";
      ctx.fillRect(left, area.top, right - left, area.bottom - area.top);
      ctx.fillStyle = "#991b1b";
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillText(band.label, left + 4, area.top + 12);
      ctx.restore();
    }
  },
};
const seconds = (values) => values.map((y, t) => ({x: t + 0.5, y}));
function chart(id, datasets, yTitle, extra = {}) {
  new Chart(document.getElementById(id), {
    type: "line",
    data: {datasets},
    plugins: [bands],
    options: {
      animation: false, responsive: true, maintainAspectRatio: false, parsing: false,
      interaction: {mode: "nearest", intersect: false},
      scales: {
        x: {type: "linear", min: 0, max: data.length, title: {display: true, text: "seconds"}},
        y: {beginAtZero: true, title: {display: true, text: yTitle}},
        ...(extra.scales || {}),
      },
      plugins: {bands: {bands: extra.bands || []}, legend: {position: "bottom"}},
    },
  });
}
for (const d of data.destinations) {
  const sets = [
    {label: "calls answered 2xx", data: seconds(d.accepted), borderColor: colours[d.name],
     backgroundColor: colours[d.name], pointRadius: 0, borderWidth: 2, stepped: "middle"},
    {label: "calls refused (429, 503)", data: seconds(d.refused), borderColor: "#dc2626",
     backgroundColor: "#dc2626", pointRadius: 0, borderWidth: 1.5, stepped: "middle"},
  ];
  if (d.limit !== null) {
    sets.push({label: `limit: ${d.limit} calls/s`, borderColor: "#111827", borderDash: [6, 4],
               borderWidth: 1.5, pointRadius: 0,
               data: [{x: 0, y: d.limit}, {x: data.length, y: d.limit}]});
  }
  chart(`calls-${d.name}`, sets, "calls per second", {bands: d.bands});
}
const depth = Object.entries(data.depth).map(([name, values]) => ({
  label: name, borderColor: colours[name], backgroundColor: colours[name], pointRadius: 0,
  borderWidth: 2, data: values.map((y, i) => ({x: data.sampled_at[i], y})),
}));
if (data.alerts.length) {
  depth.push({label: "backlog alert (fired, cleared)", type: "scatter", pointRadius: 6,
              pointStyle: "triangle", borderColor: "#7c3aed", backgroundColor: "#7c3aed",
              data: data.alerts.map((a) => ({x: a.at, y: a.depth}))});
}
chart("depth", depth, "jobs not finished", {bands: data.crm_bands});
const failures = data.destinations.map((d) => ({
  label: `${d.name}: failed calls/s`, borderColor: colours[d.name],
  backgroundColor: colours[d.name], pointRadius: 0, borderWidth: 1.5, stepped: "middle",
  data: seconds(d.failed),
}));
const dead = Object.entries(data.dead).map(([name, values]) => ({
  label: `${name}: dead letters`, borderColor: colours[name], borderDash: [4, 3],
  backgroundColor: colours[name], pointRadius: 0, borderWidth: 2, yAxisID: "dead",
  data: values.map((y, i) => ({x: data.sampled_at[i], y})),
}));
chart("retries", failures.concat(dead), "failed calls/s (each retried)", {
  bands: data.crm_bands,
  scales: {dead: {position: "right", beginAtZero: true, grid: {drawOnChartArea: false},
                  title: {display: true, text: "dead letters"}}},
});
"""


def _summary_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "destination",
        "submitted",
        "delivered",
        "lost",
        "calls seen",
        "refused",
        "most in any window",
        "violations",
    ]
    lines = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>"]
    for row in rows:
        window = (
            f"{row['most_in_window']} (limit {row['limit']} in {row['window']:g} s)"
            if row["limit"] is not None
            else "no limit"
        )
        cells = [
            row["destination"],
            row["submitted"],
            row["delivered"],
            row["lost"],
            row["calls"],
            row["refused"],
            window,
            row["violations"],
        ]
        lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def report_html(data: dict[str, Any]) -> str:
    """The whole page for the demo's `data` (see `_run.report_data`)."""
    failures = data["failures"]
    verdict = (
        '<p class="verdict pass">Every check passed: no receiver saw its limit exceeded, '
        "every job was delivered.</p>"
        if not failures
        else '<p class="verdict fail">Checks failed:<br>'
        + "<br>".join(html.escape(f) for f in failures)
        + "</p>"
    )
    events = "".join(
        f"<li><b>{event['at']:.1f} s</b> {html.escape(event['text'])}</li>"
        for event in data["events"]
    )
    charts = "".join(
        f'<div class="chart"><h3>{html.escape(title)}</h3><div><canvas id="{cid}">'
        "</canvas></div></div>"
        for cid, title in [
            *((f"calls-{d['name']}", f"{d['name']}: {d['story']}") for d in data["destinations"]),
            ("depth", "depth: jobs not finished, per destination"),
            ("retries", "retries and dead letters"),
        ]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>asyncq demo report</title>
<style>{_STYLE}</style></head>
<body>
<h1>asyncq demo</h1>
<p class="muted">{html.escape(data["subtitle"])}</p>
{verdict}
<h2>What the receivers counted</h2>
{_summary_table(data["rows"])}
<p class="muted">{html.escape(data["alerts_note"])}</p>
<h2>Over time</h2>
<div class="charts">{charts}</div>
<h2>Events</h2>
<ul class="events">{events}</ul>
<p class="muted">Charts drawn by Chart.js {html.escape(data["chart_js"])} (MIT licence),
inlined in this file: it opens offline.</p>
<script id="demo-data" type="application/json">{_script_json(data)}</script>
<script>{chart_library()}</script>
<script>{_CHARTS}</script>
</body></html>
"""


def write_report(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_html(data), encoding="utf-8")
