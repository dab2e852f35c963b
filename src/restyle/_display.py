"""HTML for notebooks: ``_repr_html_`` of Analysis, Identification and Comp.

Every piece of text from listings and experts is escaped; only http(s) links
and small inline JPEG thumbnails become ``src`` attributes. A local file is
read only when restyle's own catalog served it (:mod:`restyle._input.vouched`), and
then only to draw a thumbnail of it, so one output stays small whatever the
listings point at.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import stat
from collections.abc import Sequence
from html import escape
from urllib.parse import urlsplit
from urllib.request import url2pathname

from restyle._errors import ImageError
from restyle._input.imaging import DEFAULT_MAX_BYTES, decode
from restyle._input.vouched import is_vouched
from restyle._types import Analysis, Comp, Identification, PhotoInfo, PriceEstimate

__all__ = ["CONDITION_WORDS", "EXCLUSION_WORDS", "FLAG_WORDS", "analysis_html", "comp_html",
           "comp_note", "counted_keys", "degradations", "identification_html", "page_html",
           "price_words", "report_html", "report_row_html"]

#: What a comp's flags mean, in a reseller's words.
FLAG_WORDS = {
    "duplicate_image": "same photo as another listing",
    "below_cutoff": "does not look alike (below the cut-off)",
    "image_unavailable": "its image could not be checked",
}
#: Why a comp was left out of the price (``Exclusion.reason``), in words.
EXCLUSION_WORDS = {
    "no_price": "no price",
    "absurd_price": "price not believable",
    "below_cutoff": "does not look alike (below the cut-off)",
    "not_alike": "does not look alike",
    "auction_without_bids": "auction nobody has bid on",
    "outlier": "price far from the others",
    "other_currency": "another currency",
    "asking_price": "asking price (the price rests on sales)",
}
#: A listing's condition in words; unknown is left blank.
CONDITION_WORDS = {"new": "new", "like_new": "like new", "used": "used",
                   "for_parts": "for parts", "unknown": ""}

#: Height of the thumbnails of an item's strip of photos, in pixels.
STRIP_SIDE = 72
#: Longest side of a comp's thumbnail, and of the analysed photo's, in pixels.
THUMBNAIL_SIDE = 160
PHOTO_SIDE = 256
#: Most characters of inline image data in one rendered output; past it, placeholders.
INLINE_BUDGET = 192 * 1024
_INLINE_PREFIXES = ("data:image/jpeg;base64,", "data:image/png;base64,", "data:image/webp;base64,")
_STYLE = (
    "<style>.restyle{font-family:system-ui,sans-serif;font-size:13px;line-height:1.35}"
    ".restyle table{border-collapse:collapse}.restyle td,.restyle th{padding:2px 8px;"
    "text-align:left;vertical-align:top}.restyle .grid{display:flex;flex-wrap:wrap;gap:8px}"
    ".restyle .comp{width:150px;border:1px solid #ddd;border-radius:6px;padding:6px}"
    ".restyle .comp img{width:138px;height:138px;object-fit:cover;background:#f4f4f4}"
    ".restyle .noimg{width:138px;height:138px;display:flex;align-items:center;"
    "justify-content:center;background:#f4f4f4}"
    ".restyle .muted{color:#777}.restyle .flag{color:#b45309}"
    ".restyle .counted{color:#15803d}</style>"
)


def comp_note(comp: Comp, price: PriceEstimate) -> str:
    """What a reader should know of ``comp`` beside its columns: its flags and
    why the price left it out, in words, each said once."""
    notes = [FLAG_WORDS.get(flag, flag.replace("_", " ")) for flag in comp.flags]
    key = comp.listing.key
    for exclusion in price.exclusions:
        if exclusion.listing_key == key:
            words = EXCLUSION_WORDS.get(exclusion.reason, exclusion.reason.replace("_", " "))
            if words not in notes:
                notes.append(words)
    return "; ".join(notes)


def degradations(analysis: Analysis) -> list[str]:
    """What went less than fully right in ``analysis``, in words (empty when nothing did)."""
    found = [f"expert {expert} failed: {reason}"
             for expert, reason in analysis.failed_experts.items()]
    if analysis.identification.fallback_reason:
        found.append(f"synthesizer fell back: {analysis.identification.fallback_reason}")
    return found + list(analysis.warnings)


def counted_keys(price: PriceEstimate) -> frozenset[str]:
    """The listing keys of the comps the headline price counts (none without a price)."""
    return frozenset(p.listing_key for p in price.counted) if price.ok else frozenset()


def price_words(price: PriceEstimate) -> tuple[str, str]:
    """The price in words and its basis line: ``("42.00 USD (range 35.00-50.00)",
    "sold: 5 sold comps")``; a price with too little data has no basis."""
    if not price.ok:
        return (f"not enough data ({price.comps_used} usable comps, "
                f"{price.minimum_comps} needed)", "")
    text = f"{price.estimate} {price.currency} (range {price.low}-{price.high})"
    basis = "" if price.basis is None else (
        price.basis.value + (f": {price.basis_detail}" if price.basis_detail else ""))
    return text, basis


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


class _Budget:
    """What is left of one output's allowance of inline image data."""

    __slots__ = ("left",)

    def __init__(self, chars: int = INLINE_BUDGET) -> None:
        self.left = chars

    def take(self, src: str | None) -> str | None:
        if src is None or len(src) > self.left:
            return None
        self.left -= len(src)
        return src


