"""The one matcher of names and tags: exact by default, anchored shell globs with --glob."""

import pytest

from fsck.match import PatternError, is_glob, matching, repository_matcher, tag_matcher

NAMES = ["test", "testxxx", "xtest", "test/sub", "test/sub/deep", "team/a", "team/a/b", "team", "cache", "x/cache",
         "x/y/cache", "cachex", "a.b", "axb"]


@pytest.mark.parametrize(("pattern", "glob", "expected"), [
    # Exact names: never a part of a name, never a prefix (deckschrubber's `-repo test` matched `testxxx`).
    ("test", False, ["test"]),
    ("test", True, ["test"]),
    ("test/sub", False, ["test/sub"]),
    ("test*", False, []),  # without --glob a `*` is a character, and no name holds one
    # `*` stays within one component.
    ("test*", True, ["test", "testxxx"]),
    ("*test", True, ["test", "xtest"]),
    ("test/*", True, ["test/sub"]),
    ("*", True, ["test", "testxxx", "xtest", "team", "cache", "cachex", "a.b", "axb"]),
    # `**` crosses components; `team/**` needs something below team.
    ("test/**", True, ["test/sub", "test/sub/deep"]),
    ("team/**", True, ["team/a", "team/a/b"]),
    ("**", True, NAMES),
    # `**/x` is x at any depth, x itself included.
    ("**/cache", True, ["cache", "x/cache", "x/y/cache"]),
    ("x/**/cache", True, ["x/cache", "x/y/cache"]),
    # `.` is a character, not "any character"; `?` is one character within a component.
    ("a.b", True, ["a.b"]),
    ("a?b", True, ["a.b", "axb"]),
    ("test?sub", True, []),
    # Classes, and negated classes, never match `/`.
    ("[tx]est", True, ["test"]),
    ("[!t]test", True, ["xtest"]),
    ("test[!x]sub", True, []),
])
def test_repository_patterns(pattern, glob, expected):
    assert matching(repository_matcher(pattern, glob), NAMES) == expected


TAGS = ["latest", "latest-old", "v1", "v1.0", "v1x0", "v10", "release-1", "sha256-abc.sig", "1.0"]


@pytest.mark.parametrize(("pattern", "glob", "expected"), [
    ("latest", False, ["latest"]),
    ("latest", True, ["latest"]),  # anchored: never `latest-old`
    ("v1", True, ["v1"]),
    ("v1*", True, ["v1", "v1.0", "v1x0", "v10"]),
    ("v1.0", True, ["v1.0"]),  # a tag that looks like a regular expression is matched literally
    ("v1.?", True, ["v1.0"]),
    ("*", True, TAGS),
    ("**", True, TAGS),  # in tags `**` is `*`
    ("*.sig", True, ["sha256-abc.sig"]),
    ("release-*", True, ["release-1"]),
    ("v[0-9]*", True, ["v1", "v1.0", "v1x0", "v10"]),
    ("[!v]*", True, ["latest", "latest-old", "release-1", "sha256-abc.sig", "1.0"]),
    ("v*", False, []),  # exact: `v*` is no tag name here
])
def test_tag_patterns(pattern, glob, expected):
    assert matching(tag_matcher(pattern, glob), TAGS) == expected


def test_tag_star_crosses_every_character_a_repository_star_does_not():
    assert tag_matcher("a*b", True).matches("a.x-y_b")
    assert not repository_matcher("a*b", True).matches("a/b")
    assert repository_matcher("a**b", True).matches("a/x/b")


def test_an_unclosed_class_is_an_error():
    with pytest.raises(PatternError, match="unclosed"):
        repository_matcher("test[", True)
    assert repository_matcher("test[", False).matches("test[")  # exact: nothing is special


@pytest.mark.parametrize(("text", "expected"), [("test", False), ("t*", True), ("t?", True), ("[ab]", True),
                                                ("a.b", False)])
def test_is_glob(text, expected):
    assert is_glob(text) is expected
