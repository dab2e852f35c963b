"""``restyle draft``: the photos the arguments name (or one item's photos)
analysed, and each analysis made a listing draft, printed readably, as JSON
lines or as the bulk-upload CSV (docs/listing.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from restyle._errors import RestyleError
from restyle._listing import ListingDraft, PriceStrategy, drafts_csv
from restyle._listing.text import length
from restyle._progress import status_line
from restyle.cli.analyze import _item_input, _photo_inputs, _without_missing_catalog
from restyle.cli.common import make_engine, pricing_rules, split_names

__all__ = ["add_draft_command", "draft_command"]


def add_draft_command(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``draft`` command's arguments."""
    draft = sub.add_parser(
        "draft", parents=[common],
        help="make a listing draft of each photo, or of one item's photos (--item)",
        description="Analyze the photos and make each a listing draft: title, eBay category "
        "and item specifics (with EBAY_CLIENT_ID and EBAY_CLIENT_SECRET; a generic list "
        "offline), condition, price and description, and what is still to settle.",
        epilog="Exit status: 0 when every photo was drafted, 1 when any failed, 2 for a usage "
        "error.")
    draft.add_argument("photo", nargs="+", metavar="PHOTO",
                       help="photo files, folders or quoted globs, as for 'restyle analyze'")
    draft.add_argument("--item", action="store_true",
                       help="the PHOTOs are photos of ONE item (ROLE=PATH gives a role: "
                       "whole, tag, label, detail, flaw): one draft")
    draft.add_argument("--recursive", action="store_true",
                       help="also take the photos in a folder's subfolders")
    draft.add_argument("--price", choices=[s.value for s in PriceStrategy], default="market",
                       help="quick (near the low end), market (the estimate, the default) "
                       "or patient (near the high end)")
    draft.add_argument("--condition", metavar="TEXT",
                       help="the item's condition when the photos do not show it, such as "
                       "'new with tags' or 'used'")
    draft.add_argument("--marketplace-id", metavar="ID",
                       help="the eBay marketplace (default: $EBAY_MARKETPLACE_ID, else EBAY_US)")
    draft.add_argument("--offline", action="store_true",
                       help="ask eBay nothing, even with its keys set")
    draft.add_argument("--json", action="store_true",
                       help='print one JSON line per photo: {"photo": PATH, "draft": {...}} or '
                       '{"photo": PATH, "error": MESSAGE}')
    draft.add_argument("--csv", metavar="FILE",
                       help="also write the drafts as eBay's bulk-upload CSV to FILE")
    draft.add_argument("--experts", metavar="A,B", help="as for 'restyle analyze'")
    draft.add_argument("--synthesizer", metavar="NAME", help="as for 'restyle analyze'")
    draft.add_argument("--marketplaces", metavar="A,B", help="as for 'restyle analyze'")


def readable(draft: ListingDraft) -> str:
    """The draft as a few lines a reseller reads at a glance."""
    category = draft.category
    lines = [f"{draft.title or '(no title)'}  [{length(draft.title)}/80]"]
    if category.category_id:
        where = " > ".join((*category.path, category.name or ""))
        lines.append(f"  category   {category.category_id} {where}")
    price = draft.price
    lines.append(f"  price      {price.amount} ({price.strategy.value})" if price.amount
                 else "  price      none")
    condition = draft.condition_name or draft.condition.value
    lines.append(f"  condition  {condition}"
                 + (f" ({draft.condition_id})" if draft.condition_id else "")
                 + (f": {draft.condition_description}" if draft.condition_description else ""))
    for aspect in draft.aspects:
        lines.append(f"  {aspect.name + ':':<10} {', '.join(aspect.values)}")
    if draft.problems:
        lines.append("  to settle:")
        lines.extend(f"    - {problem}" for problem in draft.problems)
    return "\n".join(lines) + "\n"


def draft_command(args: argparse.Namespace) -> int:
    """Analyze and draft every photo (or the one item) with one Engine."""
    import json

    inputs = [_item_input(args.photo)] if args.item else _photo_inputs(args)[0]
    experts, marketplaces = _without_missing_catalog(
        args, split_names(args.experts), split_names(args.marketplaces))
    engine = make_engine(args, experts=experts, synthesizer=args.synthesizer,
                         marketplaces=marketplaces, **pricing_rules(args))
    with status_line("Loading the model", enabled=None):
        engine.warm_up()
    drafts: list[ListingDraft] = []
    failed = 0
    for item in inputs:
        try:
            if item.source is None:
                raise RestyleError(item.problem or "no photo")
            draft = engine.draft(engine.analyze(item.source), price=args.price,
                                 marketplace_id=args.marketplace_id, condition=args.condition,
                                 offline=args.offline)
        except RestyleError as exc:
            failed += 1
            if args.json:
                print(json.dumps({"photo": item.name, "error": str(exc)}))
            else:
                print(f"{item.name}: {exc}", file=sys.stderr)
            continue
        drafts.append(draft)
        if args.json:
            print(json.dumps({"photo": item.name, "draft": draft.to_dict()}))
        else:
            sys.stdout.write(("" if len(inputs) == 1 else f"{item.name}\n") + readable(draft))
    if args.csv:
        Path(args.csv).write_text(drafts_csv(drafts), encoding="utf-8", newline="")
    return 1 if failed else 0