def _thumbnail(data: bytes, side: int) -> str | None:
    """A JPEG data URI of ``data`` downscaled to ``side``, drawn by the safe decoder."""
    try:
        photo = decode(data, draft_side=side)
        thumb = photo.encoded(max_side=side, quality=70)
    except (ImageError, OSError, ValueError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(thumb).decode("ascii")


@functools.lru_cache(maxsize=256)
def _file_thumbnail(path: str, side: int, mtime_ns: int, size: int) -> str | None:
    # Keyed by modification time and size too: a file changed on disk is drawn again.
    try:
        with open(path, "rb") as fh:
            data = fh.read(DEFAULT_MAX_BYTES + 1)
    except OSError:
        return None
    if len(data) > DEFAULT_MAX_BYTES:
        return None
    return _thumbnail(data, side)


def _local_src(url: str, side: int) -> str | None:
    """A thumbnail of a ``file://`` image restyle's catalog served; None for any other."""
    if not is_vouched(url):
        return None
    path = url2pathname(urlsplit(url).path)
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode) or info.st_size > DEFAULT_MAX_BYTES:
        return None
    return _file_thumbnail(path, side, info.st_mtime_ns, info.st_size)


def _inline_src(url: str, side: int) -> str | None:
    """A small inline image from a ``data:`` URI: as it is when small, else redrawn."""
    if not url.startswith(_INLINE_PREFIXES):
        return None
    if len(url) <= side * side:  # about one character a pixel: already thumbnail-sized
        return url
    if len(url) > DEFAULT_MAX_BYTES * 4 // 3 + 64:
        return None
    try:
        data = base64.b64decode(url.split(",", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        return None
    return _thumbnail(data, side)


def _image_src(url: str | None, budget: _Budget, *, side: int = THUMBNAIL_SIDE) -> str | None:
    """A safe ``src`` for an image: http(s) as it is, anything else a small inline thumbnail."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return url
    if parts.scheme == "data":
        return budget.take(_inline_src(url, side))
    if parts.scheme == "file":
        return budget.take(_local_src(url, side))
    return None


def _photo_words(photo: int | None, photos: Sequence[PhotoInfo]) -> str:
    """" (photo 2, tag)" for evidence from photo 2 of an item; "" for a photo alone."""
    if photo is None or len(photos) <= 1:
        return ""
    info = next((p for p in photos if p.index == photo), None)
    role = f", {info.role.value}" if info is not None and info.role is not None else ""
    return f", photo {photo + 1}{role}"


def identification_html(ident: Identification, photos: Sequence[PhotoInfo] = ()) -> str:
    rows = [("brand", ident.brand), ("product", ident.product_name), ("category", ident.category)]
    rows += [(a.name, f"{a.value} ({a.confidence:.2f})") for a in ident.attributes]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v or '-')}</td></tr>" for k, v in rows)
    evidence = "".join(
        f"<li>{_e(e.field)} = {_e(e.value)}: {_e(e.expert)} ({e.score:.2f}"
        f"{_e(_photo_words(e.photo, photos))})</li>"
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


def comp_html(comp: Comp, *, standalone: bool = True, budget: _Budget | None = None,
              counted: bool = False) -> str:
    listing = comp.listing
    src = _image_src(listing.image_url, budget or _Budget())
    if src:
        img = f"<img src='{_e(src)}' alt='{_e(listing.title)}' loading='lazy'>"
    else:
        img = ("<div class='noimg muted'>"
               + ("image not shown" if listing.image_url else "no image") + "</div>")
    title = _e(listing.title)
    if listing.url and urlsplit(listing.url).scheme in ("http", "https"):
        title = f"<a href='{_e(listing.url)}' target='_blank' rel='noopener noreferrer'>{title}</a>"
    similarity = "n/a" if comp.similarity is None else f"{comp.similarity:.3f}"
    flags = "".join(f"<div class='flag'>{_e(FLAG_WORDS.get(flag, flag))}</div>"
                    for flag in comp.flags)
    flags += "<div class='counted'>✓ counted in the price</div>" if counted else ""
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


def _photo_strip(photos: Sequence[PhotoInfo], budget: _Budget) -> str:
    """The item's photos in a row, each with its place and role."""
    if len(photos) <= 1:
        return ""
    cells = []
    for info in photos:
        src = _image_src(info.thumbnail, budget, side=STRIP_SIDE)
        role = info.role.value if info.role is not None else "?"
        found = "" if info.role_score is None else f" ({info.role_score:.2f})"
        words = f"photo {info.index + 1}: {role}{found}"
        image = (f"<img src='{_e(src)}' alt='{_e(words)}' style='height:{STRIP_SIDE}px'>"
                 if src else "")
        cells.append(f"<figure style='margin:0'>{image}<figcaption class='muted'>{_e(words)}"
                     "</figcaption></figure>")
    return f"<div style='display:flex;gap:8px;flex-wrap:wrap'>{''.join(cells)}</div>"


def analysis_html(analysis: Analysis, *, max_comps: int = 24) -> str:
    budget = _Budget()
    photo_src = _image_src(analysis.photo.thumbnail, budget, side=PHOTO_SIDE)
    photo = (
        f"<img src='{_e(photo_src)}' alt='the analysed photo' style='max-width:220px;"
        "height:auto;align-self:flex-start;border-radius:6px'>" if photo_src else ""
    )
    price = analysis.price
    if price.ok:
        price_text = (
            f"<p><b>{_e(price.estimate)} {_e(price.currency)}</b> (range {_e(price.low)}–"
            f"{_e(price.high)}, from {price.comps_used} comps)</p>"
        )
        basis = price_words(price)[1]
        price_text += f"<p class='muted'>basis: {_e(basis)}</p>" if basis else ""
    else:
        price_text = (f"<p><b>Not enough data</b> for a price ({price.comps_used} usable comps, "
                      f"{price.minimum_comps} needed)</p>")
    failed = "".join(f"<li class='flag'>{_e(k)}: {_e(v)}</li>"
                     for k, v in analysis.failed_experts.items())
    warnings = "".join(f"<li class='flag'>{_e(w)}</li>" for w in analysis.warnings)
    counted = counted_keys(price)
    grid = "".join(comp_html(c, standalone=False, budget=budget,
                             counted=c.listing.key in counted)
                   for c in analysis.comps[:max_comps])
    more = len(analysis.comps) - max_comps
    return (
        f"<div class='restyle'>{_STYLE}<div style='display:flex;gap:16px'>{photo}"
        f"<div>{identification_html(analysis.identification, analysis.photos)}{price_text}"
        f"{_price_strip(price, analysis.comps)}"
        + (f"<ul>{failed}{warnings}</ul>" if failed or warnings else "")
        + f"</div></div>{_photo_strip(analysis.photos, budget)}"
        f"<h4>Comps ({len(analysis.comps)})</h4><div class='grid'>{grid}</div>"
        + (f"<p class='muted'>and {more} more</p>" if more > 0 else "")
        + "</div>"
    )


# -- a page of many analyses (``restyle analyze --html``) -------------------------------

#: Longest side of a photo's thumbnail and of its comps' in a report, in pixels.
REPORT_PHOTO_SIDE = 96
REPORT_COMP_SIDE = 64
#: Comps shown per photo in a report, most alike first.
REPORT_COMPS = 3
#: Most characters of inline image data in one report row.
REPORT_ROW_BUDGET = 64 * 1024
_PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;font-size:14px;margin:1.5em}"
    "table{border-collapse:collapse;max-width:100%}td,th{border:1px solid #ccc;"
    "padding:4px 8px;text-align:left;vertical-align:top}"
    "th[data-sortable]{cursor:pointer;user-select:none;background:#f3f4f6}"
    "th[aria-sort=ascending]::after{content:' \\25B2'}"
    "th[aria-sort=descending]::after{content:' \\25BC'}"
    # Ids, titles and messages (an absolute path, say) wrap anywhere rather
    # than widen a table past the page.
    ".wrap{overflow-wrap:anywhere;word-break:break-word}.muted{color:#777}.flag{color:#b45309}"
    "svg{display:block;margin:1em 0;font-size:12px}"
    ".counted{outline:2px solid #15803d}.comps{display:flex;gap:4px}"
    "td img{display:block;object-fit:cover;background:#f4f4f4}"
)
# Sorts a table by the clicked header's column: numbers by value (a cell's
# data-sort), the rest as text; a second click reverses. No library, no CDN.
_SORT_SCRIPT = (
    "<script>document.querySelectorAll('table.sortable').forEach(function(t){"
    "t.querySelectorAll('th[data-sortable]').forEach(function(th,i){"
    "th.addEventListener('click',function(){"
    "var up=th.getAttribute('aria-sort')!=='ascending';"
    "t.querySelectorAll('th').forEach(function(h){h.removeAttribute('aria-sort')});"
    "th.setAttribute('aria-sort',up?'ascending':'descending');"
    "var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);"
    "function key(r){var c=r.cells[i];var v=c.getAttribute('data-sort');"
    "if(v===null)v=c.textContent.trim();var n=parseFloat(v);"
    "return v!==''&&isFinite(n)&&String(n)===v?n:v.toLowerCase();}"
    "rows.sort(function(a,b){var x=key(a),y=key(b);"
    "if(typeof x!==typeof y){x=String(x);y=String(y);}"
    "return (x<y?-1:x>y?1:0)*(up?1:-1);});"
    "rows.forEach(function(r){body.appendChild(r)});});});});</script>"
)


