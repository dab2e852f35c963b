"""HTML for notebooks: ``_repr_html_`` of Analysis, Identification and Comp.

Every piece of text from listings and experts is escaped; only http(s) and
inline image data become ``src`` attributes.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from restyle._imaging import sniff_format
from restyle._types import Analysis, Comp, Identification, PriceEstimate

__all__ = ["analysis_html", "comp_html", "identification_html"]

_MAX_INLINE_BYTES = 2 * 1024 * 1024
_STYLE = (
    "<style>.restyle{font-family:system-ui,sans-serif;font-size:13px;line-height:1.35}"
    ".restyle table{border-collapse:collapse}.restyle td,.restyle th{padding:2px 8px;"
    "text-align:left;vertical-align:top}.restyle .grid{display:flex;flex-wrap:wrap;gap:8px}"
    ".restyle .comp{width:150px;border:1px solid #ddd;border-radius:6px;padding:6px}"
    ".restyle .comp img{width:138px;height:138px;object-fit:cover;background:#f4f4f4}"
    ".restyle .muted{color:#777}.restyle .flag{color:#b45309}</style>"
)


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _image_src(url: str | None) -> str | None:
    """A safe ``src`` for a listing image: http(s) as is, a local image inlined."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return url
    if parts.scheme == "data" and url.startswith(("data:image/jpeg;base64,",
                                                   "data:image/png;base64,",
                                                   "data:image/webp;base64,")):
        return url
    if parts.scheme == "file":
        path = Path(url2pathname(parts.path))
        try:
            if path.stat().st_size > _MAX_INLINE_BYTES:
                return None
            data = path.read_bytes()
        except OSError:
            return None
        fmt = sniff_format(data)
        if fmt is None:
            return None
        return f"data:image/{fmt.lower()};base64," + base64.b64encode(data).decode("ascii")
    return None


def identification_html(ident: Identification) -> str:
    rows = [("brand", ident.brand), ("product", ident.product_name), ("category", ident.category)]
    rows += [(a.name, f"{a.value} ({a.confidence:.2f})") for a in ident.attributes]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v or '-')}</td></tr>" for k, v in rows)
    evidence = "".join(
        f"<li>{_e(e.field)} = {_e(e.value)}: {_e(e.expert)} ({e.score:.2f})</li>"
        for e in ident.evidence
    )
    extra = ""
    if ident.fallback_reason:
        extra += f"<p class='flag'>Fallback: {_e(ident.fallback_reason)}</p>"
    if ident.suggested_photos:
        extra += "<p>To be surer, add: " + "; ".join(_e(s) for s in ident.suggested_photos)
        extra += "</p>"
    return (
        f"<div class='restyle'>{_STYLE}<p><b>{_e(ident.summary or 'Identification')}</b></p>"
        f"<table>{body}<tr><th>confidence</th><td>{ident.confidence:.2f}</td></tr></table>"
        + (f"<details><summary>evidence</summary><ul>{evidence}</ul></details>" if evidence else "")
        + extra + "</div>"
    )


def comp_html(comp: Comp, *, standalone: bool = True) -> str:
    listing = comp.listing
    src = _image_src(listing.image_url)
    img = (f"<img src='{_e(src)}' alt='{_e(listing.title)}' loading='lazy'>" if src
           else "<div class='muted' style='height:138px'>no image</div>")
    title = _e(listing.title)
    if listing.url and urlsplit(listing.url).scheme in ("http", "https"):
        title = f"<a href='{_e(listing.url)}' target='_blank' rel='noopener noreferrer'>{title}</a>"
    similarity = "n/a" if comp.similarity is None else f"{comp.similarity:.3f}"
    flags = "".join(f"<div class='flag'>{_e(flag)}</div>" for flag in comp.flags)
    html = (
        f"<div class='comp'>{img}<div>{title}</div>"
        f"<div><b>{_e(listing.price or 'no price')}</b></div>"
        f"<div class='muted'>{_e(listing.condition.value)} · sim {similarity}</div>{flags}</div>"
    )
    return f"<div class='restyle'>{_STYLE}{html}</div>" if standalone else html


def _price_strip(price: PriceEstimate, comps: tuple[Comp, ...]) -> str:
    amounts = [float(c.listing.price.amount) for c in comps
               if c.listing.price is not None and c.listing.price.currency == price.currency]
    if not price.ok or not amounts or price.low is None or price.high is None:
        return ""
    lo, hi = min(*amounts, float(price.low)), max(*amounts, float(price.high))
    span = (hi - lo) or 1.0
    width, pad = 420, 10

    def x(v: float) -> float:
        return pad + (v - lo) / span * (width - 2 * pad)

    band = (f"<rect x='{x(float(price.low)):.1f}' y='6' width='"
            f"{max(1.0, x(float(price.high)) - x(float(price.low))):.1f}' height='18' "
            "fill='#bfdbfe'/>")
    dots = "".join(f"<circle cx='{x(a):.1f}' cy='15' r='3' fill='#374151'/>" for a in amounts)
    mid = f"<line x1='{x(float(price.estimate or 0)):.1f}' x2='{x(float(price.estimate or 0)):.1f}'"
    mid += " y1='2' y2='28' stroke='#1d4ed8' stroke-width='2'/>"
    labels = (f"<text x='{pad}' y='42' font-size='10'>{lo:.2f}</text>"
              f"<text x='{width - pad}' y='42' font-size='10' text-anchor='end'>{hi:.2f}</text>")
    return (f"<svg width='{width}' height='46' role='img' aria-label='price range against comp "
            f"prices'>{band}{dots}{mid}{labels}</svg>")


def analysis_html(analysis: Analysis, *, max_comps: int = 24) -> str:
    photo_src = _image_src(analysis.photo.thumbnail)
    photo = (
        f"<img src='{_e(photo_src)}' style='max-width:220px;height:auto;"
        "align-self:flex-start;border-radius:6px'>" if photo_src else ""
    )
    price = analysis.price
    if price.ok:
        price_text = (
            f"<p><b>{_e(price.estimate)} {_e(price.currency)}</b> (range {_e(price.low)}–"
            f"{_e(price.high)}, from {price.comps_used} comps)</p>"
        )
    else:
        price_text = (f"<p><b>Not enough data</b> for a price ({price.comps_used} usable comps, "
                      f"{price.minimum_comps} needed)</p>")
    failed = "".join(f"<li class='flag'>{_e(k)}: {_e(v)}</li>"
                     for k, v in analysis.failed_experts.items())
    warnings = "".join(f"<li class='flag'>{_e(w)}</li>" for w in analysis.warnings)
    grid = "".join(comp_html(c, standalone=False) for c in analysis.comps[:max_comps])
    more = len(analysis.comps) - max_comps
    return (
        f"<div class='restyle'>{_STYLE}<div style='display:flex;gap:16px'>{photo}"
        f"<div>{identification_html(analysis.identification)}{price_text}"
        f"{_price_strip(price, analysis.comps)}"
        + (f"<ul>{failed}{warnings}</ul>" if failed or warnings else "")
        + f"</div></div><h4>Comps ({len(analysis.comps)})</h4><div class='grid'>{grid}</div>"
        + (f"<p class='muted'>and {more} more</p>" if more > 0 else "")
        + "</div>"
    )
