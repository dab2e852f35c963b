"""Registers an expert whose name users could not type, then a good one."""

from __future__ import annotations

import restyle


class BadNameExpert(restyle.Expert):
    name = "Bad Name"

    def examine(self, photo: restyle.Photo) -> restyle.Opinion:
        return restyle.Opinion(expert=self.name)


class FineEyeExpert(restyle.Expert):
    name = "fine-eye"

    def examine(self, photo: restyle.Photo) -> restyle.Opinion:
        return restyle.Opinion(
            expert=self.name,
            entities=(restyle.Observation(text="Fine Brand", score=0.9, facet="brand"),),
        )


@restyle.hookimpl
def register_experts(register: restyle.RegisterExpert) -> None:
    register(BadNameExpert())
    register(FineEyeExpert())
