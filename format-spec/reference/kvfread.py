#!/usr/bin/env python3
"""kvfread: an independent reference reader for the kvferry snapshot format, version 1.x.

Written from format-spec/SPEC.md alone, without looking at kvferry's code, to show that the
specification defines the format. Section numbers (§4.3) and requirement ids (F-BLK-2) in the
comments refer to SPEC.md.

    python3 kvfread.py cat SNAPSHOT_DIR

validates the snapshot completely and only then prints its canonical JSON rendering (§10). On the
first violation it prints one line `kvfread: <file>: <where>: <what>` to stderr, nothing to stdout,
and exits 1. Usage errors exit 2. Files are read whole into memory: this is a checker for test
fixtures, not a tool for big snapshots.
"""

import base64
import hashlib
import json
import math
import os
import re
import struct
import sys
import zlib
from collections import Counter
from contextlib import contextmanager

import zstandard

SUPPORTED_MAJOR = 1  # F-VER-1

# §4.1 frame magics, read as u32 little-endian (F-CONV-1)
HEADER_FRAME, BLOCK_FRAME, TRAILER_FRAME = 0x184D2A5A, 0x184D2A5B, 0x184D2A5C
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

# §7 limits
MIB = 1 << 20
HEADER_BODY_MAX = MIB
R_MAX = 256 * MIB
D_MAX = R_MAX + MIB
TRAILER_BODY_MAX = 64 * MIB
MAX_NESTING = 16

# §5.2 kinds and type names, §5.2 flags
TYPE_NAMES = {1: "string", 2: "hash", 3: "list", 4: "set", 5: "zset", 6: "stream"}
LAST, PIKA_HLL, MULTI_TYPE = 0x1, 0x2, 0x4
RESERVED_FLAGS = 0xFFFF_FFFF_0000_FFF8  # bits 3-15 and 32-63 (F-REC-3)


class Reject(Exception):
    """The input violates the specification; the message says where and what."""


@contextmanager
def where(place):
    """Prefix the message of any Reject raised inside with `place: `."""
    try:
        yield
    except Reject as e:
        raise Reject(f"{place}: {e}") from None


def need(ok, message):
    if not ok:
        raise Reject(message)


# ---------------------------------------------------------------------------------------------
# §2 Conventions

def crc32(data):  # F-CONV-2: CRC-32/ISO-HDLC, as zlib computes it
    return zlib.crc32(data) & 0xFFFFFFFF


def u32(buf, offset):  # F-CONV-1
    return struct.unpack_from("<I", buf, offset)[0]


class Float32:
    """A MessagePack float 32: valid inside skippable records only (a score is always float 64)."""
    def __init__(self, value):
        self.value = value


class Ext:
    """A MessagePack extension value: valid inside skippable records only."""
    def __init__(self, code, data):
        self.code, self.data = code, data


class Map:
    """A MessagePack map, kept as (key, value) pairs since keys may be unhashable."""
    def __init__(self, pairs):
        self.pairs = pairs


