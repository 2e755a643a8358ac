"""Generate a large, valid Docker Distribution (registry:2) filesystem tree for benchmarks.

The tree is written directly (no registry, no network) in the on-disk layout distribution
2.8 writes, under `<out>/docker/registry/v2/`:

    blobs/sha256/<2 hex>/<hex>/data                      manifests, configs, layers
    repositories/<name>/_layers/sha256/<hex>/link          config and layer links of the repository
    repositories/<name>/_manifests/revisions/sha256/<hex>/link
    repositories/<name>/_manifests/tags/<tag>/current/link
    repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link
    repositories/<name>/_uploads/                          empty, as 2.8 leaves it after every upload

Every link holds exactly `sha256:<64 hex>` with no newline. Every blob's digest is the
sha256 of its content, so `registry-fsck audit --verify` and `docker-registry
garbage-collect` both accept the tree.

Shape (all choices drawn from a `random.Random` seeded per repository, so a tree depends
only on its parameters, not on the number of worker processes):

- `repos` repositories with nested names `org<k>/team<j>/app<i>` (a few are
  `org<k>/app<i>`); every 25th `org<k>/team<j>` namespace is itself a repository too
  (a repository whose name is a prefix of others', as `a/b` and `a/b/c`).
- `tags` tags per repository (`latest`, `v1`, `v2`, ...). Each tag is pushed once, and with
  probability `repush` two or three more times: its `index/` then holds every manifest it
  ever named, `current` the last. `latest` often names the same manifest as the newest
  version tag (no new push).
- A push is an image manifest (60% Docker schema2, 40% OCI image manifest; real JSON, with
  correct sizes and digests) with its own config and 1..3 layers of its own on top of one
  shared base layer drawn (skewed) from a pool of `base_layers` layers shared by all
  repositories; or, with probability `multiarch`, an OCI image index with 2..3 platform
  children (each an OCI image manifest with config and layers) whose revision links sit in
  the same repository, as `skopeo copy --all` leaves them.
- With probability `untagged` a repository also holds one manifest pushed by digest only
  (a revision link, no tag).
- With probability `abandoned` a repository holds an abandoned push: a layer blob and its
  `_layers` link but no manifest (what garbage-collect deletes).
- For about `orphan_fraction` of each repository's blobs, an orphan blob with no link at all.
- Layer content is random bytes of `layer_min`..`layer_max` bytes; configs are real JSON.

Files per repository come to about 85 at `--tags 5`: `--repos 2000 --tags 5` makes ~180k
files (under a minute on 2 cores), `--repos 12000 --tags 5` (`--preset large`) about a million.

Written beside the tree, as `<out>/../synth.json` unless told otherwise: the parameters,
counts, and the digests every reader should agree on (`orphans`: the blobs no revision
link references, exactly what `garbage-collect --dry-run` lists as eligible).

    python benchmarks/synth.py OUT [--repos N] [--tags N] [--seed N] [--jobs N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import Pool

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

PLATFORMS = (
    {"architecture": "amd64", "os": "linux"},
    {"architecture": "arm64", "os": "linux", "variant": "v8"},
    {"architecture": "ppc64le", "os": "linux"},
)


@dataclass(frozen=True)
class Params:
    repos: int = 2000
    tags: int = 5
    seed: int = 1
    repush: float = 0.3
    multiarch: float = 0.1
    untagged: float = 0.2
    abandoned: float = 0.05
    orphan_fraction: float = 0.005
    base_layers: int = 64
    layer_min: int = 256
    layer_max: int = 4096
    bulk_images: int = 0
    bulk_layers: int = 100
    bulk_tagged: bool = True


# A pair of trees of one size, one with about a finding per file and one with almost none
# (`--findings many|few`): the same repositories, then per repository `bulk_images` units of
# 2 * bulk_layers + 6 files. Tagged (few), a unit is an image of bulk_layers layers: layer and
# config blobs, their _layers links, the manifest blob, its revision link and a tag (current and
# index). Untagged (many), the same layer and config blobs and links were uploaded but no manifest
# was put, and 4 orphan blobs take the place of the manifest's 4 files: every file is garbage,
# (bulk_layers + 5) blob-orphan and (bulk_layers + 1) layer-link-unused findings per unit.
_FEW_GARBAGE = {"repush": 0.0, "untagged": 0.0, "abandoned": 0.0, "orphan_fraction": 0.0}
PRESETS = {
    "smoke": Params(repos=6, tags=3, base_layers=8),
    "default": Params(),
    "large": Params(repos=12000, tags=5),
    "findings-few": Params(repos=1000, bulk_images=5, bulk_tagged=True, **_FEW_GARBAGE),
    "findings-many": Params(repos=1000, bulk_images=5, bulk_tagged=False, **_FEW_GARBAGE),
    "findings-smoke-few": Params(repos=6, tags=3, base_layers=8, bulk_images=2, bulk_layers=10, **_FEW_GARBAGE),
    "findings-smoke-many": Params(
        repos=6, tags=3, base_layers=8, bulk_images=2, bulk_layers=10, bulk_tagged=False, **_FEW_GARBAGE
    ),
}


@dataclass
class Counts:
    repositories: int = 0
    tags: int = 0
    revisions: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    files: int = 0
    dirs: int = 0
    orphans: list[str] = field(default_factory=list)
    used_base: set[str] = field(default_factory=set)

    def add(self, other: Counts) -> None:
        for name in ("repositories", "tags", "revisions", "blobs", "blob_bytes", "files", "dirs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.orphans.extend(other.orphans)
        self.used_base |= other.used_base


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Writer:
    """Writes files under v2 with as few syscalls as the layout allows."""

    def __init__(self, v2: str, counts: Counts) -> None:
        self.v2 = v2
        self.counts = counts
        self.made: set[str] = set()

    def mkdirs(self, relative: str) -> str:
        path = f"{self.v2}/{relative}"
        if relative in self.made:
            return path
        head, _, _ = relative.rpartition("/")
        if head and head not in self.made:
            self.mkdirs(head)
        try:
            os.mkdir(path)
            self.counts.dirs += 1
        except FileExistsError:
            pass
        self.made.add(relative)
        return path

    def file(self, directory: str, name: str, data: bytes) -> None:
        path = self.mkdirs(directory) + "/" + name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self.counts.files += 1

    def blob(self, data: bytes) -> str:
        """Store content as a blob; returns its hex digest."""
        hex_digest = sha256(data)
        self.file(f"blobs/sha256/{hex_digest[:2]}/{hex_digest}", "data", data)
        self.counts.blobs += 1
        self.counts.blob_bytes += len(data)
        return hex_digest

    def link(self, directory: str, hex_digest: str) -> None:
        self.file(directory, "link", f"sha256:{hex_digest}".encode("ascii"))


def descriptor(media_type: str, hex_digest: str, size: int, **extra) -> dict:
    return {"mediaType": media_type, "size": size, "digest": f"sha256:{hex_digest}", **extra}


def base_layer(seed: int, number: int, params: Params) -> bytes:
    rng = random.Random(f"{seed}/base/{number}")
    return rng.randbytes(rng.randint(params.layer_min, params.layer_max))


class RepositoryBuilder:
    def __init__(self, writer: Writer, params: Params, name: str, rng: random.Random, base: list[tuple[str, int]]):
        self.w = writer
        self.params = params
        self.name = name
        self.rng = rng
        self.base = base  # (hex, size) of the shared base layers, already stored
        self.root = f"repositories/{name}"
        self.layer_links: set[str] = set()
        self.pushes = 0

    def layer_link(self, hex_digest: str) -> None:
        if hex_digest not in self.layer_links:
            self.layer_links.add(hex_digest)
            self.w.link(f"{self.root}/_layers/sha256/{hex_digest}", hex_digest)

    def revision(self, hex_digest: str) -> None:
        self.w.link(f"{self.root}/_manifests/revisions/sha256/{hex_digest}", hex_digest)
        self.w.counts.revisions += 1

    def layer(self) -> tuple[str, int]:
        data = self.rng.randbytes(self.rng.randint(self.params.layer_min, self.params.layer_max))
        hex_digest = self.w.blob(data)
        self.layer_link(hex_digest)
        return hex_digest, len(data)

    def shared_layer(self) -> tuple[str, int]:
        # Skewed: a few base images are used by most repositories.
        number = min(int(self.rng.expovariate(8.0 / len(self.base))), len(self.base) - 1)
        hex_digest, size = self.base[number]
        self.w.counts.used_base.add(hex_digest)
        self.layer_link(hex_digest)
        return hex_digest, size

    def image(self, oci: bool, platform: dict) -> tuple[str, int, str]:
        """Config and layers, then the manifest: (hex, size, media type) of the manifest."""
        self.pushes += 1
        layers = [self.shared_layer()] + [self.layer() for _ in range(self.rng.randint(1, 3))]
        config = {
            **platform,
            "created": f"2024-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}T12:00:00Z",
            "config": {"Env": [f"APP={self.name}", f"BUILD={self.pushes}"], "Cmd": ["/bin/app"]},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{self.rng.randbytes(32).hex()}" for _ in layers]},
            "history": [{"created_by": f"layer {n}"} for n in range(len(layers))],
        }
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        config_hex = self.w.blob(config_bytes)
        self.layer_link(config_hex)
        config_type, layer_type, manifest_type = (
            (OCI_CONFIG, OCI_LAYER, OCI_MANIFEST) if oci else (DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST)
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": descriptor(config_type, config_hex, len(config_bytes)),
            "layers": [descriptor(layer_type, h, s) for h, s in layers],
        }
        # docker push writes indented JSON, skopeo compact JSON: the registry keeps the bytes as sent.
        raw = json.dumps(manifest, indent=3).encode() if not oci else json.dumps(manifest, separators=(",", ":")).encode()
        hex_digest = self.w.blob(raw)
        self.revision(hex_digest)
        return hex_digest, len(raw), manifest_type

    def push(self) -> str:
        """One push of a tag's content: an image, or a multi-arch index and its children."""
        if self.rng.random() < self.params.multiarch:
            children = [
                self.image(True, platform) for platform in PLATFORMS[: self.rng.randint(2, 3)]
            ]
            index = {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    descriptor(media_type, h, s, platform=platform)
                    for (h, s, media_type), platform in zip(children, PLATFORMS, strict=False)
                ],
            }
            raw = json.dumps(index, separators=(",", ":")).encode()
            hex_digest = self.w.blob(raw)
            self.revision(hex_digest)
            return hex_digest
        return self.image(self.rng.random() < 0.4, PLATFORMS[0])[0]

    def tag(self, tag: str, history: list[str]) -> None:
        for hex_digest in history:
            self.w.link(f"{self.root}/_manifests/tags/{tag}/index/sha256/{hex_digest}", hex_digest)
        self.w.link(f"{self.root}/_manifests/tags/{tag}/current", history[-1])
        self.w.counts.tags += 1

    def build(self) -> None:
        params, rng = self.params, self.rng
        blobs_before = self.w.counts.blobs
        self.w.counts.repositories += 1
        self.w.mkdirs(f"{self.root}/_uploads")
        versions = [f"v{n}" for n in range(1, params.tags)]
        newest: str | None = None
        for tag in versions:
            pushes = 1 if rng.random() >= params.repush else rng.randint(2, 3)
            history = [self.push() for _ in range(pushes)]
            self.tag(tag, history)
            newest = history[-1]
        if params.tags >= 1:
            if newest is not None and rng.random() < 0.5:
                history = [newest]  # `latest` moved along with the newest version tag
            else:
                pushes = 1 if rng.random() >= params.repush else rng.randint(2, 3)
                history = [self.push() for _ in range(pushes)]
            self.tag("latest", history)
        self.w.mkdirs(f"{self.root}/_manifests/tags")  # with no tags at all, 2.8's GC needs it
        if rng.random() < params.untagged:
            self.push()  # by digest only: a revision link, no tag
        if rng.random() < params.abandoned:
            hex_digest, _ = self.layer()  # a layer uploaded, its manifest never put
            self.w.counts.orphans.append(hex_digest)
        # Orphans with no link at all (a crash between upload and link, or an old GC bug).
        for _ in range(self.w.counts.blobs - blobs_before):
            if rng.random() < params.orphan_fraction:
                self.orphan()
        for number in range(params.bulk_images):
            self.bulk_image(number)

    def orphan(self) -> None:
        data = self.rng.randbytes(self.rng.randint(self.params.layer_min, self.params.layer_max))
        self.w.counts.orphans.append(self.w.blob(data))

    def bulk_image(self, number: int) -> None:
        """One unit of the findings pair: a tagged image of bulk_layers layers, or its upload abandoned."""
        layers = [self.layer() for _ in range(self.params.bulk_layers)]
        config = {**PLATFORMS[0], "rootfs": {"type": "layers", "diff_ids": []}, "bulk": f"{self.name}/{number}"}
        config_bytes = json.dumps(config).encode()
        config_hex = self.w.blob(config_bytes)
        self.layer_link(config_hex)
        if not self.params.bulk_tagged:
            self.w.counts.orphans.extend(h for h, _ in layers)
            self.w.counts.orphans.append(config_hex)
            for _ in range(4):  # in place of the manifest blob, its revision link and the tag's two links
                self.orphan()
            return
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptor(DOCKER_CONFIG, config_hex, len(config_bytes)),
            "layers": [descriptor(DOCKER_LAYER, h, s) for h, s in layers],
        }
        hex_digest = self.w.blob(json.dumps(manifest, indent=3).encode())
        self.revision(hex_digest)
        self.tag(f"bulk{number}", [hex_digest])


