"""What a backtest measured, and how it reads: the report's values
(:class:`BacktestItem`, :class:`BacktestGroup`, :class:`BacktestReport`),
their summary, and the report as a table and as a page with SVG charts.
Running the backtest is :mod:`~restyle._evaluation.backtest`'s."""

from __future__ import annotations

import html
import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from restyle._display import page_html
from restyle._store.holdout import (
    NEAR_DUPLICATE_BITS,
    NEAR_DUPLICATE_COSINE,
    NEAR_DUPLICATE_LEVELS,
)
from restyle._types import Money, PriceBasis, PriceStatus, Value

__all__ = [
    "LABEL_CHARACTERS",
    "NOMINAL_COVERAGE",
    "BacktestGroup",
    "BacktestItem",
    "BacktestReport",
    "error_histogram",
    "render_html",
    "render_table",
    "summarise",
]

#: The share of realised prices a p25-p75 range holds if it is well calibrated.
NOMINAL_COVERAGE = 0.5
#: Bins of the number of comps an estimate rests on.
COMPS_BINS: tuple[tuple[str, int, float], ...] = (
    ("0-2", 0, 2), ("3-5", 3, 5), ("6-10", 6, 10), ("11+", 11, math.inf),
)
#: Bins of the identification's confidence, for calibration.
CONFIDENCE_BINS: tuple[tuple[str, float, float], ...] = (
    ("0.00-0.25", 0.0, 0.25), ("0.25-0.50", 0.25, 0.5), ("0.50-0.75", 0.5, 0.75),
    ("0.75-1.00", 0.75, 1.0),
)
#: Bins of the error histogram, in percent; the last is open.
ERROR_BINS = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)



@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestItem(Value):
    """One item's estimate against its realised price.

    ``error`` is the absolute percentage error of the headline estimate
    (``|estimate - realised| / realised``, 0.12 for 12 %), None when there
    was no estimate in the realised price's currency; ``inside`` whether the
    realised price lies in the estimate's range (``low`` to ``high``).
    ``held_out`` holds every listing key held out of its analysis;
    ``near_duplicates`` the catalog listings among them held out as the same
    picture in other bytes (by listing id).
    """

    listing_id: str
    title: str
    category: str | None
    realised: Money
    status: PriceStatus | None = None
    basis: PriceBasis | None = None
    currency: str | None = None
    estimate: Decimal | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    comps_used: int = 0
    confidence: float = 0.0
    error: float | None = None
    inside: bool | None = None
    held_out: tuple[str, ...] = ()
    near_duplicates: tuple[str, ...] = ()
    failure: str | None = None

    @property
    def priced(self) -> bool:
        """Whether the item got an estimate that can be compared with its price."""
        return self.error is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestGroup(Value):
    """The items of one category, comps bin or confidence bin, and how they fared."""

    by: str
    label: str
    items: int
    priced: int
    median_error: float | None
    coverage: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class BacktestReport(Value):
    """What a backtest measured.

    ``median_error`` is the median absolute percentage error of the priced
    items; ``coverage`` the share of their realised prices inside the
    estimate's range, to be read against ``nominal_coverage`` (the range is
    the weighted 25th to 75th percentile: half the prices, if calibrated).
    ``not_enough_data`` counts the items restyle gave no price for;
    ``near_duplicates`` the near-duplicates held out, all items together.
    """

    source: str
    items: tuple[BacktestItem, ...]
    count: int
    priced: int
    not_enough_data: int
    other_currency: int
    failed: int
    rejected: tuple[str, ...]
    median_error: float | None
    coverage: float | None
    nominal_coverage: float
    groups: tuple[BacktestGroup, ...]
    near_duplicates: int = 0

    def table(self) -> str:
        """The report as a plain-text table, as ``restyle backtest`` prints it."""
        return render_table(self)

    def html(self) -> str:
        """The report as a standalone HTML page with inline SVG charts."""
        return render_html(self)


# -- summarising ----------------------------------------------------------------------


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _coverage(items: Sequence[BacktestItem]) -> float | None:
    priced = [i for i in items if i.priced]
    return sum(1 for i in priced if i.inside) / len(priced) if priced else None


def _group(by: str, label: str, items: Sequence[BacktestItem]) -> BacktestGroup:
    priced = [i for i in items if i.priced]
    return BacktestGroup(
        by=by, label=label, items=len(items), priced=len(priced),
        median_error=_median([i.error for i in priced if i.error is not None]),
        coverage=_coverage(items),
    )


