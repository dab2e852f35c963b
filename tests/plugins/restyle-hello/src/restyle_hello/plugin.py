"""Registers one expert and one marketplace, as a third-party plugin would."""

from __future__ import annotations

from collections.abc import Sequence

import restyle


class HelloExpert(restyle.Expert):
    name = "hello"

    def examine(self, photo: restyle.Photo) -> restyle.Opinion:
        return restyle.Opinion(
            expert=self.name,
            entities=(restyle.Observation(text="Hello Brand", score=0.9, facet="brand"),),
        )


class HelloMarketplace(restyle.Marketplace):
    name = "hello-market"

    def search(self, query: restyle.Query) -> Sequence[restyle.Listing]:
        return [
            restyle.Listing(marketplace=self.name, listing_id=str(i), title=f"{query.text} #{i}",
                            price=restyle.Money(amount=10 + i, currency="USD"))
            for i in range(3)
        ]


@restyle.hookimpl
def register_experts(register):
    register(HelloExpert())


@restyle.hookimpl
def register_marketplaces(register):
    register(HelloMarketplace())