def repository_names(params: Params) -> list[str]:
    rng = random.Random(f"{params.seed}/names")
    names = []
    namespaces = max(1, params.repos // 40)
    for i in range(params.repos):
        org = rng.randrange(max(1, namespaces // 4))
        if rng.random() < 0.1:
            names.append(f"org{org}/app{i}")
        else:
            names.append(f"org{org}/team{rng.randrange(namespaces)}/app{i}")
    # Some namespaces are repositories themselves.
    parents = sorted({name.rpartition("/")[0] for name in names if name.count("/") == 2})
    names.extend(parents[::25])
    return names


def _build_share(args: tuple[str, Params, list[str], list[tuple[str, int]], int, int]) -> Counts:
    v2, params, names, base, worker, workers = args
    counts = Counts()
    writer = Writer(v2, counts)
    writer.made.update({"blobs", "blobs/sha256", "repositories"})  # fan-out dirs: made on first use
    for number in range(worker, len(names), workers):
        rng = random.Random(f"{params.seed}/repo/{number}")
        RepositoryBuilder(writer, params, names[number], rng, base).build()
    return counts


def generate(out: str, params: Params, jobs: int | None = None, meta_path: str | None = None) -> dict:
    """Write the tree under `out` (the registry's rootdirectory, which must not exist yet); return its facts."""
    started = time.perf_counter()
    v2 = os.path.join(out, "docker", "registry", "v2")
    os.makedirs(os.path.join(v2, "repositories"))
    os.makedirs(os.path.join(v2, "blobs", "sha256"))
    counts = Counts(dirs=7)  # out, docker, registry, v2, repositories, blobs, sha256
    writer = Writer(v2, counts)
    writer.made.update({"blobs", "blobs/sha256", "repositories"})
    base = []
    for number in range(params.base_layers):
        data = base_layer(params.seed, number, params)
        base.append((writer.blob(data), len(data)))
    names = repository_names(params)
    workers = max(1, min(jobs or os.cpu_count() or 1, len(names)))
    shares = [(v2, params, names, base, worker, workers) for worker in range(workers)]
    if workers == 1:
        results = [_build_share(shares[0])]
    else:
        with Pool(workers) as pool:
            results = pool.map(_build_share, shares)
    for result in results:
        counts.add(result)
    # Base layers no repository happened to draw are orphans too.
    counts.orphans.extend(h for h, _ in base if h not in counts.used_base)
    facts = {
        "format": "registry-fsck/synth/1",
        "params": asdict(params),
        "root": os.path.abspath(out),
        "seconds": round(time.perf_counter() - started, 2),
        **{k: v for k, v in asdict(counts).items() if k not in ("orphans", "used_base")},
        "orphans": sorted(f"sha256:{h}" for h in counts.orphans),
    }
    meta_path = meta_path or os.path.join(os.path.dirname(os.path.abspath(out)), "synth.json")
    with open(meta_path, "w") as handle:
        json.dump(facts, handle, indent=1)
    return facts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the rootdirectory to create (must not exist)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument(
        "--findings", choices=("few", "many"),
        help="the findings pair at ~1M files: --preset findings-few or findings-many (~1M findings)",
    )
    parser.add_argument("--repos", type=int)
    parser.add_argument("--tags", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--layer-max", type=int, help="largest layer in bytes (default 4096)")
    parser.add_argument("--jobs", type=int, help="worker processes (default: all cores)")
    args = parser.parse_args(argv)
    if args.findings:
        args.preset = f"findings-{args.findings}"
    params = params_from(args.preset, repos=args.repos, tags=args.tags, seed=args.seed, layer_max=args.layer_max)
    if os.path.exists(args.out):
        sys.exit(f"{args.out}: exists; give a new directory")
    facts = generate(args.out, params, args.jobs)
    print(
        f"{facts['files']} files, {facts['dirs']} dirs, {facts['repositories']} repositories, "
        f"{facts['tags']} tags, {facts['revisions']} revisions, {facts['blobs']} blobs "
        f"({facts['blob_bytes'] / 2**20:.1f} MiB), {len(facts['orphans'])} orphans in {facts['seconds']} s"
    )


def params_from(preset: str, **overrides) -> Params:
    base = asdict(PRESETS[preset])
    base.update({k: v for k, v in overrides.items() if v is not None})
    if base["layer_min"] > base["layer_max"]:
        base["layer_min"] = base["layer_max"]
    return Params(**base)


if __name__ == "__main__":
    main()