def summarise(items: Sequence[BacktestItem], *, source: str,
              rejected: Sequence[str] = ()) -> BacktestReport:
    """The report of backtested items: overall figures, then by category, by
    number of comps and by identification confidence (every bin shown)."""
    ran = [i for i in items if i.failure is None]
    groups: list[BacktestGroup] = []
    for category in sorted({i.category or "-" for i in items}):
        groups.append(_group("category", category,
                             [i for i in items if (i.category or "-") == category]))
    for label, fewest, most in COMPS_BINS:
        groups.append(_group("comps used", label,
                             [i for i in ran if fewest <= i.comps_used <= most]))
    for index, (label, low, high) in enumerate(CONFIDENCE_BINS):
        last = index == len(CONFIDENCE_BINS) - 1
        groups.append(_group("confidence", label, [
            i for i in ran if low <= i.confidence < high or (last and i.confidence == high)
        ]))
    priced = [i for i in items if i.priced]
    return BacktestReport(
        source=source,
        items=tuple(items),
        count=len(items),
        priced=len(priced),
        not_enough_data=sum(1 for i in ran if i.status is PriceStatus.NOT_ENOUGH_DATA),
        other_currency=sum(1 for i in ran if i.status is PriceStatus.OK and not i.priced),
        failed=len(items) - len(ran),
        rejected=tuple(rejected),
        median_error=_median([i.error for i in priced if i.error is not None]),
        coverage=_coverage(items),
        nominal_coverage=NOMINAL_COVERAGE,
        groups=tuple(groups),
        near_duplicates=sum(len(i.near_duplicates) for i in items),
    )


# -- rendering ------------------------------------------------------------------------


