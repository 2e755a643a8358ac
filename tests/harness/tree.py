"""Paths into, and plain reads of, a registry's filesystem tree.

Deliberately independent of the `fsck` package: tests use it to check and to
corrupt trees without trusting the code under test.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from .registry import V2


def v2(root: Path) -> Path:
    return Path(root) / V2


def _hex(digest: str) -> tuple[str, str]:
    algorithm, hex_ = digest.split(":", 1)
    return algorithm, hex_


def blob_dir(root: Path, digest: str) -> Path:
    algorithm, hex_ = _hex(digest)
    return v2(root) / "blobs" / algorithm / hex_[:2] / hex_


def blob_data(root: Path, digest: str) -> Path:
    return blob_dir(root, digest) / "data"


def repo_dir(root: Path, repo: str) -> Path:
    return v2(root) / "repositories" / repo


def layer_link(root: Path, repo: str, digest: str) -> Path:
    return repo_dir(root, repo) / "_layers" / Path(*_hex(digest)) / "link"


def revision_dir(root: Path, repo: str, digest: str) -> Path:
    return repo_dir(root, repo) / "_manifests" / "revisions" / Path(*_hex(digest))


def revision_link(root: Path, repo: str, digest: str) -> Path:
    return revision_dir(root, repo, digest) / "link"


def tag_dir(root: Path, repo: str, tag: str) -> Path:
    return repo_dir(root, repo) / "_manifests" / "tags" / tag


def tag_current_link(root: Path, repo: str, tag: str) -> Path:
    return tag_dir(root, repo, tag) / "current" / "link"


def tag_index_link(root: Path, repo: str, tag: str, digest: str) -> Path:
    return tag_dir(root, repo, tag) / "index" / Path(*_hex(digest)) / "link"


def uploads_dir(root: Path, repo: str) -> Path:
    return repo_dir(root, repo) / "_uploads"


def _links_under(path: Path) -> frozenset[str]:
    """Digests named by `<alg>/<hex>/link` files under `path`, as `alg:hex` from the path."""
    if not path.is_dir():
        return frozenset()
    return frozenset(f"{link.parent.parent.name}:{link.parent.name}" for link in path.glob("*/*/link"))


def blob_digests(root: Path) -> frozenset[str]:
    blobs = v2(root) / "blobs"
    return frozenset(f"{data.parent.parent.parent.name}:{data.parent.name}" for data in blobs.glob("*/*/*/data"))


def layer_links(root: Path, repo: str) -> frozenset[str]:
    return _links_under(repo_dir(root, repo) / "_layers")


def revision_links(root: Path, repo: str) -> frozenset[str]:
    return _links_under(repo_dir(root, repo) / "_manifests" / "revisions")


def revision_dirs(root: Path, repo: str) -> frozenset[str]:
    """Every revision directory, linked or left empty by an API delete."""
    revisions = repo_dir(root, repo) / "_manifests" / "revisions"
    return frozenset(f"{d.parent.name}:{d.name}" for d in revisions.glob("*/*") if d.is_dir())


def tag_names(root: Path, repo: str) -> frozenset[str]:
    tags = repo_dir(root, repo) / "_manifests" / "tags"
    return frozenset(d.name for d in tags.iterdir()) if tags.is_dir() else frozenset()


def tag_current(root: Path, repo: str, tag: str) -> str:
    return tag_current_link(root, repo, tag).read_text()


def tag_index(root: Path, repo: str, tag: str) -> frozenset[str]:
    return _links_under(tag_dir(root, repo, tag) / "index")


def repositories(root: Path) -> frozenset[str]:
    """Directories holding `_layers` or `_manifests` (what 2.8 and 3.x consider repositories)."""
    top = v2(root) / "repositories"
    found = set()
    for marker in ("_layers", "_manifests"):
        found |= {str(p.parent.relative_to(top)) for p in top.rglob(marker) if p.is_dir()}
    return frozenset(found)


def copy_tree(src: Path, dst: Path) -> Path:
    """A full copy of a registry root (symlinks kept as links), for corrupting."""
    shutil.copytree(src, dst, symlinks=True)
    return Path(dst)


def copy_repositories(root: Path, namespaces: int, name: str = "copy{n}") -> Path:
    """Every repository of the tree copied again under each of `namespaces` namespaces (named by
    `name.format(n=...)`): a tree of many repositories sharing the same blobs. Returns repositories/."""
    repositories = v2(root) / "repositories"
    originals = sorted(p.name for p in repositories.iterdir())
    for n in range(namespaces):
        for original in originals:
            shutil.copytree(repositories / original, repositories / name.format(n=n) / original, symlinks=True)
    return repositories


def add_orphan_blobs(root: Path, count: int) -> list[str]:
    """`count` blobs nothing references, each whole (its digest is its content's), stored as the registry
    stores blobs: `blob-orphan` garbage. Returns their digests."""
    digests = []
    for n in range(count):
        data = f"orphan {n}\n".encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = blob_data(root, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digests.append(digest)
    return digests
