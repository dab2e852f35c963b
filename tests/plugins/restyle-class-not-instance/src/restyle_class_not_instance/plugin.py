"""Registers a marketplace class where an instance belongs, then a good instance."""

from __future__ import annotations

from collections.abc import Sequence

import restyle


class ClassMarket(restyle.Marketplace):
    name = "class-market"

    def search(self, query: restyle.Query) -> Sequence[restyle.Listing]:
        return []


class InstanceMarket(restyle.Marketplace):
    name = "instance-market"

    def search(self, query: restyle.Query) -> Sequence[restyle.Listing]:
        return [restyle.Listing(marketplace=self.name, listing_id="1", title=query.text)]


@restyle.hookimpl
def register_marketplaces(register: restyle.RegisterMarketplace) -> None:
    register(ClassMarket)  # type: ignore[arg-type]  # the mistake under test
    register(InstanceMarket())
