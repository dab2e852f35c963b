"""One hook marked, one left unmarked, and one unmarked and misspelled."""

from __future__ import annotations

from collections.abc import Sequence

import restyle


class UnmarkedExpert(restyle.Expert):
    name = "unmarked-eye"

    def examine(self, photo: restyle.Photo) -> restyle.Opinion:
        return restyle.Opinion(expert=self.name)


class MarkedMarket(restyle.Marketplace):
    name = "marked-market"

    def search(self, query: restyle.Query) -> Sequence[restyle.Listing]:
        return []


def register_experts(register: restyle.RegisterExpert) -> None:
    register(UnmarkedExpert())


def register_synthesizer(register: restyle.RegisterSynthesizer) -> None:
    raise AssertionError("never called")


@restyle.hookimpl
def register_marketplaces(register: restyle.RegisterMarketplace) -> None:
    register(MarkedMarket())