class Decoder:
    """A strict MessagePack decoder (F-CONV-4) over one buffer: bin decodes to bytes, str to str,
    float 64 to float, float 32 to Float32, so that every type check of the spec can be made.
    It enforces the nesting and length limits of §7 before allocating anything."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def remaining(self):
        return len(self.buf) - self.pos

    def take(self, n):  # §7: a length beyond the remaining bytes is rejected before allocating
        need(n <= self.remaining(), f"MessagePack data needs {n} bytes at offset {self.pos}, "
                                    f"only {self.remaining()} remain (§7)")
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def be_int(self, size, signed=False):  # MessagePack integers are big-endian
        return int.from_bytes(self.take(size), "big", signed=signed)

    def value(self, depth=0):
        at = self.pos
        m = self.be_int(1)
        if m <= 0x7F:
            return m                                    # positive fixint
        if m >= 0xE0:
            return m - 0x100                            # negative fixint
        if m <= 0x8F:
            return self.read_map(m & 0x0F, depth)            # fixmap
        if m <= 0x9F:
            return self.read_array(m & 0x0F, depth)          # fixarray
        if m <= 0xBF:
            return self.read_str(m & 0x1F)                   # fixstr
        if m == 0xC0:
            return None
        if m in (0xC2, 0xC3):
            return m == 0xC3
        if 0xC4 <= m <= 0xC6:                           # bin 8/16/32
            return bytes(self.take(self.be_int(1 << (m - 0xC4))))
        if 0xC7 <= m <= 0xC9:                           # ext 8/16/32
            return self.read_ext(self.be_int(1 << (m - 0xC7)))
        if m == 0xCA:
            return Float32(struct.unpack(">f", self.take(4))[0])
        if m == 0xCB:
            return struct.unpack(">d", self.take(8))[0]
        if 0xCC <= m <= 0xCF:                           # uint 8/16/32/64
            return self.be_int(1 << (m - 0xCC))
        if 0xD0 <= m <= 0xD3:                           # int 8/16/32/64
            return self.be_int(1 << (m - 0xD0), signed=True)
        if 0xD4 <= m <= 0xD8:                           # fixext 1/2/4/8/16
            return self.read_ext(1 << (m - 0xD4))
        if 0xD9 <= m <= 0xDB:                           # str 8/16/32
            return self.read_str(self.be_int(1 << (m - 0xD9)))
        if m in (0xDC, 0xDD):                           # array 16/32
            return self.read_array(self.be_int(2 if m == 0xDC else 4), depth)
        if m in (0xDE, 0xDF):                           # map 16/32
            return self.read_map(self.be_int(2 if m == 0xDE else 4), depth)
        raise Reject(f"invalid MessagePack marker 0x{m:02x} at offset {at}")

    def nest(self, count, depth):  # §7: 16 levels of arrays/maps at most; each element >= 1 byte
        need(depth < MAX_NESTING, f"MessagePack nesting deeper than {MAX_NESTING} levels at "
                                  f"offset {self.pos} (§7)")
        need(count <= self.remaining(), f"MessagePack container of {count} elements at offset "
                                        f"{self.pos} exceeds the {self.remaining()} remaining bytes (§7)")

    def read_array(self, n, depth):
        self.nest(n, depth)
        return [self.value(depth + 1) for _ in range(n)]

    def read_map(self, n, depth):
        self.nest(2 * n, depth)
        return Map([(self.value(depth + 1), self.value(depth + 1)) for _ in range(n)])

    def read_str(self, n):
        at, raw = self.pos, self.take(n)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Reject(f"MessagePack str at offset {at} is not valid UTF-8") from None

    def read_ext(self, n):
        code = self.be_int(1, signed=True)
        return Ext(code, bytes(self.take(n)))


def type_of(v):
    """The MessagePack type of a decoded value, for error messages."""
    if v is None:
        return "nil"
    for cls, name in ((bool, "bool"), (bytes, "bin"), (str, "str"), (float, "float 64"),
                      (Float32, "float 32"), (list, "array"), (Map, "map"), (Ext, "ext")):
        if isinstance(v, cls):
            return name
    return "uint" if v >= 0 else f"negative integer {v}"


def want_uint(v, what):  # F-CONV-4: any integer encoding of a non-negative value
    need(type(v) is int and v >= 0, f"{what} must be a uint, found {type_of(v)}")
    return v


def want_uint_or_nil(v, what):
    need(v is None or type(v) is int and v >= 0, f"{what} must be a uint or nil, found {type_of(v)}")
    return v


def want_bin(v, what):  # F-CONV-4: a str where bin is required is an error
    need(type(v) is bytes, f"{what} must be bin, found {type_of(v)}")
    return v


def want_str(v, what):
    need(type(v) is str, f"{what} must be str, found {type_of(v)}")
    return v


def want_array(v, what, length=None):
    need(type(v) is list, f"{what} must be an array, found {type_of(v)}")
    need(length is None or len(v) == length, f"{what} must have {length} elements, has {len(v)}")
    return v


def want_str_map(v, what):  # F-CONV-5: a map with str keys, as a dict
    need(type(v) is Map, f"{what} must be a map, found {type_of(v)}")
    out = {}
    for key, value in v.pairs:
        want_str(key, f"a key of {what}")
        need(key not in out, f"{what} has the key {key!r} twice")
        out[key] = value
    return out


def required(m, key, what):
    need(key in m, f"{what} lacks the required key {key!r}")
    return m[key]


def decode_body(body, what):
    """Decode a header or trailer body: exactly one MessagePack map filling all B bytes."""
    dec = Decoder(body)
    value = dec.value()
    need(dec.remaining() == 0, f"{dec.remaining()} bytes follow the {what} map")
    return want_str_map(value, what)


# ---------------------------------------------------------------------------------------------
# §10 The canonical JSON rendering

JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                "\t": "\\t"}


def json_str(s):  # F-JSON-1: escape only these; everything else as its UTF-8 bytes
    out = (JSON_ESCAPES.get(c) or (f"\\u{ord(c):04x}" if c < " " else c) for c in s)
    return '"' + "".join(out) + '"'


def json_bytes(b):  # BYTES: a string when valid UTF-8, else {"base64":...}
    try:
        return json_str(b.decode("utf-8"))
    except UnicodeDecodeError:
        return '{"base64":"' + base64.b64encode(b).decode("ascii") + '"}'


def json_object(fields):  # fields: (name, JSON text) pairs, in the order §10 gives
    return "{" + ",".join(f'"{name}":{text}' for name, text in fields) + "}"


def json_list(items):
    return "[" + ",".join(items) + "]"


def json_num(n):
    return "null" if n is None else str(n)


def json_id(ms, seq):
    return f'"{ms}-{seq}"'


def json_score(x):  # F-JSON-2: ECMAScript Number::toString
    if math.isnan(x):
        return '"nan"'
    if math.isinf(x):
        return '"inf"' if x > 0 else '"-inf"'
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    # repr() gives the shortest round-trip digits; find digits s (k of them) and exponent n
    mantissa, _, exponent = repr(abs(x)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    n = len(whole) + int(exponent or "0")
    s = digits.lstrip("0")
    n -= len(digits) - len(s)
    s = s.rstrip("0")
    k = len(s)
    if k <= n <= 21:
        text = s + "0" * (n - k)                               # rule 1
    elif 0 < n <= 21:
        text = s[:n] + "." + s[n:]                             # rule 2
    elif -6 < n <= 0:
        text = "0." + "0" * -n + s                             # rule 3
    else:
        text = s[0] + ("." + s[1:] if k > 1 else "") + "e" + ("+" if n >= 1 else "-") + str(abs(n - 1))
    return ("-" if x < 0 else "") + text


def json_pairs(items):  # [[field,value],...] from field, value, field, value, ...
    return json_list(f"[{json_bytes(a)},{json_bytes(b)}]" for a, b in zip(items[0::2], items[1::2]))


def render_line(shard, kind, db, key, part, flags, expire, value_json):  # F-JSON-1
    names = []
    if flags & PIKA_HLL:
        names.append('"pika_hll"')
    if flags & MULTI_TYPE:
        names.append('"multi_type"')
    names += [f'"bit{b}"' for b in range(16, 32) if flags >> b & 1]  # advisory bits
    return json_object([
        ("shard", json_str(shard)), ("db", str(db)), ("key", json_bytes(key)),
        ("type", json_str(TYPE_NAMES[kind])), ("part", str(part)),
        ("last", "true" if flags & LAST else "false"), ("expire_at_ms", json_num(expire)),
        ("flags", json_list(names)), ("value", value_json)]) + "\n"


# ---------------------------------------------------------------------------------------------
# §5.2 Values. Each reader checks one part's value (F-REC-4, F-REC-5) and returns
# (JSON rendering, value_bytes, elements) of that part, value_bytes and elements as in F-TRL-3.

def bin_list(v, what, even=False):
    items = want_array(v, what)
    for i, item in enumerate(items):
        want_bin(item, f"{what} element {i}")
    need(not even or len(items) % 2 == 0, f"{what} must have an even number of elements")
    return items


def string_value(v, last):
    want_bin(v, "string value")
    return json_bytes(v), len(v), 1


def hash_value(v, last):
    items = bin_list(v, "hash value", even=True)
    return json_pairs(items), sum(map(len, items)), len(items) // 2


def list_value(v, last, what="list value"):
    items = bin_list(v, what)
    return json_list(map(json_bytes, items)), sum(map(len, items)), len(items)


def set_value(v, last):
    return list_value(v, last, "set value")


def zset_value(v, last):
    items = want_array(v, "zset value")
    need(len(items) % 2 == 0, "zset value must have an even number of elements")
    members, scores = items[0::2], items[1::2]
    for i, (member, score) in enumerate(zip(members, scores)):
        want_bin(member, f"zset member {i}")
        need(type(score) is float, f"zset score {i} must be float 64, found {type_of(score)}")
    rendered = json_list(f"[{json_bytes(m)},{json_score(s)}]" for m, s in zip(members, scores))
    return rendered, sum(map(len, members)) + 8 * len(scores), len(members)


def stream_id(v, what):  # id = [ms, seq], rendered "ms-seq"
    ms, seq = want_array(v, what, 2)
    return json_id(want_uint(ms, what + " ms"), want_uint(seq, what + " seq"))


def stream_value(v, last):  # F-REC-5
    entries, meta = want_array(v, "stream value", 2)
    rendered, value_bytes = [], 0
    for i, entry in enumerate(want_array(entries, "stream entries")):
        ms, seq, fields = want_array(entry, f"stream entry {i}", 3)
        entry_id = stream_id([ms, seq], f"stream entry {i}")
        fields = bin_list(fields, f"stream entry {i} fields", even=True)
        rendered.append(f"[{entry_id},{json_pairs(fields)}]")
        value_bytes += 16 + sum(map(len, fields))
    if not last:
        need(meta is None, "stream meta must be nil in every part but the last")
        meta_json = "null"
    else:
        need(meta is not None, "stream meta must not be nil in the last part")
        meta_json = stream_meta(meta)
    return json_object([("entries", json_list(rendered)), ("meta", meta_json)]), value_bytes, len(rendered)


def stream_meta(v):
    last_id, entries_added, max_deleted_id, groups = want_array(v, "stream meta", 4)
    groups = want_array(groups, "stream groups")
    return json_object([
        ("last_id", stream_id(last_id, "last_id")),
        ("entries_added", json_num(want_uint_or_nil(entries_added, "entries_added"))),
        ("max_deleted_id", "null" if max_deleted_id is None else stream_id(max_deleted_id, "max_deleted_id")),
        ("groups", json_list(stream_group(g, f"stream group {i}") for i, g in enumerate(groups)))])


def stream_group(v, what):
    name, delivered, entries_read, consumers, pending = want_array(v, what, 5)
    consumers = want_array(consumers, what + " consumers")
    pending = want_array(pending, what + " pending")
    return json_object([
        ("name", json_bytes(want_bin(name, what + " name"))),
        ("last_delivered_id", stream_id(delivered, what + " last_delivered_id")),
        ("entries_read", json_num(want_uint_or_nil(entries_read, what + " entries_read"))),
        ("consumers", json_list(stream_consumer(c, f"{what} consumer {i}") for i, c in enumerate(consumers))),
        ("pending", json_list(stream_pending(p, f"{what} pending {i}") for i, p in enumerate(pending)))])


def stream_consumer(v, what):
    name, seen = want_array(v, what, 2)
    return json_object([("name", json_bytes(want_bin(name, what + " name"))),
                        ("seen_time_ms", json_num(want_uint_or_nil(seen, what + " seen_time_ms")))])


def stream_pending(v, what):
    entry_id, consumer, time_ms, count = want_array(v, what, 4)
    return json_object([("id", stream_id(entry_id, what + " id")),
                        ("consumer", json_bytes(want_bin(consumer, what + " consumer"))),
                        ("delivery_time_ms", str(want_uint(time_ms, what + " delivery_time_ms"))),
                        ("delivery_count", str(want_uint(count, what + " delivery_count")))])


VALUE_READERS = {1: string_value, 2: hash_value, 3: list_value, 4: set_value, 5: zset_value,
                 6: stream_value}


# ---------------------------------------------------------------------------------------------
# §5, §6 Records of one file: kinds, key records, parts; the counts the trailer must match

class Occurrence:
    """A key occurrence being read (F-PART-1)."""
    def __init__(self, identity, key):
        self.identity, self.key = identity, key
        self.next_part, self.value_bytes, self.elements = 0, 0, 0


class FileRecords:
    """Checks the records of one file in order and tallies what F-TRL-3 counts."""

    def __init__(self, shard, db):
        self.shard, self.db = shard, db
        self.lines = []
        self.records = self.keys = self.expiring_keys = 0
        self.keys_by_type = Counter()
        self.min_expire = self.max_expire = None
        self.big = []          # (value_bytes, key, type name, elements) of every occurrence
        self.open = None       # the occurrence whose last part has not been seen yet

    def record(self, v):
        self.records += 1
        rec = want_array(v, "record")
        need(len(rec) >= 1, "record is an empty array (F-REC-1)")
        kind = want_uint(rec[0], "record kind")
        if 64 <= kind <= 127:  # F-REC-1: skippable; F-PART-1: never inside an occurrence
            need(self.open is None, f"skippable record of kind {kind} inside an open key occurrence "
                                    f"(F-PART-1)")
            return
        need(kind != 0 and kind < 128, f"record kind {kind} is reserved (F-REC-1)")
        need(kind in TYPE_NAMES, f"record kind {kind} is a must-understand kind this reader does "
                                 f"not know (F-REC-1)")
        need(len(rec) == 7, f"key record must have 7 elements, has {len(rec)} (F-REC-2)")
        _, db, key, part, flags, expire, value = rec
        need(want_uint(db, "db") == self.db, f"record db {db} differs from the header's db {self.db} "
                                             f"(F-REC-2)")
        want_bin(key, "key")
        want_uint(part, "part")
        want_uint(flags, "flags")
        need(flags & RESERVED_FLAGS == 0, f"reserved flag bits set: 0x{flags & RESERVED_FLAGS:x} (F-REC-3)")
        need(not flags & PIKA_HLL or kind == 1, "flag PIKA_HLL on a record that is not a string (F-REC-3)")
        need(want_uint_or_nil(expire, "expire_at_ms") != 0, "expire_at_ms is 0 (F-EXP-1)")
        last = bool(flags & LAST)
        value_json, value_bytes, elements = VALUE_READERS[kind](value, last)

        identity = (kind, db, key, expire, flags & ~LAST)  # F-PART-2
        if part == 0:
            need(self.open is None, f"part 0 of key {key!r} while the occurrence of key "
                                    f"{self.open and self.open.key!r} is still open (F-PART-2)")
            self.start_occurrence(identity, key, kind, expire)
        else:
            need(self.open is not None, f"part {part} of key {key!r} continues no open occurrence "
                                        f"(F-PART-2)")
            need(part == self.open.next_part, f"part {part} of key {key!r} where part "
                                              f"{self.open.next_part} was due (F-PART-2)")
            for i, name in enumerate(("kind", "db", "key", "expire_at_ms", "flags")):
                need(identity[i] == self.open.identity[i], f"part {part} of key {key!r} disagrees "
                                                           f"with part 0 on {name} (F-PART-2)")
        occ = self.open
        occ.next_part = part + 1
        occ.value_bytes += value_bytes
        occ.elements = 1 if kind == 1 else occ.elements + elements
        if last:
            self.big.append((occ.value_bytes, occ.key, TYPE_NAMES[kind], occ.elements))
            self.open = None
        self.lines.append(render_line(self.shard, kind, db, key, part, flags, expire, value_json))

    def start_occurrence(self, identity, key, kind, expire):
        self.open = Occurrence(identity, key)
        self.keys += 1
        self.keys_by_type[TYPE_NAMES[kind]] += 1
        if expire is not None:
            self.expiring_keys += 1
            self.min_expire = expire if self.min_expire is None else min(self.min_expire, expire)
            self.max_expire = expire if self.max_expire is None else max(self.max_expire, expire)

    def finish(self):  # F-PART-2: a file must not end inside an occurrence
        need(self.open is None, f"file ends inside the occurrence of key {self.open and self.open.key!r}, "
                                f"whose part {self.open and self.open.next_part - 1} lacks LAST (F-PART-2)")


# ---------------------------------------------------------------------------------------------
# §4 The shard file

def read_header(data, shard, db, part):
    """§4.2: check the header frame; return the offset where the first block starts."""
    with where("header frame at offset 0"):
        need(len(data) >= 8, f"file of {len(data)} bytes is too short for a header frame")
        magic = u32(data, 0)  # F-HDR-2 order: frame magic, KVFSHARD, major version, ...
        need(magic == HEADER_FRAME, f"frame magic is 0x{magic:08X}, expected 0x{HEADER_FRAME:08X} "
                                    f"(F-HDR-1)")
        need(len(data) >= 8 + 16, "file is truncated inside the header frame")
        need(data[8:16] == b"KVFSHARD", "payload does not start with KVFSHARD (F-HDR-1)")
        major, minor = struct.unpack_from("<HH", data, 16)
        need(major == SUPPORTED_MAJOR, f"unsupported major version: file is version {major}.{minor}, "
                                       f"this reader supports {SUPPORTED_MAJOR}.x (F-VER-1)")
        body_len, frame_size = u32(data, 20), u32(data, 4)
        need(body_len <= HEADER_BODY_MAX, f"body length {body_len} exceeds {HEADER_BODY_MAX} (§7)")
        need(frame_size == 20 + body_len, f"Frame_Size {frame_size} is not 20 + B = {20 + body_len} "
                                          f"(F-HDR-1)")
        end = 8 + frame_size
        need(len(data) >= end, "file is truncated inside the header frame")
        stored, computed = u32(data, end - 4), crc32(data[8:end - 4])
        need(computed == stored, f"CRC-32 mismatch: stored 0x{stored:08X}, computed 0x{computed:08X} "
                                 f"(F-HDR-2)")
        h = decode_body(data[24:end - 4], "header body")
        # F-HDR-3, F-SNAP-4: the identity the manifest gives this file
        need(want_str(required(h, "shard", "header"), "header shard") == shard,
             f"header says shard {h['shard']!r}, the manifest {shard!r} (F-SNAP-4)")
        need(want_uint(required(h, "part", "header"), "header part") == part,
             f"header says part {h['part']}, the manifest's order makes it part {part} (F-SNAP-4)")
        header_db = want_uint(required(h, "db", "header"), "header db")
        need(header_db <= 0xFFFFFFFF, f"header db {header_db} exceeds 2^32-1 (F-HDR-3)")
        need(header_db == db, f"header says db {header_db}, the manifest {db} (F-SNAP-4)")
        want_str(required(h, "source", "header"), "header source")
        if "source_server" in h:
            want_str(h["source_server"], "header source_server")
        want_uint(required(h, "created_unix_ms", "header"), "header created_unix_ms")
        want_str(required(h, "writer", "header"), "header writer")
    return end


def read_trailer(data, header_end):
    """§4.4: locate and check the trailer frame; return (its offset, its checked body)."""
    with where("trailer"):
        # F-TRL-2: the last 16 bytes are B, the body CRC and KVFTRAIL
        need(len(data) >= header_end + 24 and data[-8:] == b"KVFTRAIL",
             "file does not end with KVFTRAIL: truncated, or not a shard file (F-TRL-2)")
        body_len, body_crc = u32(data, len(data) - 16), u32(data, len(data) - 12)
        need(body_len <= TRAILER_BODY_MAX, f"body length {body_len} exceeds {TRAILER_BODY_MAX} (§7)")
        start = len(data) - 16 - body_len - 8
        need(start >= header_end, f"body length {body_len} puts the trailer frame at offset {start}, "
                                  f"before the end of the header frame at {header_end} (F-TRL-2)")
        with where(f"frame at offset {start}"):
            magic, frame_size = u32(data, start), u32(data, start + 4)
            need(magic == TRAILER_FRAME, f"frame magic is 0x{magic:08X}, expected "
                                         f"0x{TRAILER_FRAME:08X} (F-TRL-2)")
            need(frame_size == body_len + 16, f"Frame_Size {frame_size} is not B + 16 = {body_len + 16} "
                                              f"(F-TRL-2)")
            body = data[start + 8:start + 8 + body_len]
            computed = crc32(body)
            need(computed == body_crc, f"body CRC-32 mismatch: stored 0x{body_crc:08X}, "
                                       f"computed 0x{computed:08X} (F-TRL-4)")
            t = decode_body(body, "trailer body")
            trailer = check_trailer_body(t)
    return start, trailer


def check_trailer_body(t):
    """F-TRL-3: check every key's type; return the body as plain Python values."""
    out = {}
    for key in ("records", "keys", "raw_bytes", "expiring_keys", "file_crc32"):
        out[key] = want_uint(required(t, key, "trailer body"), f"trailer {key}")
    for key in ("min_expire_at_ms", "max_expire_at_ms"):
        out[key] = want_uint_or_nil(required(t, key, "trailer body"), f"trailer {key}")
    out["blocks"] = []
    for i, entry in enumerate(want_array(required(t, "blocks", "trailer body"), "trailer blocks")):
        fields = want_array(entry, f"trailer blocks[{i}]", 4)
        out["blocks"].append(tuple(want_uint(f, f"trailer blocks[{i}] element") for f in fields))
    by_type = want_str_map(required(t, "keys_by_type", "trailer body"), "trailer keys_by_type")
    out["keys_by_type"] = {k: want_uint(v, f"trailer keys_by_type[{k!r}]") for k, v in by_type.items()}
    out["big_keys"] = []
    for i, entry in enumerate(want_array(required(t, "big_keys", "trailer body"), "trailer big_keys")):
        key, type_name, value_bytes, elements = want_array(entry, f"trailer big_keys[{i}]", 4)
        what = f"trailer big_keys[{i}]"
        out["big_keys"].append((want_uint(value_bytes, what + " value_bytes"), want_bin(key, what + " key"),
                                want_str(type_name, what + " type"), want_uint(elements, what + " elements")))
    return out


