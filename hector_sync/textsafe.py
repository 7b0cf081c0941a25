"""Text from C2 ITSM or Hector, made safe to show: escaped for a terminal, cut short for a preview.

Either system holds whatever people typed or imported, so a value may carry an escape sequence,
a carriage return, a line break or a bidi override that would forge or hide a line on the
operator's screen, or be 100 kB long.
"""

from __future__ import annotations

# What `text` escapes, as a polars (Rust) regex that finds the columns worth escaping: control,
# format, private-use, unassigned and separator characters but the plain space. Rust's Unicode
# tables are newer than Python's: a character assigned since is printable to this, and passes
# unescaped as the graphic character it is.
UNPRINTABLE = r"[\p{C}\p{Z}--\x20]"


def text(value: object) -> str:
    """Text from either system, with anything that could move the cursor, clear the screen or
    flip the writing direction shown as its escape, so a value cannot forge or hide a line."""
    s = "" if value is None else str(value)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def value(v: str | None) -> str:
    """A field value quoted, so stray spaces and '' show (∅: none); repr escapes the rest."""
    return "∅" if v is None else repr(v)


def shortened(s: str, limit: int) -> str:
    """`s` cut to its first `limit` characters, saying so and how long it was."""
    return s if len(s) <= limit else f"{s[:limit]}… ({len(s):,} characters)"
