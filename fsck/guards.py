"""Is the registry still serving? The commands that change the tree refuse under a live registry (an
in-flight push loses layers).

Two ways to tell. With --config, an HTTP probe of `http.addr`. And /proc: an idle registry holds no file
open under its root (only sockets, pipes and /dev/null), so the registry is found by its command line
(`docker-registry serve CONFIG`, the official image's `registry serve CONFIG`) and the rootdirectory its
config names, read as the process sees it (through /proc/PID/root, so a registry in a container or a
chroot is seen as it sees itself); any other process is found by the files it holds open under the tree.
Roots and paths are compared by device and inode, never as strings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

REGISTRY_COMMANDS = frozenset({"registry", "docker-registry"})
CONFIG_PATH_ENV = "REGISTRY_CONFIGURATION_PATH"  # the registry's config when `serve` is given none
_MAX_LINKS = 40  # as the kernel's limit on symbolic links in one lookup

Identity = tuple[int, int]  # (st_dev, st_ino)


def registry_answers(http_addr: str, timeout: float = 1.0) -> bool:
    """Whether anything answers HTTP at the registry's `http.addr` (`:5000` means this host)."""
    import http.client  # here: it loads ssl as well (6 MiB), and only a run given --config asks

    host, _, port = http_addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            connection.request("GET", "/v2/")
            connection.getresponse()
        finally:
            connection.close()
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return True


def describe_address(http_addr: str) -> str:
    return http_addr if not http_addr.startswith(":") else f"127.0.0.1{http_addr}"


# Processes, through /proc.


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    command: str  # its arguments, joined by spaces


@dataclass(frozen=True, slots=True)
class Holder:
    """A process with a file open, or its working directory, under the tree."""

    process: Process
    path: str  # as the process sees it


@dataclass(frozen=True, slots=True)
class Unknown:
    """A registry whose rootdirectory could not be found out."""

    process: Process
    reason: str


@dataclass(frozen=True, slots=True)
class Liveness:
    serving: tuple[Process, ...]  # registries whose rootdirectory is the tree
    open_files: tuple[Holder, ...]  # other processes with a file open under it (one file each)
    cwd_under: tuple[Holder, ...]  # processes working in it, with nothing open there
    unknown: tuple[Unknown, ...]
    uninspected: int  # processes whose open files could not be read (permission denied)


class UnknownRoot(Exception):
    """Raised by a `ServedRoot` callback: the registry's config could not be read; the message says why."""


# (config file, openable from here; the registry's environment) -> its rootdirectory as the registry
# sees it, or None when it keeps no tree on the filesystem.
ServedRoot = Callable[[str, Mapping[str, str]], "str | None"]


