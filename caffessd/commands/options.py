"""Parsing of option values shared by several subcommands.

Each parser raises CaffessdError with a message naming the option, which the
CLI prints as one line."""
from __future__ import annotations

from typing import List, Optional, Tuple

from caffessd.errors import CaffessdError
from caffessd.validate.memory import parse_bytes, set_limit


def parse_size(text: str, option: str = "--input") -> Tuple[int, int]:
    """'300' -> (300, 300); '320x240' -> (320, 240), as (width, height)."""
    try:
        values = [int(part) for part in text.lower().replace(",", "x").split("x")]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values) < 1:
        raise CaffessdError(f"{option} must be N or WIDTHxHEIGHT with positive integers (e.g. 300, 320x240), got '{text}'")
    return values[0], values[-1]


def parse_floats(text: str, option: str) -> List[float]:
    """'127.5' or '104,117,123' -> a list of floats."""
    try:
        return [float(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise CaffessdError(f"{option} expects comma-separated numbers, got '{text}'") from None


def optional_floats(text: Optional[str], option: str) -> Optional[List[float]]:
    return None if text is None else parse_floats(text, option)


def max_memory_option(command):
    """`--max-memory SIZE` for commands that shape a net: sets the process-wide
    limit of caffessd.validate.memory before the net is read."""
    import click

    def apply(ctx, param, value):
        if value is not None:
            set_limit(parse_bytes(value))
        return value

    return click.option("--max-memory", callback=apply, expose_value=False, is_eager=True,
                        help="refuse nets needing more memory than this (e.g. 2G; default: what the machine has)")(command)