def decompress(frame, raw_size):
    """F-BLK-2, F-BLK-4: exactly one standard zstd frame with a content checksum, no dictionary,
    decompressing to exactly raw_size bytes."""
    need(frame[:4] == ZSTD_MAGIC, "data frame does not start with the zstd magic (F-BLK-2)")
    try:
        params = zstandard.get_frame_parameters(frame)
    except zstandard.ZstdError as e:
        raise Reject(f"data frame header is unreadable: {e}") from None
    need(params.has_checksum, "data frame lacks the zstd content checksum (F-BLK-2)")
    need(params.dict_id == 0, f"data frame needs dictionary {params.dict_id} (F-BLK-4)")
    need(params.content_size in (zstandard.CONTENTSIZE_UNKNOWN, raw_size),
         f"data frame's Frame_Content_Size {params.content_size} is not R = {raw_size} (F-BLK-2)")
    try:  # libzstd verifies the content checksum; allow_extra_data=False rejects a second frame
        content = zstandard.ZstdDecompressor().decompress(frame, max_output_size=raw_size,
                                                          allow_extra_data=False)
    except zstandard.ZstdError as e:
        raise Reject(f"data frame: zstd error (or content larger than R = {raw_size}): {e} "
                     f"(F-BLK-2)") from None
    need(len(content) == raw_size, f"data frame decompresses to {len(content)} bytes, R = {raw_size} "
                                   f"(F-BLK-2)")
    return content


