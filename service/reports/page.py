"""The one page shell and stylesheet of every HTML page: reports, schedules, the study list.

Self-contained: no external CSS, JS or fonts, so a page works offline and can be mailed.
"""

from __future__ import annotations

from html import escape

STYLESHEET = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
h3 { font-size: 1em; margin-top: 1.2em; }
.meta, .note, figcaption { color: #555; font-size: 0.9em; }
header.bar { display: flex; justify-content: space-between; align-items: baseline; }
p.error { color: #a00; }
.banner { padding: 0.6em 1em; border-radius: 4px; background: #fff4d6; border: 1px solid #e0b84c; }
.banner.error { background: #fde2e2; border-color: #d66; }
#verdicts li { margin: 0.25em 0; }
table { border-collapse: collapse; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }
th { background: #f4f4f4; } th.group { text-align: center; }
.report th, .report td { text-align: right; } .report td.text, .report th.text { text-align: left; }
tr.best td { background: #e6f4e6; font-weight: 600; } tr.regression td { background: #fde2e2; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 2px;
          margin-right: 0.4em; vertical-align: -0.05em; }
figure.plot { margin: 1em 0; } figure.plot svg { max-width: 100%; height: auto; }
.scroll { overflow-x: auto; } progress { width: 100%; max-width: 20em; }
form.inline { display: inline; }
"""


def page(
    title: str, body: str, *, body_class: str | None = None, refresh_s: int | None = None
) -> str:
    """A whole HTML page: `title` (text, escaped here) over `body` (HTML, escaped already);
    `refresh_s`: the browser reloads it that often (a meta refresh: no script needed)."""
    attrs = f' class="{body_class}"' if body_class else ""
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">\n' if refresh_s else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"{refresh}"
        f"<title>{escape(title)}</title><style>{STYLESHEET}</style></head>\n"
        f"<body{attrs}>\n{body}\n</body></html>\n"
    )
