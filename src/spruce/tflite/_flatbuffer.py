"""Bounds-checked access to FlatBuffers tables.

The code that `flatc` generates for Python follows every offset it reads without
checking it, so a corrupted file gives `struct.error`, `IndexError`, or a loop over
a bogus vector length of four billion. `Table` below reads the same wire format
but checks each offset, length and vtable entry against the buffer first, and
raises `FlatbufferError` (with where it happened) instead.

Wire format, in brief: a table starts with an int32 that points back to its vtable;
the vtable lists uint16 offsets of the fields (0 = absent). Reference fields
(tables, vectors, strings) hold a uint32 offset relative to the field itself; a
vector starts with its uint32 length.
"""

import struct

import numpy as np


class FlatbufferError(ValueError):
    """A FlatBuffers offset, length or vtable entry points outside the buffer."""


_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")

_SCALARS = {
    "bool": struct.Struct("<?"),
    "int8": struct.Struct("<b"),
    "uint8": struct.Struct("<B"),
    "int16": struct.Struct("<h"),
    "uint16": struct.Struct("<H"),
    "int32": struct.Struct("<i"),
    "uint32": struct.Struct("<I"),
    "int64": struct.Struct("<q"),
    "uint64": struct.Struct("<Q"),
    "float32": struct.Struct("<f"),
}


class Table:
    """One FlatBuffers table at `pos` in `buf`; `what` names it in error messages."""

    __slots__ = ("buf", "pos", "what", "_vtable", "_vtable_size")

    def __init__(self, buf, pos, what):
        self.buf = buf
        self.pos = pos
        self.what = what
        _check_range(buf, pos, 4, what)
        vtable = pos - _I32.unpack_from(buf, pos)[0]
        _check_range(buf, vtable, 4, f"{what}'s vtable")
        size = _U16.unpack_from(buf, vtable)[0]
        if size < 4 or size % 2:
            raise FlatbufferError(f"{what}'s vtable has an invalid size {size}")
        _check_range(buf, vtable, size, f"{what}'s vtable")
        self._vtable = vtable
        self._vtable_size = size

    @classmethod
    def root(cls, buf, what="model"):
        _check_range(buf, 0, 4, "the root offset")
        return cls(buf, _U32.unpack_from(buf, 0)[0], what)

    def field_position(self, slot):
        """Absolute position of field `slot`, or None when the field is absent."""
        entry = 4 + 2 * slot
        if entry + 2 > self._vtable_size:
            return None
        offset = _U16.unpack_from(self.buf, self._vtable + entry)[0]
        return None if offset == 0 else self.pos + offset

    def has(self, slot):
        return self.field_position(slot) is not None

    def scalar(self, slot, kind, default=0):
        where = self.field_position(slot)
        if where is None:
            return default
        fmt = _SCALARS[kind]
        _check_range(self.buf, where, fmt.size, f"{self.what} field {slot}")
        return fmt.unpack_from(self.buf, where)[0]

    def _indirect(self, slot, name):
        where = self.field_position(slot)
        if where is None:
            return None
        _check_range(self.buf, where, 4, f"{self.what}.{name}")
        return where + _U32.unpack_from(self.buf, where)[0]

    def table(self, slot, name):
        """The sub-table in field `slot`, or None."""
        target = self._indirect(slot, name)
        return None if target is None else Table(self.buf, target, f"{self.what}.{name}")

    def vector_span(self, slot, name, elem_size):
        """(start, length) of the vector in field `slot`, checked; None if absent."""
        target = self._indirect(slot, name)
        if target is None:
            return None
        _check_range(self.buf, target, 4, f"{self.what}.{name} (vector length)")
        length = _U32.unpack_from(self.buf, target)[0]
        _check_range(self.buf, target + 4, length * elem_size, f"{self.what}.{name} ({length} elements)")
        return target + 4, length

    def vector_len(self, slot, name):
        found = self.vector_span(slot, name, 4)
        return 0 if found is None else found[1]

    def numbers(self, slot, name, dtype):
        """A vector of scalars as a read-only NumPy array (empty if absent)."""
        dtype = np.dtype(dtype).newbyteorder("<")
        found = self.vector_span(slot, name, dtype.itemsize)
        if found is None:
            return np.zeros(0, dtype)
        start, length = found
        return np.frombuffer(self.buf, dtype=dtype, count=length, offset=start)

    def bytes(self, slot, name):
        """A [ubyte] vector as a memoryview (None if absent)."""
        found = self.vector_span(slot, name, 1)
        if found is None:
            return None
        start, length = found
        return memoryview(self.buf)[start:start + length]

    def string(self, slot, name, default=""):
        raw = self.bytes(slot, name)
        if raw is None:
            return default
        return bytes(raw).decode("utf-8", errors="replace")

    def tables(self, slot, name):
        """The tables of a vector of tables (empty list if absent)."""
        found = self.vector_span(slot, name, 4)
        if found is None:
            return []
        start, length = found
        out = []
        for i in range(length):
            at = start + 4 * i
            out.append(Table(self.buf, at + _U32.unpack_from(self.buf, at)[0], f"{self.what}.{name}[{i}]"))
        return out


def _check_range(buf, start, size, what):
    if start < 0 or size < 0 or start + size > len(buf):
        raise FlatbufferError(
            f"{what} lies outside the file: bytes [{start}, {start + size}) of a {len(buf)}-byte buffer"
        )
