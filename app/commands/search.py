"""`python -m app search`: one query against a running server, printed as a table."""

import html
import re
import shutil
from typing import Any

from app.client import SearchResult

_MARK = re.compile(r"</?mark>")


def plain(fragment: str) -> str:
    """A highlight fragment (HTML, terms in <mark>) as terminal text, terms in [brackets]."""
    return html.unescape(_MARK.sub(lambda m: "]" if m.group().startswith("</") else "[", fragment))


# C0 and C1 control characters: a document's escape sequences would reach the terminal (clear it, set its window's
# title, open a hyperlink; QA). Whitespace among them is made spaces first. And the bidi embeddings, overrides and
# isolates: a value's U+202E reversed the table's columns after it in a terminal that renders bidi text (QA).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _clip(text: str, width: int) -> str:
    text = _CONTROL.sub("?", " ".join(text.split()))
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def _snippet(hit: Any) -> str:
    highlights: dict[str, list[str]] = hit.get("highlights") or {}
    fragments = highlights.get("text") or highlights.get("title") or []
    return " … ".join(plain(f) for f in fragments) if fragments else hit.get("text", "")


def render(result: SearchResult, width: int | None = None, offset: int = 0) -> str:
    """Rank, id, relevance, score, title and a snippet (the highlight when there is one) a line; the ranks of a
    page at `offset` go on from it."""
    width = width or shutil.get_terminal_size((120, 20)).columns
    hits = result["hits"]
    id_width = min(max([len(h["id"]) for h in hits] + [2]), 24)
    title_width = 28
    head = f"{'#':>3}  {'id':<{id_width}}  {'relevance':>9}  {'score':>7}  {'title':<{title_width}}  "
    snippet_width = max(width - len(head), 20)
    lines = [head + "highlight" if any(h.get("highlights") for h in hits) else head + "text"]
    for rank, hit in enumerate(hits, start=offset + 1):
        relevance = "-" if hit["relevance"] is None else f"{hit['relevance']:.3f}"
        lines.append(f"{rank:>3}  {_clip(hit['id'], id_width):<{id_width}}  {relevance:>9}  {hit['score']:>7.3f}  "
                     f"{_clip(hit.get('title') or '', title_width):<{title_width}}  "
                     f"{_clip(_snippet(hit), snippet_width)}")
    shown = f"{offset + 1}-{offset + len(hits)}" if offset and hits else str(len(hits))
    footer = f"{shown} of {result['total']} hits in {result['took_ms']:.1f} ms"
    if result["filtered_out"]:
        footer += f"; {result['filtered_out']} more filtered out as not relevant (--all shows them)"
    return "\n".join([*lines, footer])
