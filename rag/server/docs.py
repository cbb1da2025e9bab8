"""GET /docs: the API reference as one plain HTML page built from the OpenAPI schema.

FastAPI's own Swagger page loads its scripts from a CDN; this one works offline.
"""

from __future__ import annotations

from html import escape
from typing import Any, Dict, List


def _params(op: Dict[str, Any]) -> List[str]:
    rows = []
    for p in op.get("parameters", []):
        schema = p.get("schema", {})
        kind = schema.get("type") or "/".join(s.get("type", "") for s in schema.get("anyOf", []) if s.get("type"))
        rows.append(f"<li><code>{escape(p['name'])}</code> ({escape(p.get('in', ''))}, {escape(kind or 'any')})"
                    f"{' required' if p.get('required') else ''}"
                    f"{': ' + escape(p['description']) if p.get('description') else ''}</li>")
    body = op.get("requestBody", {}).get("content", {})
    for mime in body:
        rows.append(f"<li>body: <code>{escape(mime)}</code></li>")
    return rows


def render_docs(schema: Dict[str, Any]) -> str:
    """The HTML page for an OpenAPI schema."""
    info = schema.get("info", {})
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{escape(info.get('title', 'API'))} - API</title>",
        "<link rel='stylesheet' href='/static/app.css'></head><body class='docs'><main>",
        f"<h1>{escape(info.get('title', 'API'))} <small>{escape(info.get('version', ''))}</small></h1>",
        f"<p>{escape(info.get('description', ''))}</p>",
        "<p>The machine-readable schema is at <a href='/openapi.json'>/openapi.json</a>. "
        "Back to the <a href='/'>search page</a>.</p>",
    ]
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            anchor = f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "")
            parts.append(f"<section class='endpoint' id='{escape(anchor)}'>")
            parts.append(f"<h2><span class='method'>{escape(method.upper())}</span> <code>{escape(path)}</code></h2>")
            if op.get("summary"):
                parts.append(f"<p><strong>{escape(op['summary'])}</strong></p>")
            if op.get("description"):
                for para in op["description"].split("\n\n"):
                    parts.append(f"<p>{escape(para)}</p>")
            rows = _params(op)
            if rows:
                parts.append("<ul>" + "".join(rows) + "</ul>")
            parts.append("</section>")
    parts.append("</main></body></html>")
    return "\n".join(parts)
