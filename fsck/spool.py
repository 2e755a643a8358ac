"""The audit's findings in bounded memory: added in any order, read back in the report's order.

A store can hold millions of findings. A `FindingLog` keeps at most `memory_bound` of them as
objects; beyond that it sorts what it holds into a run, writes the run to an anonymous temporary
file (the system's temporary directory, never the registry's tree) in small pickled batches, and
starts over. Reading merges the runs, holding about one batch of each (`heapq.merge`). Runs of one
size are merged into one run of the next size once `fan_in` of them exist (an external merge sort's
tiers), so neither the open files nor what a read holds grows with the number of findings.

Everything the summary says is counted as findings are added, so no summary needs a pass over them.
The log is filled, then read: the first read seals it (reading may happen any number of times and
several reads may run side by side; adding after the first read is an error).
"""

from __future__ import annotations

import dataclasses
import heapq
import operator
import os
import pickle
import tempfile
import weakref
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import partial
from typing import IO

from .catalogue import CATALOGUE, KEY_PREFIX, Finding, Id, Severity

DEFAULT_MEMORY_BOUND = 2048  # findings held as objects: under a MB (each, with its location and message, ~370 B)
DEFAULT_BATCH = 64  # findings per pickled batch: what a read holds of each run
DEFAULT_FAN_IN = 16  # runs of one tier merged into one of the next


@dataclass(frozen=True, slots=True)
class Tally:
    """The findings of one id."""

    count: int
    bytes: int


@dataclass(frozen=True, slots=True)
class RepositoryTally:
    findings: int  # findings in the repository
    reclaimable_bytes: int  # garbage in it, and garbage blobs whose only user it is


@dataclass(frozen=True, slots=True)
class Counts:
    """What the summary says, counted as findings were added."""

    findings: int
    by_id: Mapping[Id, Tally]  # catalogue order; only ids with findings
    by_severity: Mapping[Severity, int]  # every severity
    by_repository: Mapping[str, RepositoryTally]  # by repository name as stored, sorted
    reclaimable_bytes: int  # every garbage finding's bytes
    shared_reclaimable_bytes: int  # garbage blobs no one repository alone uses
    ignored: Mapping[Id, int] | None  # None: nothing ignored; else every ignored id, with how many were left out


@dataclass(frozen=True, slots=True)
class _Segment:
    """The findings of one id in a run: batches `first` to `end` (no batch holds two ids), and the sort
    keys of the first and last."""

    first: int
    end: int
    first_key: tuple
    last_key: tuple


@dataclass(frozen=True, slots=True)
class _Run:
    """One sorted run in a file of its own (unbuffered: each batch is one write, and open runs cost
    no buffer each), where each batch ends in it, where each id's findings are, and the codec that
    encoded them (another log's, for a run it took over)."""

    file: IO[bytes]
    ends: array  # of "q": a batch starts where the one before ends
    tier: int
    segments: Mapping[int, _Segment]  # by the id's index in `_IDS`
    codec: _Codec


@dataclass(frozen=True, slots=True)
class Exported:
    """What a log held, for another log to take over (`FindingLog.export`, `FindingLog.absorb`): its
    runs' files go beside it, as objects or, from another process, as descriptors."""

    runs: tuple[tuple[array, int, Mapping[int, _Segment]], ...]  # each run's ends, tier and segments
    kinds: tuple[type, ...]  # its codec's
    nesting: tuple[bool, ...]
    count: int
    by_id: Mapping[Id, list[int]]
    by_repository: Mapping[str, list[int]]
    reclaimable: int
    shared: int
    ignored: Mapping[Id, int]


_IDS: tuple[Id, ...] = tuple(Id)
_ID_INDEX: dict[Id, int] = {finding_id: index for index, finding_id in enumerate(_IDS)}
_GARBAGE_IDS: frozenset[Id] = frozenset(check.id for check in CATALOGUE if check.severity is Severity.GARBAGE)
_PLAIN = frozenset({str, bytes, int, bool, float, type(None)})


def _fields_of(kind: type) -> tuple[tuple[str, ...], Callable[[object], tuple], tuple[Callable, ...]]:
    """A dataclass's field names, a getter of their values as one tuple, and a setter of each slot
    (they bypass a frozen dataclass's __setattr__, as its own __init__ does)."""
    names = tuple(f.name for f in dataclasses.fields(kind))
    getter = operator.attrgetter(*names) if len(names) > 1 else (lambda thing, name=names[0]: (getattr(thing, name),))
    setters = tuple(
        getattr(kind, name).__set__ if hasattr(getattr(kind, name, None), "__set__") else partial(_set, name=name)
        for name in names
    )
    return names, getter, setters


