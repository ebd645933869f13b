"""A tiny HTML builder that escapes every text and attribute value: data can only ever become text.

Tag and attribute names are the code's own constants; anything else passed in (message contents, ids,
model names) is escaped, so a stored `<script>` or `<img onerror=...>` shows as the characters it is.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Union

VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})

Child = Union[str, "Markup", None, Iterable["Child"]]
Attr = str | int | float | bool | None


class Markup(str):
    """HTML made by this module (already escaped); any other `str` is text."""

    __slots__ = ()


def render(child: Child) -> Markup:
    """The HTML of a child: Markup as is, text escaped, None skipped, iterables joined."""
    if child is None:
        return Markup("")
    if isinstance(child, Markup):
        return child
    if isinstance(child, str):
        return Markup(html.escape(child, quote=True))
    return Markup("".join(render(item) for item in child))


def _attributes(attrs: dict[str, Attr]) -> str:
    parts = []
    for raw_name, value in attrs.items():
        if value is None or value is False:
            continue
        name = raw_name.rstrip("_").replace("_", "-")
        if value is True:
            parts.append(f" {name}")
        else:
            parts.append(f' {name}="{html.escape(str(value), quote=True)}"')
    return "".join(parts)


def el(tag: str, *children: Child, **attrs: Attr) -> Markup:
    """An element: `el("a", "text", href=url, class_="x", data_id=1)` (trailing `_` dropped, `_` to `-`)."""
    if tag in VOID:
        return Markup(f"<{tag}{_attributes(attrs)}>")
    return Markup(f"<{tag}{_attributes(attrs)}>{render(children)}</{tag}>")


def document(*children: Child) -> bytes:
    """A whole page, UTF-8 encoded."""
    return ("<!doctype html>\n" + render(children)).encode("utf-8")