def _percent(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def _share(count: int, total: int) -> str:
    return f"{count} ({_percent(count / total, 0)})" if total else str(count)


#: How the report says which catalog listings are near-duplicates of an item.
NEAR_DUPLICATE_RULE = (f"vector cosine >= {NEAR_DUPLICATE_COSINE:.2f}, dHash within "
                       f"{NEAR_DUPLICATE_BITS}/64 bits, colours within "
                       f"{NEAR_DUPLICATE_LEVELS:g}/255")


def render_table(report: BacktestReport) -> str:
    """The plain-text report: the overall figures, then one row per group."""
    n = report.count
    lines = [
        f"Backtest: {n} items ({report.source})",
        f"  priced            {_share(report.priced, n)}",
        f"  not enough data   {_share(report.not_enough_data, n)}",
        f"  other currency    {_share(report.other_currency, n)}",
        f"  failed            {_share(report.failed, n)}",
        f"  median error      {_percent(report.median_error)}",
        f"  coverage          {_percent(report.coverage)} inside p25-p75 "
        f"(nominal {_percent(report.nominal_coverage, 0)})",
        f"  near-duplicates   {report.near_duplicates} held out ({NEAR_DUPLICATE_RULE})",
        "",
        f"  {'by':<11} {'group':<14} {'items':>5} {'priced':>6} {'median error':>12} "
        f"{'coverage':>8}",
    ]
    for g in report.groups:
        lines.append(f"  {g.by:<11} {g.label[:14]:<14} {g.items:>5} {g.priced:>6} "
                     f"{_percent(g.median_error):>12} {_percent(g.coverage, 0):>8}")
    if report.rejected:
        lines += ["", f"  {len(report.rejected)} rows rejected:"]
        lines += [f"    {reason}" for reason in report.rejected[:20]]
    return "\n".join(lines) + "\n"


#: Characters of a chart's label that fit left of its bars (12 px text, at most
#: 7 px a character); a longer label is cut there, whole in its tooltip.
LABEL_CHARACTERS = 20


def _svg_label(label: str) -> str:
    """A bar's label, cut to :data:`LABEL_CHARACTERS` with an ellipsis when
    longer, and always whole in a ``<title>`` (the tooltip)."""
    shown = label if len(label) <= LABEL_CHARACTERS else label[:LABEL_CHARACTERS - 1] + "…"
    return f"<title>{html.escape(label)}</title>{html.escape(shown)}"


def _svg_bars(title: str, bars: Sequence[tuple[str, float | None, str]], *, maximum: float,
              line: float | None = None, unit: Callable[[float], str] = str) -> str:
    """Horizontal bars (label, value, note) in inline SVG, with an optional
    dashed reference line at ``line``; a value of None is shown as ``-``.
    Labels longer than fits are cut (see :func:`_svg_label`)."""
    left, width, row = 7 * LABEL_CHARACTERS + 10, 360, 24
    height = 40 + row * len(bars)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" '
             f'height="{height}" role="img" aria-label="{html.escape(title)}">',
             f'<text x="0" y="16" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, value, note) in enumerate(bars):
        y = 30 + i * row
        length = 0.0 if maximum <= 0 or value is None else width * min(value, maximum) / maximum
        parts.append(f'<text x="{left - 6}" y="{y + 15}" text-anchor="end">'
                     f'{_svg_label(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" '
                     'fill="#4a7ab5"/>')
        parts.append(f'<text x="{left + length + 6:.1f}" y="{y + 15}">'
                     f'{html.escape("-" if value is None else unit(value))} '
                     f'{html.escape(note)}</text>')
    if line is not None and maximum > 0:
        x = left + width * line / maximum
        parts.append(f'<line x1="{x:.1f}" y1="26" x2="{x:.1f}" y2="{height - 4}" '
                     'stroke="#c0392b" stroke-dasharray="4 3"/>')
    parts.append("</svg>")
    return "\n".join(parts)


def _amount(amount: Decimal | None, currency: str | None) -> str:
    return "" if amount is None else html.escape(f"{amount} {currency or ''}".strip())


def _range(item: BacktestItem) -> str:
    if item.low is None or item.high is None:
        return ""
    return html.escape(f"{item.low}-{item.high} {item.currency or ''}".strip())


def error_histogram(report: BacktestReport) -> list[tuple[str, int]]:
    """How many priced items fall in each error bin (percent)."""
    errors = [100 * i.error for i in report.items if i.error is not None]
    bins: list[tuple[str, int]] = []
    for low, high in itertools.pairwise(ERROR_BINS):
        bins.append((f"{low}-{high}%", sum(1 for e in errors if low <= e < high)))
    bins.append((f"{ERROR_BINS[-1]}%+", sum(1 for e in errors if e >= ERROR_BINS[-1])))
    return bins


def _summary_html(report: BacktestReport) -> str:
    """The report's figures, as the items of a list."""
    n = report.count
    return (
        f"<li>{n} items; priced {_share(report.priced, n)}; not enough data "
        f"{_share(report.not_enough_data, n)}; other currency "
        f"{_share(report.other_currency, n)}; failed {_share(report.failed, n)}</li>"
        f"<li>median absolute error {_percent(report.median_error)}</li>"
        f"<li>coverage {_percent(report.coverage)} of realised prices inside p25-p75 "
        f"(nominal {_percent(report.nominal_coverage, 0)})</li>"
        "<li>held out of each item's analysis: the item, the listings with the same image "
        "bytes, and its near-duplicates in the catalog, the same picture recompressed or "
        f"resized ({html.escape(NEAR_DUPLICATE_RULE)}): {report.near_duplicates} "
        "near-duplicates held out</li>"
    )


def render_html(report: BacktestReport) -> str:
    """A standalone page: the figures, an error histogram and coverage charts."""
    histogram = error_histogram(report)
    charts = [_svg_bars("Absolute error of the estimate (items)",
                        [(label, count, "") for label, count in histogram],
                        maximum=max([c for _, c in histogram] or [0]) or 1)]
    for by in ("category", "comps used"):
        rows: list[tuple[str, float | None, str]] = [
            (g.label, g.coverage, f"(n={g.priced})") for g in report.groups if g.by == by]
        charts.append(_svg_bars(f"Coverage by {by} (dashed: nominal)", rows, maximum=1.0,
                                line=report.nominal_coverage,
                                unit=lambda v: f"{100 * v:.0f}%"))
    table = "".join(
        f"<tr><td>{html.escape(g.by)}</td><td class=\"wrap\">{html.escape(g.label)}</td>"
        f"<td>{g.items}</td>"
        f"<td>{g.priced}</td><td>{_percent(g.median_error)}</td>"
        f"<td>{_percent(g.coverage, 0)}</td></tr>"
        for g in report.groups
    )
    items = "".join(
        f"<tr><td class=\"wrap\">{html.escape(i.listing_id)}</td>"
        f"<td class=\"wrap\">{html.escape(i.title)}</td>"
        f"<td>{html.escape(str(i.realised))}</td><td>{_amount(i.estimate, i.currency)}</td>"
        f"<td>{_range(i)}</td>"
        f"<td>{_percent(i.error)}</td>"
        f"<td class=\"wrap\">{html.escape(i.failure or (i.basis.value if i.basis else ''))}"
        "</td></tr>"
        for i in report.items
    )
    summary = _summary_html(report)
    body = (
        f"<p>{html.escape(report.source)}</p><ul>{summary}</ul>\n"
        + "\n".join(charts)
        + "\n<h2>By group</h2><table class=\"sortable\"><tr><th data-sortable>by</th>"
        "<th data-sortable>group</th><th data-sortable>items</th>"
        "<th data-sortable>priced</th><th data-sortable>median error</th>"
        "<th data-sortable>coverage</th></tr>"
        f"{table}</table>\n<h2>Items</h2><table class=\"sortable\"><tr>"
        "<th data-sortable>id</th><th data-sortable>title</th><th data-sortable>sold for</th>"
        "<th data-sortable>estimate</th><th>range</th><th data-sortable>error</th>"
        "<th data-sortable>basis</th></tr>"
        f"{items}</table>"
    )
    return page_html("restyle backtest", body)