def read_block(data, pos, end, number, records):
    """§4.3: check the block at `pos` (which must end by `end`); return its index entry."""
    room = end - pos
    need(room >= 36, f"{room} stray bytes between the last block and the trailer frame (F-FRAME-2)")
    magic, frame_size = u32(data, pos), u32(data, pos + 4)
    need(magic == BLOCK_FRAME, f"expected a block header frame (0x{BLOCK_FRAME:08X}), "
                               f"found frame magic 0x{magic:08X} (F-FRAME-2)")
    need(frame_size == 28, f"block header Frame_Size is {frame_size}, not 28 (F-BLK-1)")
    payload = data[pos + 8:pos + 36]
    need(crc32(payload[:24]) == u32(payload, 24), "block header CRC-32 mismatch (F-BLK-2)")
    need(payload[:4] == b"KVFB", "block header payload does not start with KVFB (F-BLK-1)")
    index, d, r, count, data_crc = struct.unpack_from("<5I", payload, 4)
    need(index == number, f"block header says index {index} (F-BLK-1)")
    need(r <= R_MAX, f"R = {r} exceeds the limit {R_MAX} (§7)")
    need(d <= D_MAX, f"D = {d} exceeds the limit {D_MAX} (§7)")
    need(count >= 1, "block holds no records (F-BLK-3)")
    need(d <= room - 36, f"data frame of D = {d} bytes runs past the trailer frame at offset {end} "
                         f"(F-FRAME-2)")
    frame = data[pos + 36:pos + 36 + d]
    computed = crc32(frame)
    need(computed == data_crc, f"data frame CRC-32 mismatch: stored 0x{data_crc:08X}, "
                               f"computed 0x{computed:08X} (F-BLK-2)")
    content = decompress(frame, r)
    dec = Decoder(content)
    for i in range(count):  # F-BLK-2: exactly `count` whole records, nothing after them
        need(dec.remaining() > 0, f"block header says {count} records, the data holds {i} (F-BLK-2)")
        with where(f"record {i} at data offset {dec.pos}"):
            records.record(dec.value())
    need(dec.remaining() == 0, f"{dec.remaining()} bytes remain after record {count - 1} (F-BLK-2)")
    return (pos, d, r, count)


