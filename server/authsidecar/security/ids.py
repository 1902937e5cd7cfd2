"""Record identifiers. Default: Better Auth's format, 32 random characters from [A-Za-z0-9]. Configurable with
``[schema] generate_id``: "uuid" (v4), "uuid7" (time-ordered), "package.module:function" (called with the
model name, imported once at start-up), or false / "serial" (the database assigns ids: an empty id here)."""

from __future__ import annotations

import importlib
import os
import secrets
import string
import time
import uuid
from collections.abc import Callable

__all__ = ["ID_ALPHABET", "ID_LENGTH", "IdGenerator", "generate_id", "id_generator", "uuid7"]

ID_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 32

IdGenerator = Callable[[str], str]  # model name -> new id


_UNBIASED = 256 - 256 % len(ID_ALPHABET)  # random bytes below this map uniformly onto the alphabet (248 for 62)


def generate_id(length: int = ID_LENGTH) -> str:
    """A uniformly random identifier: random bytes mapped onto the alphabet, those that would bias it dropped
    (one read of the system's random source, where ``secrets.choice`` makes one per character)."""
    chars: list[str] = []
    while len(chars) < length:
        chars += [ID_ALPHABET[b % len(ID_ALPHABET)] for b in secrets.token_bytes(length + 8) if b < _UNBIASED]
    return "".join(chars[:length])


def uuid7() -> str:
    """An RFC 9562 version 7 UUID: 48-bit Unix milliseconds, then 74 random bits."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # variant
    return str(uuid.UUID(int=value))


def id_generator(strategy: str) -> IdGenerator:
    """The generator for a ``generate_id`` setting; raises ValueError when a custom function cannot be used."""
    if strategy == "random":
        return lambda _model: generate_id()
    if strategy == "uuid":
        return lambda _model: str(uuid.uuid4())
    if strategy == "uuid7":
        return lambda _model: uuid7()
    if strategy in ("false", "serial"):
        return lambda _model: ""  # the database assigns it at insert (storage returns it)
    module_name, _, name = strategy.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {strategy}: {exc}") from None
    if not callable(function):
        raise ValueError(f"{strategy} is not callable")

    def custom(model: str) -> str:
        value = function(model)
        if not isinstance(value, str | int) or isinstance(value, bool) or not str(value):
            raise TypeError(f"{strategy} returned {type(value).__name__}, expected a non-empty string")
        return str(value)

    return custom
