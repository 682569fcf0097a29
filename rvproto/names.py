"""Peer names: one canonical form, the same at the rendezvous (login, CONNECT) and at every
peer (its own name, each introduction, each pin), so that a name means one identity.

The canonical form of what a user typed is its Unicode NFKC normalization, case-folded
("Alice", "alice" and "alice" in full-width letters are one name). It must then be 1 to 64
bytes of UTF-8 made of letters, digits and combining marks plus ``-``, ``_`` and ``.``,
starting with a letter or a digit: no whitespace, control, format (zero-width) or symbol
characters.
Look-alikes are refused rather than told apart:

* letters of more than one script in one name ("paypal" with a Cyrillic "a"), except
  the mixes a language writes (Han with Hiragana and Katakana, Han with Hangul);
* a Cyrillic or Greek name written only with letters that look like Latin ones
  (Cyrillic "er", "o", "er" read "pop").
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "GATEWAY_NAME",
    "MAX_NAME_BYTES",
    "NAME_RULE",
    "InvalidName",
    "canonical_name",
    "is_canonical",
]

MAX_NAME_BYTES = 64
# The name of the rendezvous's own publish gateway (a peer inside the server process that
# carries outside connections to publishing peers): the server claims it for the gateway's
# key at every start, so that no one else can log in under it.
GATEWAY_NAME = "rendezvous.gateway"
NAME_RULE = (
    f"a peer name is 1 to {MAX_NAME_BYTES} bytes of letters, digits, '-', '_' and '.', "
    "starting with a letter or digit, in one script (case does not matter)"
)
_PUNCTUATION = frozenset("-_.")
_PLAIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)
_LETTER_CATEGORIES = frozenset({"Ll", "Lm", "Lo"})  # (no Lu or Lt after case folding)
_MARK_CATEGORIES = frozenset({"Mn", "Mc"})
# Scripts that one language writes together.
_COMPATIBLE = (frozenset({"CJK", "HIRAGANA", "KATAKANA"}), frozenset({"CJK", "HANGUL"}))
# Cyrillic and Greek letters that look like Latin ones (after case folding).
_LATIN_LOOKALIKES = frozenset(
    # Cyrillic a c e o p x y i j s d h q w v; Greek alpha epsilon iota kappa nu
    # omicron rho tau upsilon chi, lunate sigma
    "\u0430\u0441\u0435\u043e\u0440\u0445\u0443\u0456\u0458\u0455\u0501\u04bb\u051b\u051d\u0475"
    "\u03b1\u03b5\u03b9\u03ba\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7\u03f2"
)


class InvalidName(ValueError):
    """A name that has no canonical form; the message says why, in one line."""


def canonical_name(name: str) -> str:
    """The canonical form of ``name``; InvalidName if it has none."""
    if isinstance(name, str) and _PLAIN.fullmatch(name):
        return name  # (the common case, already canonical: no Unicode tables needed)
    if not isinstance(name, str) or not name:
        raise InvalidName(f"no peer name; {NAME_RULE}")
    shown = _shown(name)
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    size = len(folded.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise InvalidName(f"peer name {shown} is {size} bytes long; {NAME_RULE}")
    scripts: set[str] = set()
    for index, char in enumerate(folded):
        category = unicodedata.category(char)
        if category in _LETTER_CATEGORIES:
            scripts.add(_script(char))
        elif category == "Nd" or (index and (char in _PUNCTUATION or category in _MARK_CATEGORIES)):
            pass
        elif not index and (char in _PUNCTUATION or category in _MARK_CATEGORIES):
            raise InvalidName(f"peer name {shown} starts with {char!r}; {NAME_RULE}")
        else:
            raise InvalidName(f"peer name {shown} has {_describe(char)}; {NAME_RULE}")
    if len(scripts) > 1 and not any(scripts <= group for group in _COMPATIBLE):
        names = ", ".join(sorted(script.lower() for script in scripts))
        raise InvalidName(f"peer name {shown} mixes scripts ({names}); {NAME_RULE}")
    if scripts & {"CYRILLIC", "GREEK"} and all(
        char in _LATIN_LOOKALIKES for char in folded if unicodedata.category(char)[0] == "L"
    ):
        raise InvalidName(f"peer name {shown} looks like a Latin name; {NAME_RULE}")
    return folded


def is_canonical(name: object) -> bool:
    """Whether ``name`` is a name in its canonical form (what the server sends and signs)."""
    if not isinstance(name, str):
        return False
    try:
        return canonical_name(name) == name
    except InvalidName:
        return False


def _script(char: str) -> str:
    """The script of a letter, as the first word of its Unicode name (LATIN, CYRILLIC,
    CJK, ...): close enough to Unicode's Script property for telling scripts apart."""
    try:
        return unicodedata.name(char).split(" ", 1)[0]
    except ValueError:
        return "UNKNOWN"


def _describe(char: str) -> str:
    if char.isspace():
        return "whitespace"
    try:
        return f"U+{ord(char):04X} ({unicodedata.name(char).lower()})"
    except ValueError:
        return f"U+{ord(char):04X}"


def _shown(name: str) -> str:
    """The name for an error message: escaped (no terminal control), and cut if long."""
    cut = name if len(name) <= 24 else name[:20] + "..."
    return repr(cut)  # (repr escapes what is not printable)