def _set(thing: object, value: object, name: str) -> None:
    object.__setattr__(thing, name, value)


_FINDING_REST = tuple(field.name for field in dataclasses.fields(Finding) if field.name not in ("id", "location"))
_FINDING_REST_GETTER = operator.attrgetter(*_FINDING_REST)
# A row: a finding as the plain values a record of it shows, (id, path, *_FINDING_REST), read back from a
# run without building the finding and its location again.
ROW_FIELDS = ("id", "path", *_FINDING_REST)


def row_of(finding: Finding) -> tuple:
    return (finding.id, finding.path, *_FINDING_REST_GETTER(finding))


def _row_key(row: tuple) -> tuple:
    """`Finding.sort_key` of the row's finding."""
    return (*KEY_PREFIX[row[0]], row[3] or "", row[1])


_NOT_A_DATACLASS = -1
# What `FindingLog._in_order` yields, with the codec method that reads a run's items so.
_FINDINGS, _ROWS, _ENCODED = "decode", "decode_row", "same"
_new = object.__new__


class _Codec:
    """Findings as tuples of plain values for pickling: pickling the dataclasses themselves is several
    times slower. A location is any dataclass; each kind gets a number the first time one is seen, and
    a location inside one (a link file's owner) is written as a pair of its own."""

    __slots__ = ("kinds", "kind_index", "getters", "setters", "nesting")

    def __init__(self, kinds: Iterable[type] = (), nesting: Iterable[bool] = ()) -> None:
        """`kinds` and `nesting`: another codec's, to read what it encoded."""
        self.kinds: list[type] = []
        self.kind_index: dict[type, int] = {}
        self.getters: list[Callable[[object], tuple]] = []
        self.setters: list[tuple[Callable, ...]] = []
        self.nesting: list[bool] = []  # whether a location of the kind has held another
        self.learn(tuple(kinds), tuple(nesting))

    def reads(self, kinds: tuple[type, ...]) -> bool:
        """Whether this codec numbers these kinds as another codec did (one is the other's start)."""
        return tuple(self.kinds[: len(kinds)]) == kinds[: len(self.kinds)]

    def learn(self, kinds: tuple[type, ...], nesting: tuple[bool, ...]) -> None:
        """Another codec's kinds beyond this one's, and which of them nest, so that this one reads what
        that one encoded (`reads` must hold)."""
        for kind in kinds[len(self.kinds) :]:
            self._new_kind(kind)
        for index, nests in enumerate(nesting):
            self.nesting[index] = self.nesting[index] or nests

    def encode(self, finding: Finding) -> tuple:
        return (
            _ID_INDEX[finding.id], self._encode_location(finding.location), _FINDING_REST_GETTER(finding),
            finding.path,
        )

    def decode(self, item: tuple) -> Finding:
        index, location, rest, _ = item  # rest: in Finding's field order, as its own __init__ takes them
        return Finding(_IDS[index], self._decode_location(location), *rest)

    @staticmethod
    def decode_row(item: tuple) -> tuple:
        index, _, rest, path = item
        return (_IDS[index], path, *rest)

    @staticmethod
    def same(item: tuple) -> tuple:
        return item

    @staticmethod
    def key(item: tuple) -> tuple:
        """The sort key of the encoded finding's finding."""
        index, _, rest, path = item
        return (*KEY_PREFIX[_IDS[index]], rest[1] or "", path)

    def _encode_location(self, location: object) -> tuple:
        index = self.kind_index.get(type(location))
        if index is None:
            if not dataclasses.is_dataclass(location):
                return (_NOT_A_DATACLASS, location)
            index = self._new_kind(type(location))
        values = self.getters[index](location)
        if not _PLAIN.issuperset(map(type, values)):
            self.nesting[index] = True
            values = tuple(value if type(value) in _PLAIN else self._encode_location(value) for value in values)
        return (index, values)

    def _new_kind(self, kind: type) -> int:
        index = self.kind_index[kind] = len(self.kinds)
        self.kinds.append(kind)
        _, getter, setters = _fields_of(kind)
        self.getters.append(getter)
        self.setters.append(setters)
        self.nesting.append(False)
        return index

    def _decode_location(self, encoded: tuple) -> object:
        index, values = encoded
        if index == _NOT_A_DATACLASS:
            return values
        location = _new(self.kinds[index])
        if self.nesting[index]:
            values = [self._decode_location(value) if type(value) is tuple else value for value in values]
        for setter, value in zip(self.setters[index], values, strict=True):
            setter(location, value)
        return location