def page_html(title: str, body: str) -> str:
    """A whole HTML page: ``body`` (already escaped), the house style, and the
    script that sorts every ``table.sortable`` by a click on a header with
    ``data-sortable``. Self-contained: nothing is loaded from elsewhere."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_PAGE_STYLE}</style></head><body>\n"
        f"<h1>{_e(title)}</h1>\n{body}\n{_SORT_SCRIPT}\n</body></html>\n"
    )


def _img(src: str | None, alt: str, side: int, *, counted: bool = False) -> str:
    if src is None:
        return f"<span class='muted'>{'no image' if side else ''}</span>"
    mark = " class='counted'" if counted else ""
    title = alt + (" (counted in the price)" if counted else "")
    return (f"<img src='{_e(src)}' alt='{_e(alt)}' title='{_e(title)}' width='{side}' "
            f"height='{side}' loading='lazy' referrerpolicy='no-referrer'{mark}>")


def report_row_html(name: str, result: Analysis | str) -> str:
    """One photo's row of a report: its thumbnail, identification, price and
    basis, its best comps' thumbnails (those the price counts outlined), and
    what went wrong; or, for a photo that failed, why."""
    if isinstance(result, str):
        return (f"<tr><td></td><td class='wrap'>{_e(name)}</td>"
                + "<td></td>" * 5 + "<td data-sort='-1'>failed</td>" + "<td></td>" * 3
                + f"<td class='flag wrap'>{_e(result)}</td></tr>")
    budget = _Budget(REPORT_ROW_BUDGET)
    analysis, ident, price = result, result.identification, result.price
    photo = _img(_image_src(analysis.photo.thumbnail, budget, side=REPORT_PHOTO_SIDE),
                 name, REPORT_PHOTO_SIDE)
    counted = counted_keys(price)
    comps = "".join(
        _img(_image_src(c.listing.image_url, budget, side=REPORT_COMP_SIDE),
             f"{c.listing.title} ({c.listing.price or 'no price'})", REPORT_COMP_SIDE,
             counted=c.listing.key in counted)
        for c in analysis.comps[:REPORT_COMPS])
    text, basis = price_words(price)
    amount = f"{price.estimate} {price.currency}" if price.ok else "not enough data"
    problems = "; ".join(degradations(analysis))
    return (
        f"<tr><td>{photo}</td><td class='wrap'>{_e(name)}</td>"
        f"<td>{_e(ident.brand or '-')}</td><td class='wrap'>{_e(ident.product_name or '-')}</td>"
        f"<td>{_e(ident.category or '-')}</td>"
        f"<td data-sort='{ident.confidence:.4f}'>{ident.confidence:.2f}</td>"
        f"<td>{_e(price.comps_used)}</td>"
        f"<td data-sort='{_e(price.estimate if price.ok else -1)}' title='{_e(text)}'>"
        f"{_e(amount)}</td><td>{_e(f'{price.low}-{price.high}' if price.ok else '')}</td>"
        f"<td title='{_e(basis)}'>{_e(price.basis.value if price.ok and price.basis else '')}"
        f"</td><td><div class='comps'>{comps}</div></td>"
        f"<td class='flag wrap'>{_e(problems)}</td></tr>"
    )


#: The report's columns: (name, sortable).
_REPORT_COLUMNS = (("photo", False), ("file", True), ("brand", True), ("product", True),
                   ("category", True), ("confidence", True), ("comps used", True),
                   ("price", True), ("range", False), ("basis", True),
                   ("best comps", False), ("problems", True))


def report_html(rows: list[str], *, title: str, intro: str) -> str:
    """A page of report rows (:func:`report_row_html`) under ``intro`` (plain text)."""
    header = "".join(f"<th{' data-sortable' if sortable else ''}>{_e(name)}</th>"
                     for name, sortable in _REPORT_COLUMNS)
    body = (f"<p>{_e(intro)}</p><p class='muted'>Click a header to sort. Outlined comps are "
            "the ones the price counts.</p>"
            f"<table class='sortable'><thead><tr>{header}</tr></thead><tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>")
    return page_html(title, body)