def check_big_keys(listed, occurrences):
    """F-TRL-3 big_keys: the 10 biggest occurrences by (value_bytes desc, key, type). Occurrences
    equal in all three may be listed in any order, and any of them may fill the last places."""
    def order(e):
        return (-e[0], e[1], e[2])
    expected = sorted(occurrences, key=order)[:10]
    need(len(listed) == len(expected), f"big_keys has {len(listed)} entries, expected {len(expected)}")
    for i, (a, b) in enumerate(zip(listed, expected)):
        need(order(a) == order(b), f"big_keys[{i}] is {a[:3]}, expected {b[:3]} (value_bytes, key, type)")
    for tie in set(map(order, listed)):
        got = Counter(e[3] for e in listed if order(e) == tie)
        have = Counter(e[3] for e in occurrences if order(e) == tie)
        need(not got - have, f"big_keys elements of {tie} are {sorted(got.elements())}, "
                             f"the records give {sorted(have.elements())}")


def read_part(data, shard, db, part):
    """§4: validate a whole shard file; return (rendered lines, trailer)."""
    header_end = read_header(data, shard, db, part)
    trailer_start, trailer = read_trailer(data, header_end)
    records = FileRecords(shard, db)
    index, pos = [], header_end  # F-FRAME-2, F-TRL-4: blocks contiguous from header to trailer
    while pos < trailer_start:
        with where(f"block {len(index)} at offset {pos}"):
            index.append(read_block(data, pos, trailer_start, len(index), records))
        pos += 36 + index[-1][1]
    records.finish()
    with where(f"trailer at offset {trailer_start}"):  # F-TRL-4: file CRC, index and counts
        # checked after the blocks, so that a damaged block is reported as such
        computed = crc32(data[:trailer_start])
        need(computed == trailer["file_crc32"], f"file_crc32 0x{trailer['file_crc32']:08X} does not match "
                                                f"the CRC-32 of bytes 0..{trailer_start}, 0x{computed:08X}")
        need(len(trailer["blocks"]) == len(index), f"block index lists {len(trailer['blocks'])} blocks, "
                                                   f"the file holds {len(index)}")
        for i, (listed, actual) in enumerate(zip(trailer["blocks"], index)):
            need(listed == actual, f"block index entry {i} is [offset, D, R, records] = {list(listed)}, "
                                   f"the block header says {list(actual)}")
        for key, actual in (("records", records.records), ("keys", records.keys),
                            ("keys_by_type", dict(records.keys_by_type)),
                            ("raw_bytes", sum(entry[2] for entry in index)),
                            ("expiring_keys", records.expiring_keys),
                            ("min_expire_at_ms", records.min_expire),
                            ("max_expire_at_ms", records.max_expire)):
            need(trailer[key] == actual, f"{key} is {trailer[key]}, the records give {actual}")
        with where("big_keys"):
            check_big_keys(trailer["big_keys"], records.big)
    return records.lines, trailer


