"""The one matcher for repository names and tags (`rm --glob`, `retain`'s `repos` and `keep-tags`). Pure.

Exact by default: `test` is `test`, never `testxxx` nor `test/sub`. A glob is shell-style and
anchored: it matches the whole name, never a part of it (deckschrubber's `-repo test` matching
`testxxx` is the surprise this avoids).

- In repository names `*` and `?` stay within one path component; `**` crosses components
  (`team/**` is everything below `team`, `**/cache` is `cache` at any depth, `team` included
  in neither sense: `team/**` needs something below it).
- In tags (which have no `/`) `*` matches any characters.
- `[abc]`, `[a-z]` and `[!abc]` are character classes, as in the shell.
Digests are never patterns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

GLOB_CHARACTERS = frozenset("*?[")


class PatternError(ValueError):
    pass


def is_glob(text: str) -> bool:
    return any(c in GLOB_CHARACTERS for c in text)


@dataclass(frozen=True, slots=True)
class Matcher:
    """A name or an anchored glob, compiled once; `matches(name)` is the only question it answers."""

    text: str
    glob: bool
    _regex: re.Pattern[str] | None

    def matches(self, name: str) -> bool:
        if self._regex is None:
            return name == self.text
        return self._regex.fullmatch(name) is not None

    def __str__(self) -> str:
        return self.text


def repository_matcher(text: str, glob: bool = False) -> Matcher:
    return Matcher(text, glob, _compile(text, in_repository=True) if glob else None)


def tag_matcher(text: str, glob: bool = False) -> Matcher:
    return Matcher(text, glob, _compile(text, in_repository=False) if glob else None)


def matching(matcher: Matcher, names: Iterable[str]) -> list[str]:
    """The names `matcher` matches, in the order given."""
    return [name for name in names if matcher.matches(name)]



def _compile(pattern: str, in_repository: bool) -> re.Pattern[str]:
    one_char = "[^/]" if in_repository else "."
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if in_repository and pattern.startswith("**", i):
                at_start = i == 0 or pattern[i - 1] == "/"
                j = i + 2
                if at_start and j < n and pattern[j] == "/":
                    out.append("(?:.*/)?")  # `**/`: any number of leading components, none included
                    i = j + 1
                    continue
                out.append(".*")
                i = j
                continue
            while i < n and pattern[i] == "*":  # `**` in a tag is `*`
                i += 1
            out.append(one_char + "*")
            continue
        if c == "?":
            out.append(one_char)
        elif c == "[":
            end, klass = _character_class(pattern, i, in_repository)
            out.append(klass)
            i = end
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _character_class(pattern: str, start: int, in_repository: bool) -> tuple[int, str]:
    """`[...]` at `start`: where it ends and its regular expression; an unclosed `[` is an error."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    body_start = i
    if i < len(pattern) and pattern[i] == "]":  # a `]` first is a member, as in the shell
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 1
    if i >= len(pattern):
        raise PatternError(f"{pattern!r}: unclosed [")
    body = pattern[body_start:i]
    escaped = "".join("\\" + ch if ch in "\\^[]" else ch for ch in body)
    if negate:  # a negated class in a repository name still never crosses a component
        return i + 1, f"[^{escaped}{'/' if in_repository else ''}]"
    if in_repository:
        return i + 1, f"(?!/)[{escaped}]"
    return i + 1, f"[{escaped}]"


# What a pattern may hold: the characters of a name (or tag) and the glob ones.
_REPOSITORY_COMPONENT_PATTERN = re.compile(r"[a-z0-9._\-*?\[\]!]+")
_TAG_PATTERN = re.compile(r"[A-Za-z0-9_.\-*?\[\]!]{1,128}")


def is_repository_pattern(text: str) -> bool:
    return all(_REPOSITORY_COMPONENT_PATTERN.fullmatch(c) for c in text.split("/"))


def is_tag_pattern(text: str) -> bool:
    return _TAG_PATTERN.fullmatch(text) is not None