def _close_files(files: list[IO[bytes]]) -> None:
    for file in files:
        file.close()
    files.clear()


class FindingLog:
    """Findings in `Finding.sort_key` order (ties in the order added, as `sorted` keeps them), at most
    `memory_bound` of them held as objects whatever their number. Findings of an id in `ignore` are only
    counted. Mutable while filled; sealed, and read-only, from the first read."""

    __slots__ = (
        "_ignore", "_ignored", "_memory_bound", "_batch", "_fan_in", "_directory", "_codec",
        "_held", "_runs", "_files", "_sealed", "_closed", "_finalizer",
        "_count", "_by_id", "_by_repository", "_reclaimable", "_shared", "__weakref__",
    )

    def __init__(
        self, ignore: Iterable[Id] | None = None, *, memory_bound: int = DEFAULT_MEMORY_BOUND,
        batch: int = DEFAULT_BATCH, fan_in: int = DEFAULT_FAN_IN, directory: str | None = None,
    ) -> None:
        """`directory`: where the temporary files go (None: the system's temporary directory)."""
        if memory_bound < 1 or batch < 1 or fan_in < 2:
            raise ValueError("memory_bound and batch must be at least 1, fan_in at least 2")
        self._ignore: frozenset[Id] | None = frozenset(ignore) if ignore is not None else None
        self._ignored: dict[Id, int] = dict.fromkeys(self._ignore or (), 0)
        self._memory_bound = memory_bound
        self._batch = batch
        self._fan_in = fan_in
        self._directory = directory
        self._codec = _Codec()
        self._held: list[Finding] = []  # not yet in a run; sorted once sealed
        self._runs: list[_Run] = []  # in the order their findings were added; tiers never rise along it
        self._files: list[IO[bytes]] = []  # every open file, for the finalizer
        self._sealed = False
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_files, self._files)
        self._count = 0
        self._by_id: dict[Id, list[int]] = {}  # [count, bytes]
        self._by_repository: dict[str, list[int]] = {}  # [findings, reclaimable bytes]
        self._reclaimable = 0
        self._shared = 0

    @classmethod
    def of(cls, findings: Iterable[Finding], ignore: Iterable[Id] | None = None, **bounds: int) -> FindingLog:
        """A log of these findings: a log itself when there is nothing to ignore."""
        if isinstance(findings, FindingLog) and ignore is None:
            return findings
        log = cls(ignore, **bounds)
        for finding in findings:
            log.add(finding)
        return log

    def without(self, ids: Iterable[Id]) -> FindingLog:
        """A new log without these ids, counting what it left out (besides what this one did);
        copied through bounded memory. This log stays as it is."""
        ids = frozenset(ids)
        copy = FindingLog(
            (self._ignore or frozenset()) | ids,
            memory_bound=self._memory_bound, batch=self._batch, fan_in=self._fan_in, directory=self._directory,
        )
        for finding in self:
            copy.add(finding)
        for finding_id, count in self._ignored.items():
            copy._ignored[finding_id] += count
        return copy

    # Filling.

    def add(self, finding: Finding) -> None:
        if self._sealed:
            raise RuntimeError("the findings have been read: the log takes no more")
        finding_id = finding.id
        if self._ignore is not None and finding_id in self._ignore:
            self._ignored[finding_id] += 1
            return
        self._count += 1
        size = finding.bytes
        tally = self._by_id.get(finding_id)
        if tally is None:
            tally = self._by_id[finding_id] = [0, 0]
        tally[0] += 1
        tally[1] += size
        garbage = finding_id in _GARBAGE_IDS
        if garbage:
            self._reclaimable += size
        if finding.repository is not None:
            entry = self._repository(finding.repository)
            entry[0] += 1
            if garbage:
                entry[1] += size
        elif garbage and size:
            if finding.owner is None:
                self._shared += size
            else:
                self._repository(finding.owner)[1] += size
        self._held.append(finding)
        if len(self._held) >= self._memory_bound:
            self._spill()

    def _repository(self, name: str) -> list[int]:
        entry = self._by_repository.get(name)
        if entry is None:
            entry = self._by_repository[name] = [0, 0]
        return entry

    def _spill(self) -> None:
        held = self._held
        held.sort(key=Finding.sort_key)
        self._held = []
        self._runs.append(self._write(iter(held), self._codec.encode))
        fan_in = self._fan_in
        # Merge the last `fan_in` runs while they are of one tier: they were added one after the
        # other, so merging them in place keeps the order of ties.
        while len(self._runs) >= fan_in and len({run.tier for run in self._runs[-fan_in:]}) == 1:
            merged = self._runs[-fan_in:]
            tier = merged[0].tier + 1
            if all(old.codec is self._codec for old in merged):  # passed through as encoded
                run = self._write(self._in_order(merged, [], _ENCODED), _Codec.same, tier)
            else:  # some taken over from another log: encoded again, by this one's codec
                run = self._write(self._in_order(merged, [], _FINDINGS), self._codec.encode, tier)
            del self._runs[-fan_in:]
            for old in merged:
                self._files.remove(old.file)
                old.file.close()
            self._runs.append(run)

    # Handing over (a log filled in another process comes back to this one so).

    def export(self) -> tuple[Exported, list[IO[bytes]]]:
        """Everything this log holds, for another log's `absorb`, with the files of its runs (the
        caller's to close until absorbed). This log is closed after."""
        if self._sealed or self._closed or any(run.codec is not self._codec for run in self._runs):
            raise RuntimeError("only a log being filled, and never given another's findings, is handed over")
        if self._held:
            self._spill()
        codec = self._codec
        exported = Exported(
            tuple((run.ends, run.tier, run.segments) for run in self._runs), tuple(codec.kinds),
            tuple(codec.nesting), self._count, self._by_id, self._by_repository, self._reclaimable, self._shared,
            self._ignored,
        )
        files = [run.file for run in self._runs]
        self._files.clear()  # no longer this log's to close
        self._runs = []
        self._closed = True
        return exported, files

    def absorb(self, exported: Exported, files: list[IO[bytes]]) -> None:
        """Take over another log's findings (`export`), as though added after every finding here: ties
        in the sort key come after these. The files become this log's."""
        if self._sealed:
            raise RuntimeError("the findings have been read: the log takes no more")
        if set(exported.ignored) != set(self._ignored) or len(exported.runs) != len(files):
            raise ValueError("a log ignoring other ids, or runs without their files")
        if self._held:
            self._spill()  # what was added before goes to a run ahead of the runs taken over
        codec = self._codec
        if codec.reads(exported.kinds):  # one numbering of kinds: runs merge as encoded
            codec.learn(exported.kinds, exported.nesting)
        else:
            codec = _Codec(exported.kinds, exported.nesting)
        self._files.extend(files)
        self._runs.extend(
            _Run(file, ends, tier, segments, codec)
            for (ends, tier, segments), file in zip(exported.runs, files, strict=True)
        )
        self._count += exported.count
        for finding_id, (count, size) in exported.by_id.items():
            tally = self._by_id.setdefault(finding_id, [0, 0])
            tally[0] += count
            tally[1] += size
        for name, (count, size) in exported.by_repository.items():
            entry = self._repository(name)
            entry[0] += count
            entry[1] += size
        self._reclaimable += exported.reclaimable
        self._shared += exported.shared
        for finding_id, count in exported.ignored.items():
            self._ignored[finding_id] += count

    def _write(self, items: Iterator, encode: Callable[[object], tuple], tier: int = 0) -> _Run:
        """A run of findings given in sort-key order, each encoded by `encode` (as it comes: what is
        encoded is let go batch by batch)."""
        file = tempfile.TemporaryFile(buffering=0, dir=self._directory)
        self._files.append(file)
        ends = array("q")
        segments: dict[int, _Segment] = {}
        key = self._codec.key
        batch: list[tuple] = []
        index = first = -1
        first_key: tuple = ()
        last: tuple = ()
        for item in map(encode, items):
            if item[0] != index:  # an id's findings start a batch of their own
                if batch:
                    self._write_batch(file, batch, ends)
                    batch = []
                if index >= 0:
                    segments[index] = _Segment(first, len(ends), first_key, key(last))
                index, first, first_key = item[0], len(ends), key(item)
            batch.append(item)
            last = item
            if len(batch) == self._batch:
                self._write_batch(file, batch, ends)
                batch = []
        if batch:
            self._write_batch(file, batch, ends)
        if index >= 0:
            segments[index] = _Segment(first, len(ends), first_key, key(last))
        return _Run(file, ends, tier, segments, self._codec)

    @staticmethod
    def _write_batch(file: IO[bytes], batch: list[tuple], ends: array) -> None:
        data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(data)
        written = 0
        while written < len(data):  # an unbuffered write may write less
            written += file.write(view[written:])
        ends.append((ends[-1] if ends else 0) + len(data))

    @staticmethod
    def _read(run: _Run, segment: _Segment, form: str) -> Iterator:
        # pread: reads of one run side by side do not share a file position.
        descriptor = run.file.fileno()
        decode = getattr(run.codec, form)
        ends = run.ends
        start = ends[segment.first - 1] if segment.first else 0
        for end in ends[segment.first : segment.end]:
            for item in pickle.loads(os.pread(descriptor, end - start, start)):
                yield decode(item)
            start = end

    def _in_order(
        self, runs: list[_Run], held: list[Finding], form: str = _FINDINGS, ids: AbstractSet[Id] | None = None,
    ) -> Iterator:
        """The findings of these runs (in the order they were written) and of `held` (sorted), in
        sort-key order, as findings, rows, or encoded for another run (`form`): id by id, each
        id's parts one after the other where each ends at or before the next begins (as findings made in
        order are), merged only where they overlap. Only those of `ids`, when given."""
        key, held_form = {_FINDINGS: (Finding.sort_key, None), _ROWS: (_row_key, row_of), _ENCODED: (_Codec.key, None)}[form]
        held_by_id: dict[int, list] = {}
        for finding in held:  # none where runs are merged into one
            if ids is None or finding.id in ids:
                held_by_id.setdefault(_ID_INDEX[finding.id], []).append(finding if held_form is None else held_form(finding))
        starts = {index: segment.first_key for run in runs for index, segment in run.segments.items()}
        starts.update((index, key(items[0])) for index, items in held_by_id.items())
        # A sort key begins with the id's place in the report: ids in the order of their keys' prefixes.
        for index in sorted(starts, key=lambda index: starts[index][:2]):
            if ids is not None and _IDS[index] not in ids:
                continue
            parts: list[tuple[tuple, tuple, Iterator | list]] = [
                (segment.first_key, segment.last_key, self._read(run, segment, form))
                for run in runs if (segment := run.segments.get(index)) is not None
            ]
            mine = held_by_id.get(index)
            if mine:
                parts.append((key(mine[0]), key(mine[-1]), mine))
            if all(before[1] <= after[0] for before, after in zip(parts, parts[1:], strict=False)):
                for _, _, items in parts:
                    yield from items
            else:  # ties go to the earlier part, as `sorted` keeps them
                yield from heapq.merge(*(items for _, _, items in parts), key=key)

    # Reading.

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Finding]:
        self._seal()
        if not self._runs:
            return iter(self._held)
        return self._in_order(self._runs, self._held)

    def rows(self, ids: AbstractSet[Id] | None = None) -> Iterator[tuple]:
        """The findings in the same order as `row_of` gives them (`ROW_FIELDS`): what a report shows of
        each, without building the spilled ones again. Only those of `ids`, when given."""
        self._seal()
        if not self._runs:
            held = self._held if ids is None else [finding for finding in self._held if finding.id in ids]
            return map(row_of, held)
        return self._in_order(self._runs, self._held, _ROWS, ids)

    def _seal(self) -> None:
        if self._closed:
            raise ValueError("the log is closed")
        if not self._sealed:
            self._held.sort(key=Finding.sort_key)
            self._sealed = True

    @property
    def ignored(self) -> Mapping[Id, int] | None:
        """None when nothing was to be ignored; else every id to ignore, with how many were left out."""
        if self._ignore is None:
            return None
        return {check.id: self._ignored[check.id] for check in CATALOGUE if check.id in self._ignored}

    @property
    def counts(self) -> Counts:
        by_id = {check.id: Tally(*self._by_id[check.id]) for check in CATALOGUE if check.id in self._by_id}
        by_severity = dict.fromkeys(Severity, 0)
        for finding_id, tally in by_id.items():
            by_severity[finding_id.severity] += tally.count
        return Counts(
            findings=self._count,
            by_id=by_id,
            by_severity=by_severity,
            by_repository={name: RepositoryTally(*entry) for name, entry in sorted(self._by_repository.items())},
            reclaimable_bytes=self._reclaimable,
            shared_reclaimable_bytes=self._shared,
            ignored=self.ignored,
        )

    def count(self, finding_id: Id) -> int:
        tally = self._by_id.get(finding_id)
        return tally[0] if tally is not None else 0

    def ids(self) -> frozenset[Id]:
        """The ids with findings."""
        return frozenset(self._by_id)

    @property
    def spilled(self) -> bool:
        """Whether some findings are in temporary files."""
        return bool(self._runs)

    def close(self) -> None:
        """Drop the temporary files (also done when the log is garbage-collected); reading fails after."""
        self._closed = True
        self._runs = []
        self._held = []
        self._finalizer()

    def __enter__(self) -> FindingLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FindingLog({self._count} findings, {len(self._runs)} runs on disk, {len(self._held)} held)"