# ---------------------------------------------------------------------------------------------
# §3 The snapshot directory and its manifest

ID_FORM = re.compile(r"[A-Za-z0-9._-]{1,128}")
FILE_FORM = re.compile(r"[A-Za-z0-9._-]{1,200}")
VERSION_FORM = re.compile(r"([0-9]+)\.([0-9]+)")
JSON_TYPES = {"string": lambda v: type(v) is str, "integer": lambda v: type(v) is int and v >= 0,
              "array": lambda v: type(v) is list, "object": lambda v: type(v) is dict}


def field(obj, name, kind, what):
    need(name in obj, f"{what} lacks the field {name!r} (F-SNAP-3)")
    need(JSON_TYPES[kind](obj[name]), f"{what} field {name!r} must be a{'n' if kind[0] in 'aio' else ''} "
                                      f"{kind}{' >= 0' if kind == 'integer' else ''}, found {obj[name]!r}")
    return obj[name]


def keys_by_type_field(obj, what):
    kbt = field(obj, "keys_by_type", "object", what)
    for name, count in kbt.items():
        need(JSON_TYPES["integer"](count), f"{what} keys_by_type[{name!r}] must be an integer >= 0")
    return kbt


def unique_keys(pairs):
    names = [k for k, _ in pairs]
    need(len(set(names)) == len(names), f"a JSON object repeats a name: {names}")
    return dict(pairs)


