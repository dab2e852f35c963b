"""A draft in a notebook: the title, photos, category, item specifics,
condition, price, description (as text, never as live HTML) and problems."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["draft_html"]


def _row(name: str, value: str) -> str:
    return f"<tr><th style='text-align:left'>{escape(name)}</th><td>{value}</td></tr>"


def draft_html(draft: Any) -> str:
    """A :class:`~restyle._listing.values.ListingDraft` as an HTML fragment;
    every text escaped, the photos as their own small thumbnails (no image is
    fetched). It takes the draft untyped: the draft imports this module when
    asked to render, and no import circle is allowed."""
    thumbs = "".join(
        f"<img src='{escape(p.thumbnail)}' alt='photo {p.index + 1}' "
        "style='max-height:64px;margin-right:4px'>"
        for p in draft.photos if p.thumbnail and p.thumbnail.startswith("data:image/"))
    category = draft.category
    rows = [
        _row("category", escape(" > ".join((*category.path, category.name or "")))
             + escape(f" ({category.category_id})") if category.category_id
             else "<i>not chosen</i>"),
        *(_row(a.name, escape(", ".join(a.values))) for a in draft.aspects),
        _row("condition", escape(draft.condition_name or draft.condition.value)
             + (f"<br><small>{escape(draft.condition_description)}</small>"
                if draft.condition_description else "")),
        _row("price", escape(str(draft.price.amount)) + f" <small>({escape(draft.price.basis)})"
             "</small>" if draft.price.amount else "<i>none</i>"),
        _row("description", f"<pre style='white-space:pre-wrap'>{escape(draft.description)}"
             "</pre>"),
    ]
    problems = "".join(f"<li>{escape(p)}</li>" for p in draft.problems)
    removed = "".join(f"<li>{escape(r)}</li>" for r in draft.removed)
    return (
        f"<div class='restyle-draft'><h3>{escape(draft.title) or '<i>no title</i>'}</h3>"
        f"<div>{thumbs}</div><table>{''.join(rows)}</table>"
        + (f"<p><b>To settle before posting</b></p><ul>{problems}</ul>" if problems else "")
        + (f"<p><b>Struck out of the description</b></p><ul>{removed}</ul>" if removed else "")
        + "</div>"
    )
