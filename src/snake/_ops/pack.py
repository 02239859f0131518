"""Sequence packing: ``pack(length, ...)`` puts variable-length token sequences into
rows of a fixed length, with segment ids and positions.

The stage keeps up to ``buffer`` open rows. A sequence goes into an open row it fits
in (``fit="best"``: the one with the least room left; ``"first"``: the oldest); a row
that becomes full goes out at once. When no open row has room and ``buffer`` rows are
open, the fullest one goes out (padded) and the sequence opens a new row. At the end of
the input the open rows go out in the order they were opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs
import numpy as np

from .._buffers.collate import NUMBER_TYPES
from .._engine.resume import Cut
from .._engine.spec import Chunk, HoldingOp, InlineSpec, Op
from .._engine.util import add_note

Fit = Literal["best", "first"]
TooLong = Literal["split", "truncate", "raise"]

FITS = ("best", "first")
TOO_LONG = ("split", "truncate", "raise")

#: The key a plain array's tokens get in the rows.
TOKENS = "tokens"


class _Row:
    """An open row: the pieces in it, in order (the room left is kept apart)."""

    __slots__ = ("members", "pieces")

    def __init__(self) -> None:
        #: ``(input number, offset)`` of each piece: the piece is the input's items from
        #: ``offset`` on (an offset above 0 only for the last piece of a split sequence).
        self.members: list[tuple[int, int]] = []
        #: The pieces' fields: for each piece, one 1-D array per key.
        self.pieces: list[tuple[np.ndarray, ...]] = []


class _PackOp(HoldingOp):
    """``pack(length, ...)``.

    For checkpoints it keeps, for each row since the consumer's position, the input
    that was being taken when the row went out (its *producer*) and the pieces in it.
    The open rows when input ``c`` was taken follow from those: the pieces of inputs
    before ``c`` in the rows that went out from then on, or are still open (pieces join
    a row in input order, and rows open in input order). One input may give several
    rows (a split sequence, an evicted row and a full one): a checkpoint among them
    resumes at that input and drops the rows the consumer had, as ``flat_map`` does.
    """

    __slots__ = (
        "arange",
        "back",
        "buffer",
        "discard",
        "dtypes",
        "fit",
        "keys",
        "learnt",
        "length",
        "made",
        "made_first",
        "pad_value",
        "places",
        "rooms",
        "rows",
        "slots_out",
        "tokens_out",
        "too_long",
    )

    def __init__(
        self, label: str, length: int, buffer: int, fit: Fit, too_long: TooLong, pad_value: float
    ) -> None:
        super().__init__(label)
        self.length = length
        self.buffer = buffer
        self.fit = fit
        self.too_long = too_long
        self.pad_value = pad_value
        #: Open rows, in the order they were opened, and the room left in each.
        self.rows: list[_Row] = []
        self.rooms: list[int] = []
        #: ``0, 1, ..., length - 1``: the positions of a piece are a slice of it.
        self.arange = np.arange(length, dtype=np.int32)
        #: The input's keys (None: plain arrays, packed under ``"tokens"``), fixed by
        #: the first item, and their dtypes.
        self.keys: tuple[str, ...] | None = None
        self.learnt = False
        #: The dtypes of the keys, fixed by the first item with tokens.
        self.dtypes: tuple[np.dtype[Any], ...] = ()
        #: Tokens (of the first key) and token slots of the rows made in this run.
        self.tokens_out = 0
        self.slots_out = 0
        #: Each row from output number ``made_first`` on: its producer, its members.
        self.made: list[tuple[int, list[tuple[int, int]]]] = []
        self.made_first = 0
        #: Rows of the next input a resumed run drops (the consumer had them).
        self.discard = 0
        #: A resumed op: the input numbers it takes back, ascending, and where each goes
        #: (row index, offset).
        self.back: list[int] = []
        self.places: dict[int, tuple[int, int]] = {}

    @property
    def padding(self) -> float:
        """The share of the token slots of the rows made so far that are padding."""
        return 1.0 - self.tokens_out / self.slots_out if self.slots_out else 0.0

    # -- items -----------------------------------------------------------------------
    def _fields(self, x: Any) -> tuple[np.ndarray, ...]:
        """The item's arrays, one per key, checked against the first item's."""
        if (
            type(x) is np.ndarray
            and self.keys is None
            and self.dtypes
            and x.ndim == 1
            and x.dtype == self.dtypes[0]
        ):
            return (x,)  # the common case, checked at once
        if not self.learnt:
            self._learn(x)
        keys = self.keys
        if keys is None:
            if isinstance(x, Mapping):
                raise TypeError("pack: item is a dict, and the first item was an array; all must be alike")
            fields: tuple[np.ndarray, ...] = (_as_1d(x, "item"),)
        else:
            if not isinstance(x, Mapping):
                raise TypeError(
                    f"pack: item is {type(x).__qualname__}; the first item was a dict with keys {list(keys)}"
                )
            if len(x) != len(keys) or any(k not in x for k in keys):
                raise ValueError(f"pack: item has keys {list(x)}; the first item had {list(keys)}")
            fields = tuple(_as_1d(x[k], f"item[{k!r}]") for k in keys)
            n = fields[0].shape[0]
            for k, a in zip(keys, fields):
                if a.shape[0] != n:
                    raise ValueError(
                        f"pack: item[{k!r}] has length {a.shape[0]}; item[{keys[0]!r}] has {n}: "
                        "every field of an item must have the same length"
                    )
        if fields[0].shape[0]:  # an empty item adds nothing, whatever its dtype
            self._check_dtypes(fields)
        return fields

    def _learn(self, x: Any) -> None:
        """Take the keys from the first item."""
        if isinstance(x, Mapping):
            keys = tuple(x)
            if not keys or not all(isinstance(k, str) for k in keys):
                raise TypeError(f"pack: item has keys {list(keys)}; a dict item needs str keys, at least one")
            made = {f"{k}{suffix}" for k in keys for suffix in ("_segment_ids", "_positions")}
            clash = made.intersection(keys)
            if clash:
                raise ValueError(f"pack: item has the key {min(clash)!r}, which pack() would add")
            self.keys = keys
        self.learnt = True

    def _check_dtypes(self, fields: tuple[np.ndarray, ...]) -> None:
        """The first item with tokens fixes the dtypes; the others must have them."""
        if not self.dtypes:
            dtypes = tuple(a.dtype for a in fields)
            for dt in dtypes:
                try:
                    np.full(1, self.pad_value, dtype=dt)
                except (TypeError, ValueError, OverflowError):
                    raise TypeError(f"pack: pad_value={self.pad_value!r} does not fit dtype {dt}") from None
            self.dtypes = dtypes
            return
        for f, (a, dt) in enumerate(zip(fields, self.dtypes)):
            if a.dtype != dt:
                what = "item" if self.keys is None else f"item[{self.keys[f]!r}]"
                raise TypeError(f"pack: {what} has dtype {a.dtype}; the first item's had {dt}")

    def __call__(self, chunk: Chunk) -> Chunk:
        out: Chunk = []
        i = self.seen
        try:
            for x in chunk:
                self._take(i, self._fields(x), out)
                i += 1
        except Exception as exc:
            add_note(exc, self.label, i)
            self.seen = i
            raise
        self.seen = i
        return self._drop_discarded(out)

    def _take(self, i: int, fields: tuple[np.ndarray, ...], out: Chunk) -> None:
        """Pack input number ``i``; rows that go out are appended to ``out``."""
        L = self.length
        n = fields[0].shape[0]
        off = 0
        if n > L:
            if self.too_long == "raise":
                raise ValueError(
                    f"pack: item has length {n}, more than length={L} "
                    "(too_long='split' cuts it into pieces, 'truncate' keeps its start)"
                )
            if self.too_long == "truncate":
                n = L
            else:
                while n - off > L:
                    self._emit(i, [(i, off)], [tuple(a[off : off + L] for a in fields)], L, out)
                    off += L
        size = n - off
        if size <= 0:
            return  # an empty sequence, or a split one with nothing left over
        piece = tuple(a[off : off + size] for a in fields)
        if size == L:
            self._emit(i, [(i, off)], [piece], L, out)
            return
        rows, rooms = self.rows, self.rooms
        if self.fit == "first":
            j = next((j for j, room in enumerate(rooms) if room >= size), -1)
        else:  # the least room that fits; among equals, the row opened first
            best = min((room for room in rooms if room >= size), default=-1)
            j = rooms.index(best) if best >= 0 else -1
        if j < 0:
            if len(rows) >= self.buffer:
                k = rooms.index(min(rooms))  # the fullest; among equals, the row opened first
                self._emit_row(i, rows.pop(k), rooms.pop(k), out)
            j = len(rows)
            rows.append(_Row())
            rooms.append(L)
        row = rows[j]
        row.members.append((i, off))
        row.pieces.append(piece)
        rooms[j] -= size
        if not rooms[j]:
            del rows[j], rooms[j]
            self._emit_row(i, row, 0, out)

    def _emit_row(self, producer: int, row: _Row, room: int, out: Chunk) -> None:
        self._emit(producer, row.members, row.pieces, self.length - room, out)

    def _emit(
        self,
        producer: int,
        members: list[tuple[int, int]],
        pieces: list[tuple[np.ndarray, ...]],
        used: int,
        out: Chunk,
    ) -> None:
        self.made.append((producer, members))
        out.append(self._row(pieces, used))

    def _row(self, pieces: list[tuple[np.ndarray, ...]], used: int) -> dict[str, np.ndarray]:
        """The output row of ``pieces``, ``used`` tokens in all: a few slice assignments
        a piece (NumPy calls on small lists cost more than copying the tokens)."""
        L = self.length
        arange = self.arange
        seg = np.empty(L, dtype=np.int32)
        pos = np.empty(L, dtype=np.int32)
        seg[used:] = 0
        pos[used:] = 0
        keys = self.keys if self.keys is not None else (TOKENS,)
        values = [np.empty(L, dtype=dt) for dt in self.dtypes]
        start = 0
        for k, piece in enumerate(pieces, 1):
            end = start + piece[0].shape[0]
            seg[start:end] = k
            pos[start:end] = arange[: end - start]
            for v, a in zip(values, piece):
                v[start:end] = a
            start = end
        row: dict[str, np.ndarray] = {}
        for f, (key, v) in enumerate(zip(keys, values)):
            v[used:] = self.pad_value
            row[key] = v
            row[f"{key}_segment_ids"] = seg if f == 0 else seg.copy()
            row[f"{key}_positions"] = pos if f == 0 else pos.copy()
        self.tokens_out += used
        self.slots_out += L
        return row

    def flush(self) -> Chunk:
        rows, rooms = self.rows, self.rooms
        self.rows, self.rooms = [], []
        out: Chunk = []
        for row, room in zip(rows, rooms):
            self._emit_row(self.seen, row, room, out)
        return self._drop_discarded(out)

    def _drop_discarded(self, out: Chunk) -> Chunk:
        """``out`` less the rows a resumed run drops (the consumer had them)."""
        if self.discard and out:
            k = min(self.discard, len(out))
            self.discard -= k
            key = self.keys[0] if self.keys is not None else TOKENS
            for row in out[:k]:  # not made in this run, as far as statistics go
                self.tokens_out -= int(np.count_nonzero(row[f"{key}_segment_ids"]))
                self.slots_out -= self.length
            out = out[k:]
        return out

    def demand(self, downstream: int | None) -> int | None:
        return None

    # -- checkpoints -----------------------------------------------------------------
    def _producer(self, r: int) -> int | None:
        k = r - self.made_first
        return self.made[k][0] if 0 <= k < len(self.made) else None

    def cut(self, r: int) -> Cut:
        if r == 0:
            return Cut(0)
        last = self._producer(r - 1)
        assert last is not None, "snake: pack() was asked for a row it has forgotten"
        if self._producer(r) == last:  # among the rows of one input: from that input on
            c = last
            d = sum(1 for p, _ in self.made[: r - self.made_first] if p == last)
        else:
            c, d = last + 1, 0
        rows: list[list[tuple[int, int]]] = []
        for p, members in self.made[r - d - self.made_first :]:
            if p >= c:
                rows.append(members)
        rows += [row.members for row in self.rows]
        held_rows = [[m for m in members if m[0] < c] for members in rows]
        held_rows = sorted((m for m in held_rows if m), key=lambda m: m[0][0])
        state: dict[str, Any] = {}
        if held_rows:
            state["rows"] = [[n for n, _ in members] for members in held_rows]
            offsets = [[n, off] for members in held_rows for n, off in members if off]
            if offsets:
                state["offsets"] = offsets
        if d:
            state["discard"] = d
        held = tuple(sorted(n for members in held_rows for n, _ in members))
        return Cut(c, state, held)

    def prune(self, r: int) -> None:
        k = r - 1 - self.made_first
        if k <= 0 or k >= len(self.made):
            return
        producer = self.made[k][0]
        while k > 0 and self.made[k - 1][0] == producer:
            k -= 1
        del self.made[:k]
        self.made_first += k

    def restore(self, entry: dict[str, Any]) -> None:
        self.discard = int(entry.get("discard", 0))
        self.made_first = int(entry["at"]) - self.discard
        rows = entry.get("rows", [])
        offsets = {int(n): int(off) for n, off in entry.get("offsets", [])}
        self.rows, self.rooms = [], []
        self.places = {}
        for j, members in enumerate(rows):
            row = _Row()
            self.rooms.append(self.length)
            row.members = [(int(n), offsets.get(int(n), 0)) for n in members]
            row.pieces = [() for _ in members]
            self.rows.append(row)
            for q, n in enumerate(members):
                self.places[int(n)] = (j, q)
        super().restore(entry)

    def take_back(self, held: list[int]) -> None:
        back = sorted(int(n) for n in held)
        if sorted(self.places) != back:
            raise ValueError(
                f"state_dict: the entry of {self.label} holds {back[:5]!r}..., not the inputs of its rows"
            )
        self.back = back

    def put_back(self, rank: int, item: Any) -> None:
        n = self.back[rank]
        j, q = self.places[n]
        row = self.rows[j]
        off = row.members[q][1]
        fields = self._fields(item)
        size = fields[0].shape[0]
        if self.too_long == "truncate":
            size = min(size, self.length)
        piece = tuple(a[off:size] for a in fields)
        row.pieces[q] = piece
        self.rooms[j] -= size - off


def _as_1d(x: Any, what: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        a = x
    elif isinstance(x, (list, tuple)):
        a = np.asarray(x)
    else:
        raise TypeError(f"pack: {what} is {type(x).__qualname__}; it must be a 1-D NumPy array (or a list)")
    if a.ndim != 1:
        raise ValueError(f"pack: {what} has shape {a.shape}; it must be 1-D")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"pack: {what} has dtype {a.dtype}; it must hold numbers (bool, int or float)")
    return a


def check_pack(fit: object, too_long: object, pad_value: object) -> None:
    """Validate the options of ``pack`` that ``check_int`` does not."""
    if fit not in FITS:
        raise ValueError(f"pack: fit={fit!r} must be one of {', '.join(map(repr, FITS))}")
    if too_long not in TOO_LONG:
        raise ValueError(f"pack: too_long={too_long!r} must be one of {', '.join(map(repr, TOO_LONG))}")
    if not isinstance(pad_value, NUMBER_TYPES) or isinstance(pad_value, complex):
        raise TypeError(f"pack: pad_value={pad_value!r} must be a bool, int or float")


@attrs.frozen
class Pack(InlineSpec):
    length: int
    buffer: int = 16
    fit: Fit = "best"
    too_long: TooLong = "split"
    pad_value: float = 0

    def describe(self) -> str:
        extra = ""
        if self.buffer != 16:
            extra += f", buffer={self.buffer}"
        if self.fit != "best":
            extra += f", fit={self.fit!r}"
        if self.too_long != "split":
            extra += f", too_long={self.too_long!r}"
        if not (self.pad_value == 0 and type(self.pad_value) is int):
            extra += f", pad_value={self.pad_value!r}"
        return f"pack({self.length}{extra})"

    def make(self, label: str) -> Op:
        return _PackOp(label, self.length, self.buffer, self.fit, self.too_long, self.pad_value)