def no_constant(name):
    raise Reject(f"{name} is not JSON (RFC 8259)")


def load_manifest(snapdir):
    """F-SNAP-2..4: read MANIFEST.json and check its structure (not yet the files)."""
    need(os.path.isdir(snapdir), f"{snapdir}: not a directory")
    path = os.path.join(snapdir, "MANIFEST.json")
    need(os.path.isfile(path), f"{snapdir}: no MANIFEST.json, so not a complete snapshot (F-SNAP-2)")
    with where("MANIFEST.json"):
        with open(path, "rb") as f:
            raw = f.read()
        try:
            m = json.loads(raw.decode("utf-8"), object_pairs_hook=unique_keys, parse_constant=no_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise Reject(f"not a UTF-8 JSON document: {e} (F-SNAP-3)") from None
        need(type(m) is dict, "not a JSON object (F-SNAP-3)")
        version = field(m, "version", "string", "manifest")  # F-VER-1: the version first
        form = VERSION_FORM.fullmatch(version)
        need(form is not None, f"version {version!r} is not MAJOR.MINOR (F-SNAP-3)")
        need(int(form[1]) == SUPPORTED_MAJOR, f"unsupported major version: manifest is version {version}, "
                                              f"this reader supports {SUPPORTED_MAJOR}.x (F-VER-1)")
        need(field(m, "format", "string", "manifest") == "kvferry-snapshot",
             f"format is {m['format']!r}, not 'kvferry-snapshot' (F-SNAP-4)")
        field(m, "created_unix_ms", "integer", "manifest")
        field(m, "writer", "string", "manifest")
        shards = field(m, "shards", "array", "manifest")
        need(len(shards) >= 1, "a snapshot holds one or more shard files, the manifest lists no shard (§1)")
        ids, files = set(), set()
        for s, shard in enumerate(shards):
            what = f"shards[{s}]"
            need(type(shard) is dict, f"{what} is not an object")
            shard_id = field(shard, "id", "string", what)
            need(ID_FORM.fullmatch(shard_id), f"{what} id {shard_id!r} is not of the form "
                                              f"[A-Za-z0-9._-]{{1,128}} (F-SNAP-3)")
            need(shard_id not in ids, f"{what} id {shard_id!r} is not unique (F-SNAP-3)")
            ids.add(shard_id)
            field(shard, "source", "string", what)
            field(shard, "db", "integer", what)
            for name in ("keys", "records", "raw_bytes"):
                field(shard, name, "integer", what)
            keys_by_type_field(shard, what)
            if "binlog_start" in shard:  # optional, 1.2: a Pika source's binlog position
                pos = field(shard, "binlog_start", "object", what)
                bwhat = f"{what}.binlog_start"
                need(field(pos, "filenum", "integer", bwhat) < 2 ** 32, f"{bwhat} filenum is over 2^32 - 1")
                field(pos, "offset", "integer", bwhat)
            parts = field(shard, "parts", "array", what)
            need(len(parts) >= 1, f"{what} has no parts; a shard is stored in one or more (§1)")
            for p, part in enumerate(parts):
                pwhat = f"{what}.parts[{p}]"
                need(type(part) is dict, f"{pwhat} is not an object")
                name = field(part, "file", "string", pwhat)
                need(FILE_FORM.fullmatch(name) and name not in (".", ".."),
                     f"{pwhat} file name {name!r} is not of the allowed form (F-SNAP-4)")
                need(name not in files, f"{pwhat} names the file {name!r} a second time (F-SNAP-4)")
                files.add(name)
                for key in ("bytes", "blocks", "records", "keys", "raw_bytes"):
                    field(part, key, "integer", pwhat)
                digest = field(part, "sha256", "string", pwhat)
                need(re.fullmatch(r"[0-9a-f]{64}", digest), f"{pwhat} sha256 is not 64 lowercase hex "
                                                            f"digits (F-CONV-3)")
        totals = field(m, "totals", "object", "manifest")
        for name in ("keys", "records", "raw_bytes", "file_bytes", "files"):
            field(totals, name, "integer", "totals")
        keys_by_type_field(totals, "totals")
    return m


def check_sums(declared, names, sums, types, what):
    for name in names:
        need(declared[name] == sums[name], f"{name} is {declared[name]}, {what} sum to {sums[name]}")
    types = dict(+types)  # types with 0 omitted (F-SNAP-3)
    need(declared["keys_by_type"] == types, f"keys_by_type is {declared['keys_by_type']}, {what} sum to {types}")


def cat(snapdir):
    """Validate the snapshot completely; return its canonical rendering (§10) as bytes."""
    m = load_manifest(snapdir)
    lines, totals, total_types = [], Counter(), Counter()
    for s, shard in enumerate(m["shards"]):
        sums, types = Counter(), Counter()
        for p, part in enumerate(shard["parts"]):
            name = part["file"]
            path = os.path.join(snapdir, name)
            need(os.path.isfile(path), f"{name}: missing (MANIFEST.json shards[{s}].parts[{p}]) (F-SNAP-4)")
            with where(name):
                with open(path, "rb") as f:
                    data = f.read()
                need(len(data) == part["bytes"], f"file is {len(data)} bytes, the manifest says "
                                                 f"{part['bytes']} (F-SNAP-4)")
                digest = hashlib.sha256(data).hexdigest()
                need(digest == part["sha256"], f"SHA-256 is {digest}, the manifest says "
                                               f"{part['sha256']} (F-SNAP-4)")
                part_lines, trailer = read_part(data, shard["id"], shard["db"], p)
                actual = {"blocks": len(trailer["blocks"]), "records": trailer["records"],
                          "keys": trailer["keys"], "raw_bytes": trailer["raw_bytes"]}
                for key, value in actual.items():  # F-SNAP-4: per-part counts equal the trailer
                    need(part[key] == value, f"MANIFEST.json shards[{s}].parts[{p}] {key} is {part[key]}, "
                                             f"the file's trailer says {value} (F-SNAP-4)")
            lines += part_lines
            sums.update(records=trailer["records"], keys=trailer["keys"], raw_bytes=trailer["raw_bytes"],
                        file_bytes=len(data), files=1)
            types.update(trailer["keys_by_type"])
        with where(f"MANIFEST.json: shards[{s}] (id {shard['id']!r})"):  # F-SNAP-4: sums of parts
            check_sums(shard, ("keys", "records", "raw_bytes"), sums, types, "its parts")
        totals.update(sums)
        total_types.update(types)
    with where("MANIFEST.json: totals"):  # F-SNAP-4: sums over all shards
        check_sums(m["totals"], ("keys", "records", "raw_bytes", "file_bytes", "files"), totals, total_types,
                   "the shards")
    return "".join(lines).encode("utf-8")


def run_cat(snapdir):
    """Return (exit status, stdout bytes, stderr text) of `kvfread.py cat snapdir`."""
    try:
        return 0, cat(snapdir), ""
    except Reject as e:
        return 1, b"", f"kvfread: {e}\n"
    except OSError as e:
        return 1, b"", f"kvfread: {e.filename}: {e.strerror}\n"
    except Exception as e:  # a bug in this reader, never a verdict on the input
        return 1, b"", f"kvfread: internal error: {type(e).__name__}: {e}\n"


def main(argv):
    if len(argv) != 2 or argv[0] != "cat":
        sys.stderr.write("usage: kvfread.py cat SNAPSHOT_DIR\n")
        return 2
    status, out, err = run_cat(argv[1])
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
