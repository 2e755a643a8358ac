"""The registry's own config file: where its storage is, and where it listens."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from . import layout

ROOTDIRECTORY_ENV = "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"
HTTP_ADDR_ENV = "REGISTRY_HTTP_ADDR"
S3_ENV = "REGISTRY_STORAGE_S3_"  # + the parameter's name in capitals, as the registry reads its environment
S3_PARAMETERS = ("accesskey", "secretkey", "region", "regionendpoint", "bucket", "rootdirectory", "secure", "v4auth")
_NOT_DRIVERS = ("cache", "delete", "maintenance", "redirect", "tag")


class ConfigError(Exception):
    """The config cannot be used; the message is one line for the user."""


class UnsupportedDriver(ConfigError):
    """The config names a storage driver other than filesystem: there is no tree to check."""


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    rootdirectory: str
    http_addr: str | None


@dataclass(frozen=True, slots=True)
class S3Config:
    """`storage.s3` as the registry applies it (the environment over the file)."""

    bucket: str
    rootdirectory: str  # without its leading and trailing "/"
    region: str | None
    endpoint_url: str | None  # regionendpoint, with the scheme `secure` gives it when it has none
    accesskey: str | None  # None: the standard AWS credential chain, as the driver falls back to
    secretkey: str | None
    v4auth: bool
    http_addr: str | None


def load_config(path: str, environ: Mapping[str, str] = os.environ) -> RegistryConfig:
    """The filesystem driver's config; any other driver is UnsupportedDriver (`load_storage` takes s3 too)."""
    document, storage, drivers = _read(path)
    if drivers and drivers != ["filesystem"]:
        raise UnsupportedDriver(
            f"{path}: storage driver {', '.join(drivers)} is not supported: only the filesystem driver keeps a tree to check"
        )
    filesystem = storage.get("filesystem") or {}
    rootdirectory = environ.get(ROOTDIRECTORY_ENV) or (
        filesystem.get("rootdirectory") if isinstance(filesystem, dict) else None
    ) or layout.DEFAULT_ROOTDIRECTORY
    return RegistryConfig(str(rootdirectory), _http_addr(document, environ))


def load_storage(path: str, environ: Mapping[str, str] = os.environ) -> RegistryConfig | S3Config:
    """The storage a config names: the filesystem or the s3 driver's; any other is UnsupportedDriver."""
    document, storage, drivers = _read(path)
    if drivers != ["s3"]:
        if drivers and drivers != ["filesystem"]:
            raise UnsupportedDriver(
                f"{path}: storage driver {', '.join(drivers)} is not supported yet (only filesystem and s3)"
            )
        return load_config(path, environ)
    given = storage.get("s3") or {}
    if not isinstance(given, dict):
        raise ConfigError(f"{path}: storage.s3 is not a mapping")
    values = {name: given.get(name) for name in S3_PARAMETERS}
    import yaml  # here, as in _read: only a run given a config file pays for the parser

    for name in S3_PARAMETERS:
        if S3_ENV + name.upper() in environ:
            # The registry reads an environment value as YAML: `false` is a boolean, `8080` a number.
            text = environ[S3_ENV + name.upper()]
            try:
                values[name] = yaml.safe_load(text) if text else text
            except yaml.YAMLError:
                values[name] = text
    bucket = values["bucket"]
    if not bucket:
        raise ConfigError(f"{path}: storage.s3.bucket is missing")
    secure = _boolean(path, "secure", values["secure"], default=True)
    endpoint = str(values["regionendpoint"]).strip() if values["regionendpoint"] else None
    if endpoint and "://" not in endpoint:
        endpoint = f"{'https' if secure else 'http'}://{endpoint}"
    return S3Config(
        str(bucket), str(values["rootdirectory"] or "").strip("/"),
        str(values["region"]) if values["region"] else None, endpoint,
        str(values["accesskey"]) if values["accesskey"] else None,
        str(values["secretkey"]) if values["secretkey"] else None,
        _boolean(path, "v4auth", values["v4auth"], default=True), _http_addr(document, environ),
    )


def _boolean(path: str, name: str, value: object, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ConfigError(f"{path}: storage.s3.{name} is not true or false: {value!r}")


def _http_addr(document: dict, environ: Mapping[str, str]) -> str | None:
    http = document.get("http") or {}
    http_addr = environ.get(HTTP_ADDR_ENV) or (http.get("addr") if isinstance(http, dict) else None)
    return str(http_addr) if http_addr else None


def _read(path: str) -> tuple[dict, dict, list[str]]:
    import yaml  # here: only a run given a config file (or guarding against a live registry) reads YAML

    try:
        with open(path, "rb") as handle:
            document = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: not a registry config (expected a YAML mapping)")
    storage = document.get("storage") or {}
    if not isinstance(storage, dict):
        raise ConfigError(f"{path}: storage is not a mapping")
    return document, storage, [key for key in storage if key not in _NOT_DRIVERS]
