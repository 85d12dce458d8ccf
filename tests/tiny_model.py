"""Tests import the tiny model builder from here; it lives in the package (the `smoke` preset uses it)."""

from mucode.generation.tiny import CHAT_TEMPLATE, SPECIAL, build_tiny_chat_model


__all__ = ["CHAT_TEMPLATE", "SPECIAL", "build_tiny_chat_model"]
