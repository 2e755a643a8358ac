"""The registry's own config file: where its storage is, and where it listens."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from . import layout

ROOTDIRECTORY_ENV = "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY"
HTTP_ADDR_ENV = "REGISTRY_HTTP_ADDR"


class ConfigError(Exception):
    """The config cannot be used; the message is one line for the user."""


class UnsupportedDriver(ConfigError):
    """The config names a storage driver other than filesystem: there is no tree to check."""


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    rootdirectory: str
    http_addr: str | None


def load_config(path: str, environ: Mapping[str, str] = os.environ) -> RegistryConfig:
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
    drivers = [key for key in storage if key not in ("cache", "delete", "maintenance", "redirect", "tag")]
    if drivers and drivers != ["filesystem"]:
        raise UnsupportedDriver(
            f"{path}: storage driver {', '.join(drivers)} is not supported: only the filesystem driver keeps a tree to check"
        )
    filesystem = storage.get("filesystem") or {}
    rootdirectory = environ.get(ROOTDIRECTORY_ENV) or (
        filesystem.get("rootdirectory") if isinstance(filesystem, dict) else None
    ) or layout.DEFAULT_ROOTDIRECTORY
    http = document.get("http") or {}
    http_addr = environ.get(HTTP_ADDR_ENV) or (http.get("addr") if isinstance(http, dict) else None)
    return RegistryConfig(str(rootdirectory), str(http_addr) if http_addr else None)