def registry_config_path(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The config a `registry serve` command line reads, or None when it is not one."""
    if not argv or os.path.basename(argv[0]) not in REGISTRY_COMMANDS:
        return None
    positional = [argument for argument in argv[1:] if not argument.startswith("-")]
    if positional[:1] != ["serve"]:
        return None
    return positional[1] if len(positional) > 1 else environ.get(CONFIG_PATH_ENV) or None


def resolve_in(process_dir: str, path: str) -> str:
    """`path` as the process of `process_dir` (/proc/PID) sees it, as a path this process can open: an
    absolute path, and an absolute symbolic link met on the way, start at its root, a relative one at its
    working directory. (The kernel would follow an absolute link inside /proc/PID/root/... from ours.)"""
    anchor, resolved = (f"{process_dir}/root" if path.startswith("/") else f"{process_dir}/cwd"), []
    pending = [part for part in reversed(path.split("/")) if part not in ("", ".")]
    links = 0
    while pending:
        part = pending.pop()
        if part == "..":
            if resolved and resolved[-1] != "..":
                resolved.pop()
            elif anchor.endswith("/cwd"):
                resolved.append("..")  # above its working directory: the kernel knows where that is
            continue  # (and above its root is its root)
        here = "/".join([anchor, *resolved, part])
        try:
            link = os.readlink(here)
        except OSError:  # not a link (or not there: the caller's stat says so)
            resolved.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise OSError(f"{path}: too many levels of symbolic links")
        if link.startswith("/"):
            anchor, resolved = f"{process_dir}/root", []
        pending.extend(part for part in reversed(link.split("/")) if part not in ("", "."))
    return "/".join([anchor, *resolved])


def _identity(path: str) -> Identity:
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _arguments(raw: bytes) -> list[str]:
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]] if raw else []


def _environment(raw: bytes) -> dict[str, str]:
    pairs = (os.fsdecode(entry).partition("=") for entry in raw.split(b"\0") if entry)
    return {name: value for name, _, value in pairs}


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _parent(process_dir: str) -> int:
    try:
        # The command's name, in parentheses, may hold anything: the fields after it are plain.
        return int(_read(f"{process_dir}/stat").rpartition(b")")[2].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def own_lineage(proc: str = "/proc") -> frozenset[int]:
    """This process and its ancestors (the shell, a test runner...): never a registry to stop."""
    pids, pid = set(), os.getpid()
    while pid > 0 and pid not in pids:
        pids.add(pid)
        pid = _parent(f"{proc}/{pid}")
    return frozenset(pids)


class _Tree:
    """Whether a path a process sees lies under the tree: walks its directories up, by identity."""

    def __init__(self, root: Identity) -> None:
        self.root = root
        self._under: dict[tuple[str, str], bool] = {}

    def holds(self, views: Sequence[str], path: str, opened: Identity) -> bool:
        """`path` is what /proc says the process has open (`opened` its identity); it is read in the first
        of `views` (prefixes: the process's root, ours) where it names that very file."""
        if opened == self.root:
            return True
        for view in views:
            try:
                if _identity(view + path) != opened:
                    continue
            except OSError:
                continue
            return self._directory_under(view, os.path.dirname(path))
        return False  # deleted or renamed since it was opened: where it was is not known

    def _directory_under(self, view: str, directory: str) -> bool:
        key = (view, directory)
        if key not in self._under:
            try:
                here = _identity(view + directory)
            except OSError:
                here = None
            self._under[key] = here == self.root or (
                directory != "/" and self._directory_under(view, os.path.dirname(directory))
            )
        return self._under[key]


@dataclass(frozen=True, slots=True)
class _Use:
    serving: bool = False
    unknown: str | None = None  # a registry: why what it serves is not known
    opened: str | None = None  # a file it holds open under the tree
    cwd: str | None = None  # its working directory, under the tree


def _processes(proc: str, exclude: Iterable[int] | None) -> Iterator[tuple[int, str, list[str] | None]]:
    """Every process but `exclude` (by default this one and its ancestors) that has arguments (not a kernel
    thread or a zombie), as (pid, /proc/PID, argv); argv None where it cannot be read (permission denied)."""
    excluded = own_lineage(proc) if exclude is None else frozenset(exclude)
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) in excluded:
            continue
        process_dir = f"{proc}/{name}"
        try:
            argv = _arguments(_read(f"{process_dir}/cmdline"))
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
        except OSError:
            yield int(name), process_dir, None
            continue
        if argv:
            yield int(name), process_dir, argv


def liveness(
    root: str, served_root: ServedRoot, *, proc: str = "/proc", exclude: Iterable[int] | None = None
) -> Liveness:
    """Who uses the tree at `root`: every process but `exclude` (by default this one and its ancestors)."""
    tree = _Tree(_identity(root))
    ours = _identity("/")
    serving: list[Process] = []
    open_files: list[Holder] = []
    cwd_under: list[Holder] = []
    unknown: list[Unknown] = []
    uninspected = 0
    for pid, process_dir, argv in _processes(proc, exclude):
        if argv is None:
            uninspected += 1
            continue
        try:
            use = _inspect(argv, process_dir, tree, served_root, ours)
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
        except OSError:  # permission denied, mostly
            uninspected += 1
            continue
        process = Process(pid, " ".join(argv))
        if use.serving:
            serving.append(process)
            continue
        if use.unknown is not None:
            unknown.append(Unknown(process, use.unknown))
        if use.opened is not None:
            open_files.append(Holder(process, use.opened))
        elif use.cwd is not None:
            cwd_under.append(Holder(process, use.cwd))
    return Liveness(tuple(serving), tuple(open_files), tuple(cwd_under), tuple(unknown), uninspected)


def _inspect(argv: list[str], process_dir: str, tree: _Tree, served_root: ServedRoot, ours: Identity) -> _Use:
    """What one process does with the tree. PermissionError: its open files cannot be read."""
    registry = _registry_serves(argv, process_dir, tree, served_root)
    if registry is True:
        return _Use(serving=True)
    unknown = registry if isinstance(registry, str) else None
    try:
        views = ("",) if _identity(f"{process_dir}/root") == ours else (f"{process_dir}/root", "")
        fds = os.listdir(f"{process_dir}/fd")
    except PermissionError:
        if unknown is None:
            raise
        return _Use(unknown=unknown)  # a registry, said by name rather than counted
    fd_dir = f"{process_dir}/fd"
    for fd in fds:
        try:
            path = os.readlink(f"{fd_dir}/{fd}")
            if not path.startswith("/"):
                continue  # a socket, a pipe, an anonymous inode
            opened = _identity(f"{fd_dir}/{fd}")
        except PermissionError:
            raise
        except OSError:
            continue  # closed meanwhile, or a file that cannot be looked at (a stale NFS handle)
        if tree.holds(views, path, opened):
            return _Use(unknown=unknown, opened=path)
    try:
        cwd = os.readlink(f"{process_dir}/cwd")
        working = _identity(f"{process_dir}/cwd")
    except PermissionError:
        raise
    except OSError:
        return _Use(unknown=unknown)
    return _Use(unknown=unknown, cwd=cwd if tree.holds(views, cwd, working) else None)


def _registry_serves(argv: list[str], process_dir: str, tree: _Tree, served_root: ServedRoot) -> bool | str:
    """True when the process is a `registry serve` whose rootdirectory is the tree; a string when it is one
    and what it serves cannot be found out (why); False otherwise."""
    if not argv or os.path.basename(argv[0]) not in REGISTRY_COMMANDS:
        return False
    try:
        environ = _environment(_read(f"{process_dir}/environ"))
        config = registry_config_path(argv, environ)
        if config is None:
            return False
        rootdirectory = served_root(resolve_in(process_dir, config), environ)
        return rootdirectory is not None and _identity(resolve_in(process_dir, rootdirectory)) == tree.root
    except UnknownRoot as error:
        return str(error)
    except PermissionError:
        return "permission denied"
    except FileNotFoundError:
        return False  # its rootdirectory is not there (or it ended): it serves nothing here
    except OSError as error:
        return error.strerror or str(error)


ServedBucket = Callable[[str, Mapping[str, str]], bool]  # (its config path, its environment) -> serves the bucket


def bucket_liveness(serves: ServedBucket, *, proc: str = "/proc", exclude: Iterable[int] | None = None) -> Liveness:
    """The registries here whose config (with their environment's overrides) `serves` names a bucket: on S3 no
    file is held open to find them by, so only `serving` and `unknown` are filled."""
    serving: list[Process] = []
    unknown: list[Unknown] = []
    uninspected = 0
    for pid, process_dir, argv in _processes(proc, exclude):
        if argv is None:
            uninspected += 1
            continue
        if os.path.basename(argv[0]) not in REGISTRY_COMMANDS:
            continue
        try:
            environ = _environment(_read(f"{process_dir}/environ"))
            config = registry_config_path(argv, environ)
            if config is None:
                continue
            if serves(resolve_in(process_dir, config), environ):
                serving.append(Process(pid, " ".join(argv)))
        except (FileNotFoundError, ProcessLookupError):
            continue
        except UnknownRoot as error:
            unknown.append(Unknown(Process(pid, " ".join(argv)), str(error)))
        except OSError:
            uninspected += 1
    return Liveness(tuple(serving), (), (), tuple(unknown), uninspected)
