"""Declared under the entry point name "hello", like restyle-hello's plugin."""

from __future__ import annotations

import restyle


class HelloAgainExpert(restyle.Expert):
    name = "hello-again"

    def examine(self, photo: restyle.Photo) -> restyle.Opinion:
        return restyle.Opinion(expert=self.name)


@restyle.hookimpl
def register_experts(register: restyle.RegisterExpert) -> None:
    register(HelloAgainExpert())
