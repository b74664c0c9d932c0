"""Reader (and writer, for tests) of `.augrec.gz` recordings, the format of
`augur-bench export` (bench/src/recording.rs is the reference; version 1):

    magic "AUGREC\\0" | version u8
    host_id str | start_ms zigzag | end_ms zigzag | series_count varint
    per series: resource str | metric str | unit str | kind u8 (0 gauge, 1 counter)
                label_count varint | (name str, value str) * label_count
                point_count varint
                timestamps: first zigzag, first delta zigzag, then delta-of-deltas zigzag
                values: f64 bits XOR the previous value's bits, as 8 byte planes
                        (most significant byte of every point first)

Plain Python (no numpy) so the lab's checks and tests run anywhere.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field

MAGIC = b"AUGREC\0"
VERSION = 1


@dataclass
class Series:
    resource: str
    metric: str
    unit: str
    kind: str  # "gauge" or "counter"
    labels: dict = field(default_factory=dict)
    timestamps: list = field(default_factory=list)  # ms
    values: list = field(default_factory=list)


@dataclass
class Recording:
    host_id: str
    start_ms: int
    end_ms: int
    series: list

    def by_resource(self) -> dict:
        out: dict = {}
        for s in self.series:
            out.setdefault(s.resource, []).append(s)
        return out


class _Reader:
    def __init__(self, b: bytes):
        self.b, self.pos = b, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.b):
            raise ValueError("truncated recording")
        out = self.b[self.pos : self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        v, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            v |= (byte & 0x7F) << shift
            if byte & 0x80 == 0:
                return v
            shift += 7
            if shift > 63:
                raise ValueError("varint longer than 64 bits")

    def zigzag(self) -> int:
        u = self.varint()
        return (u >> 1) ^ -(u & 1)

    def str(self) -> str:
        return self.take(self.varint()).decode("utf-8")


def decode(b: bytes) -> Recording:
    r = _Reader(b)
    if r.take(len(MAGIC)) != MAGIC:
        raise ValueError("not an augur recording")
    version = r.take(1)[0]
    if version != VERSION:
        raise ValueError(f"recording version {version}; this reader knows {VERSION}")
    host = r.str()
    start_ms, end_ms = r.zigzag(), r.zigzag()
    series = []
    for _ in range(r.varint()):
        resource, metric, unit = r.str(), r.str(), r.str()
        kind = {0: "gauge", 1: "counter"}[r.take(1)[0]]
        labels = {}
        for _ in range(r.varint()):
            k = r.str()
            labels[k] = r.str()
        n = r.varint()
        ts, prev, delta = [], 0, 0
        for i in range(n):
            z = r.zigzag()
            if i == 0:
                t = z
            elif i == 1:
                delta = z
                t = prev + z
            else:
                delta += z
                t = prev + delta
            ts.append(t)
            prev = t
        planes = [r.take(n) for _ in range(8)]  # most significant first
        vals, bits = [], 0
        for i in range(n):
            x = 0
            for p in planes:
                x = (x << 8) | p[i]
            bits ^= x
            vals.append(struct.unpack("<d", struct.pack("<Q", bits))[0])
        series.append(Series(resource, metric, unit, kind, labels, ts, vals))
    if r.pos != len(b):
        raise ValueError(f"{len(b) - r.pos} trailing bytes")
    return Recording(host, start_ms, end_ms, series)


def load(path) -> Recording:
    with gzip.open(path, "rb") as f:
        return decode(f.read())


def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _zigzag(v: int) -> bytes:
    return _varint(((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)


def _str(s: str) -> bytes:
    b = s.encode()
    return _varint(len(b)) + b


def encode(rec: Recording) -> bytes:
    """The uncompressed encoding (for tests; the Rust exporter writes the real files)."""
    out = bytearray(MAGIC + bytes([VERSION]))
    out += _str(rec.host_id) + _zigzag(rec.start_ms) + _zigzag(rec.end_ms) + _varint(len(rec.series))
    for s in rec.series:
        out += _str(s.resource) + _str(s.metric) + _str(s.unit) + bytes([0 if s.kind == "gauge" else 1])
        out += _varint(len(s.labels))
        for k, v in s.labels.items():
            out += _str(k) + _str(v)
        n = len(s.timestamps)
        out += _varint(n)
        prev = delta = 0
        for i, t in enumerate(s.timestamps):
            if i == 0:
                out += _zigzag(t)
            elif i == 1:
                delta = t - prev
                out += _zigzag(delta)
            else:
                d = t - prev
                out += _zigzag(d - delta)
                delta = d
            prev = t
        xs, pb = [], 0
        for v in s.values:
            b = struct.unpack("<Q", struct.pack("<d", v))[0]
            xs.append(b ^ pb)
            pb = b
        for plane in range(7, -1, -1):
            out += bytes((x >> (plane * 8)) & 0xFF for x in xs)
    return bytes(out)
