"""Comma-separated numbers, names and ranges from the command line, with one error rule.

A bad value raises :class:`~tpem_seg.errors.InputError` naming the flag, what it must be, and an
example, so every command reports it the same way (one line, exit code 2).
"""

from __future__ import annotations

from typing import Optional

from tpem_seg.errors import InputError


def parse_numbers(text: Optional[str], flag: str, n: Optional[int] = None, kind: type = float,
                  example: str = "", positive: bool = False) -> Optional[tuple]:
    """``"5,0.99,0.99"`` -> ``(5.0, 0.99, 0.99)``; None when the flag was not given.

    ``n``: how many values (None: any number, at least one); ``kind``: ``float`` or ``int``;
    ``positive``: every value must be > 0.
    """
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in text.split(","))
    except ValueError:
        values = ()
    if not values or (n is not None and len(values) != n) or (positive and min(values) <= 0):
        count = "" if n is None else f"{n} "
        what = ("positive " if positive else "") + ("integers" if kind is int else "numbers")
        raise InputError(f"{flag} {text!r} must be {count}comma-separated {what}"
                         f"{', e.g. ' + example if example else ''}")
    return values


def parse_names(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """``"vessel, neuron"`` -> ``("vessel", "neuron")`` (blanks dropped); None when not given."""
    return None if text is None else tuple(name.strip() for name in text.split(",") if name.strip())


def parse_choices(text: str, flag: str, allowed: tuple[str, ...]) -> list[str]:
    """Comma-separated names, each one of ``allowed``, at least one."""
    names = list(parse_names(text) or ())
    if not names or any(name not in allowed for name in names):
        raise InputError(f"{flag} {text!r}: choose from {', '.join(allowed)} (comma-separated)")
    return names


def parse_ranges(text: Optional[str], flag: str, n: int, example: str = "") -> Optional[tuple[slice, ...]]:
    """``"0:30,:256,5:"`` -> ``n`` slices (empty bounds allowed); None when not given."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        slices = tuple(slice(*[int(v) if v else None for v in part.split(":")]) for part in parts)
    except ValueError:
        slices = ()
    if len(slices) != n or any(part.count(":") != 1 for part in parts):
        raise InputError(f"{flag} {text!r} must be {n} comma-separated start:stop ranges"
                         f"{', e.g. ' + example if example else ''}")
    return slices
