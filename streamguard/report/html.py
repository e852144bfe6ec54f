"""report.html: the verdicts, the timeline and a thumbnail per identity, in one file.

Images are embedded as base64 data URIs, so the report can be mailed or attached to
a ticket on its own; the same images also sit beside it as files for scripts. Every
string from outside (file names, reasons) is HTML-escaped.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import PurePath
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: keeps `analyze --help` and input errors fast
    from streamguard.report.verdicts import AnalysisV1, IdentityVerdict

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1120px; color: #222; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.meta { color: #555; margin-top: 0; }
.banner { border: 2px solid #d62728; background: #fdecea; color: #8b1a1a; padding: 10px 14px; margin: 14px 0;
          font-weight: 600; border-radius: 4px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #ddd; vertical-align: middle; }
th { background: #f4f4f4; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; }
img.thumb { width: 96px; height: 96px; border-radius: 3px; display: block; }
img.timeline { width: 100%; border: 1px solid #ddd; }
.verdict { font-weight: 700; padding: 2px 8px; border-radius: 3px; }
.fake { background: #d62728; color: white; } .real { background: #2ca02c; color: white; }
.insufficient { background: #bbb; color: #222; }
.note { color: #555; font-size: 13px; }
.caption { color: #555; font-size: 12px; }
code { background: #f4f4f4; padding: 1px 4px; border-radius: 3px; }
"""


def format_time(t: float) -> str:
    """Video time as a player shows it: m:ss.s, or h:mm:ss.s past an hour."""
    minutes, seconds = divmod(max(0.0, t), 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{seconds:04.1f}" if hours else f"{minutes}:{seconds:04.1f}"


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def render_report(analysis: AnalysisV1, timeline_png: bytes, thumbnails: dict[int, bytes], shown: list[int]) -> str:
    """The whole page; `thumbnails` are JPEG bytes per identity, `shown` the identities in the PNG."""
    a = analysis
    video = escape(a.video)
    banners = []
    if not a.model.trained:
        banners.append(
            "UNTRAINED MODEL: this analysis ran with random weights (no checkpoint), so every score, verdict "
            "and alert below means NOTHING. Run it again with <code>--checkpoint PATH</code> (a fine-tuned FSFM "
            "checkpoint or a streamguard-train export)."
        )
    if not a.complete:
        banners.append(f"INCOMPLETE: decoding stopped part-way ({escape(a.error or 'unknown error')}); "
                       "the verdicts cover only the part analysed.")
    duration = "unknown length" if a.duration_s is None else format_time(a.duration_s)
    s = a.scoring
    rows = "\n".join(_identity_row(v, thumbnails.get(v.identity)) for v in a.identities)
    if not a.identities:
        rows = '<tr><td colspan="8">No faces were found in this video.</td></tr>'
    hidden = len(a.identities) - len(shown)
    timeline_note = f" It shows the {len(shown)} most suspicious identities; the other {hidden} are in scores.csv." if hidden else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>streamguard analysis: {video}</title>
<style>{STYLE}</style></head>
<body>
<h1>streamguard analysis of <code>{escape(PurePath(a.video).name)}</code></h1>
<p class="meta"><code>{video}</code> &middot; duration {duration} &middot; {a.frames_analysed} frames analysed at {a.analysis_fps:g} fps &middot;
model {escape(a.model.name)} (weights {escape(a.model.digest)}{"" if a.model.trained else ", untrained"}) &middot;
threshold {a.threshold:g} ({escape(a.threshold_source)}) on the {escape(s.policy)} of a {s.window_s:g} s window
(at least {s.min_samples} samples) &middot; {a.events} events in events.jsonl</p>
{"".join(f'<div class="banner">{b}</div>' for b in banners)}
<h2>Verdicts</h2>
<table>
<tr><th>face</th><th>identity</th><th>verdict</th><th>video score</th><th>max window score</th><th>samples</th><th>seen</th><th>alerts</th></tr>
{rows}
</table>
<p class="note"><b>video score</b>: mean P(fake) over every sample of the identity (the FSFM video-level protocol);
the verdict is <i>fake</i> when it reaches the threshold, <i>insufficient</i> below {s.min_samples} samples.
<b>max window score</b>: the highest window score ({escape(s.policy)} of P(fake) over {s.window_s:g} s, at least
{s.min_samples} samples); that is what the live alerting compares with the threshold. The face shown is the one with the
highest P(fake), at the video time under it.</p>
<h2>Timeline</h2>
<img class="timeline" alt="scores over time per identity" src="{data_uri(timeline_png, "image/png")}">
<p class="note">Dots: P(fake) of each analysed face. Line: the window score. Dashed: the threshold.
Shaded: an alert was open.{timeline_note}</p>
<h2>Files</h2>
<p class="note"><code>events.jsonl</code> (the events a live run publishes, schema <code>streamguard.event.v1</code>),
<code>scores.csv</code> (every sample), <code>verdicts.json</code> (this table, schema
<code>{escape(a.schema_)}</code>), <code>timeline.png</code>, <code>thumbnails/</code>.</p>
</body></html>
"""


def _identity_row(v: IdentityVerdict, thumbnail: bytes | None) -> str:
    face = ""
    if thumbnail:
        face = f'<img class="thumb" alt="identity {v.identity}" src="{data_uri(thumbnail, "image/jpeg")}">'
        if v.thumbnail_s is not None:
            face += f'<span class="caption">at {format_time(v.thumbnail_s)}</span>'

    window = "&ndash;" if v.max_window_score is None else f"{v.max_window_score:.3f}"
    alerts = "<br>".join(
        f"{format_time(span.start_s)}&ndash;{format_time(span.end_s)} (peak {span.peak_score:.2f})" for span in v.alerts
    ) or "none"
    return (
        f"<tr><td>{face}</td><td>identity {v.identity}</td>"
        f'<td><span class="verdict {v.verdict}">{v.verdict}</span></td>'
        f'<td class="num">{v.video_score:.3f}</td><td class="num">{window}</td><td class="num">{v.samples}</td>'
        f'<td class="num">{format_time(v.first_s)}&ndash;{format_time(v.last_s)}</td><td class="num">{alerts}</td></tr>'
    )
