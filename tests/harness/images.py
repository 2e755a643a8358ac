"""Deterministic image builder: seeded layers, configs, manifests and OCI layouts.

Everything is a pure function of its seed, so the same seed gives byte-identical
blobs and therefore identical digests on every machine.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

OCI_LAYOUT_VERSION = "1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"

MANIFEST_TYPES = (
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_LIST,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA1,
)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})

# A fixed timestamp keeps configs (and so their digests) independent of the clock.
CREATED = "2024-01-01T00:00:00Z"
TAR_MTIME = 1704067200


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Blob:
    media_type: str
    data: bytes
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", sha256(self.data))

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: object) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True, slots=True)
class Layer:
    blob: Blob  # the gzip'd tar as stored
    diff_id: str  # digest of the uncompressed tar

    @property
    def digest(self) -> str:
        return self.blob.digest


@dataclass(frozen=True, slots=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def as_dict(self) -> dict:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


@dataclass(frozen=True, slots=True)
class Image:
    config: Blob
    layers: tuple[Layer, ...]
    manifest: Blob
    platform: Platform

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *(layer.blob for layer in self.layers), self.manifest)


@dataclass(frozen=True, slots=True)
class Index:
    images: tuple[Image, ...]
    manifest: Blob

    @property
    def digest(self) -> str:
        return self.manifest.digest

    def blobs(self) -> tuple[Blob, ...]:
        return (*(b for image in self.images for b in image.blobs()), self.manifest)


def _rng(*parts: object) -> random.Random:
    # str seeds are hashed with SHA-512 by `random`: stable across runs and machines.
    return random.Random("/".join(map(str, parts)))


def _tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = TAR_MTIME
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_layer(seed: int | str, size: int = 2048, files: int = 2) -> Layer:
    """A gzip'd tar of `files` random files, about `size` bytes in all."""
    rng = _rng("layer", seed)
    members = [(f"data/{seed}/file{i}.bin", rng.randbytes(max(1, size // files))) for i in range(files)]
    raw = _tar(members)
    return Layer(Blob(OCI_LAYER, gzip.compress(raw, compresslevel=6, mtime=0)), sha256(raw))


def make_config(seed: int | str, layers: Sequence[Layer], platform: Platform) -> Blob:
    config = {
        **platform.as_dict(),
        "created": CREATED,
        "config": {"Cmd": ["/bin/true"], "Labels": {"seed": str(seed)}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        # One history entry per layer: skopeo needs them to write schema1.
        "history": [{"created": CREATED, "created_by": f"layer {i} of {seed}"} for i in range(len(layers))],
    }
    return Blob(OCI_CONFIG, canonical_json(config))


def image_manifest(
    config: Blob,
    layers: Sequence[Blob],
    *,
    artifact_type: str | None = None,
    subject: dict | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Blob:
    body: dict = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [blob.descriptor() for blob in layers],
    }
    if artifact_type:
        body["artifactType"] = artifact_type
    if subject:
        body["subject"] = subject
    if annotations:
        body["annotations"] = dict(annotations)
    return Blob(OCI_MANIFEST, canonical_json(body))


def make_image(
    seed: int | str,
    layers: int = 2,
    *,
    shared: Sequence[Layer] = (),
    platform: Platform = Platform(),
    layer_size: int = 2048,
) -> Image:
    """An image whose `shared` layers come first (a common base), then `layers` own ones."""
    own = tuple(make_layer(f"{seed}.{i}", layer_size) for i in range(layers))
    all_layers = (*shared, *own)
    config = make_config(seed, all_layers, platform)
    manifest = image_manifest(config, [layer.blob for layer in all_layers])
    return Image(config, all_layers, manifest, platform)


DEFAULT_PLATFORMS = (Platform("linux", "amd64"), Platform("linux", "arm64", "v8"))


def make_index(
    seed: int | str,
    platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
    *,
    layers: int = 1,
    shared: Sequence[Layer] = (),
) -> Index:
    images = tuple(
        make_image(f"{seed}.{p.architecture}", layers, shared=shared, platform=p) for p in platforms
    )
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [img.manifest.descriptor(platform=img.platform.as_dict()) for img in images],
    }
    return Index(images, Blob(OCI_INDEX, canonical_json(body)))


def make_artifact(
    seed: int | str,
    *,
    artifact_type: str | None = None,
    subject: Blob | None = None,
    layer_media_type: str = COSIGN_SIMPLESIGNING,
) -> tuple[Blob, Blob, Blob]:
    """A tiny OCI artifact (config, one layer, manifest), e.g. a signature or an SBOM.

    With `subject` the manifest names it: an OCI referrer.
    """
    config = Blob(OCI_EMPTY, b"{}")
    layer = Blob(layer_media_type, canonical_json({"critical": {"type": "test artifact", "seed": str(seed)}}))
    subject_desc = {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size} if subject else None
    manifest = image_manifest(config, [layer], artifact_type=artifact_type, subject=subject_desc)
    return config, layer, manifest


def cosign_tag(digest: str, suffix: str = "sig") -> str:
    """The tag cosign stores a signature (`sig`), attestation or SBOM of `digest` under."""
    algorithm, hex_ = digest.split(":", 1)
    return f"{algorithm}-{hex_}.{suffix}"


def write_layout(path: Path, tags: Mapping[str, Image | Index]) -> Path:
    """Write an OCI image layout readable by skopeo as `oci:PATH:TAG`."""
    blob_dir = path / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    refs = []
    for tag, item in sorted(tags.items()):
        for blob in item.blobs():
            (blob_dir / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
        refs.append(item.manifest.descriptor(annotations={REF_NAME: tag}))
    (path / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": OCI_LAYOUT_VERSION}))
    (path / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": refs}))
    return path
