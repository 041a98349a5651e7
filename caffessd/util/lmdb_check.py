"""LMDBs checked before they are memory-mapped.

LMDB reads its database through a memory map and trusts what it finds: a
`data.mdb` that was truncated (a copy cut short, a full disk) or has flipped
bytes makes it follow a page number past the end of the file, and the
process dies of SIGBUS (exit 135, nothing on stderr) in the middle of
inspect-lmdb, eval, quantize or train. Python cannot catch that.

So every LMDB caffessd reads is first walked here with ordinary reads
(os.pread, which returns short instead of faulting): both meta pages, then
every branch and leaf page of the main database from its root. Each page
must lie inside the file and below the meta's last page, carry its own page
number and a branch or leaf flag, and keep its node offsets, keys and inline
values inside the page; each value stored on overflow pages must end inside
the file; no page may be reached twice (a cycle); and the leaves must hold
as many entries as the meta says. Only then is the file opened with `lmdb`,
which then touches no page that was not checked. A problem is a FormatError
naming the database and, where one is involved, the entry's key.

The layout is LMDB 0.9's data format (version 1, as py-lmdb writes and
Caffe's convert_annoset wrote), from lmdb's own mdb.c: a 16-byte page header
(pgno u64, pad u16, flags u16, lower u16, upper u16 / overflow count u32),
the MDB_meta after the header of pages 0 and 1, 8-byte nodes (lo, hi,
flags, ksize) followed by the key and then the value, or for F_BIGDATA the
first overflow page's number. Values are not read: of an overflow value only
the 16-byte header of its first page is, so the walk costs a read of the
tree, not of the images.

Lowest layer: imports nothing from caffessd but `errors`.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from caffessd.errors import FormatError

MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
PAGE_HEADER = 16
NODE_HEADER = 8
META = struct.Struct("<IIQQ" + "IHHQQQQQ" * 2 + "QQ")   # MDB_meta on a 64-bit build (136 bytes)
PAGE = struct.Struct("<QHHHH")                          # pgno, pad, flags, lower, upper
NODE = struct.Struct("<HHHH")                           # lo, hi, flags, ksize
P_BRANCH, P_LEAF, P_OVERFLOW, P_META, P_LEAF2, P_SUBP = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
PAGE_KINDS = P_BRANCH | P_LEAF | P_OVERFLOW | P_META | P_LEAF2 | P_SUBP
MAX_KEY = 511                                           # MDB_MAXKEYSIZE
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
DB_KEY_FLAGS = 0x02 | 0x08                              # MDB_REVERSEKEY, MDB_INTEGERKEY: comparison only
NO_PAGE = 2 ** 64 - 1                                   # P_INVALID: an empty tree's root
MAX_DEPTH = 32                                          # LMDB's CURSOR_STACK
DATA_FILE = "data.mdb"


@dataclass(frozen=True)
class LmdbLayout:
    """What the meta page that LMDB will use says, and what the walk found."""

    page_size: int
    last_page: int
    map_size: int
    entries: int
    file_size: int


def data_file(path) -> Path:
    """data.mdb of an LMDB folder (or the file itself for a subdir=False database)."""
    path = Path(path)
    return path / DATA_FILE if path.is_dir() else path


def looks_like_lmdb(path) -> bool:
    """A data.mdb whose first page is an LMDB meta page (cheap: one read)."""
    target = data_file(path)
    try:
        with open(target, "rb") as handle:
            head = handle.read(PAGE_HEADER + 8)
    except OSError:
        return False
    if len(head) < PAGE_HEADER + 8:
        return False
    flags = PAGE.unpack_from(head)[2]
    magic, version = struct.unpack_from("<II", head, PAGE_HEADER)
    return bool(flags & P_META) and magic == MAGIC and version == DATA_VERSION


def check_lmdb(path) -> LmdbLayout:
    """Walk the LMDB at `path` (a folder with data.mdb, or the file); FormatError
    when anything LMDB would follow lies outside the file or is malformed."""
    if struct.calcsize("P") != 8:  # the 32-bit layout differs; LMDB files are not portable anyway
        return LmdbLayout(0, 0, 0, 0, 0)
    where = Path(path)
    target = data_file(where)
    try:
        fd = os.open(target, os.O_RDONLY)
    except FileNotFoundError:
        raise FormatError(where, f"not an LMDB folder (no {DATA_FILE})") from None
    except OSError as exc:
        raise FormatError(where, f"cannot read {DATA_FILE}: {exc.strerror or exc}") from None
    try:
        return _Walker(where, fd, os.fstat(fd).st_size).run()
    finally:
        os.close(fd)


class _Walker:
    def __init__(self, where: Path, fd: int, file_size: int):
        self.where, self.fd, self.file_size = where, fd, file_size

    def fail(self, message: str, key: Optional[bytes] = None):
        if key is not None:
            message = f"entry {key.decode('utf-8', 'replace')!r}: {message}"
        raise FormatError(self.where, f"corrupt LMDB: {message}")

    def read(self, offset: int, size: int) -> bytes:
        try:
            return os.pread(self.fd, size, offset)
        except OSError as exc:
            raise FormatError(self.where, f"cannot read {DATA_FILE}: {exc.strerror or exc}") from None

    # ------------------------------------------------------------ meta pages

    def meta(self, offset: int) -> tuple:
        raw = self.read(offset, PAGE_HEADER + META.size)
        if len(raw) < PAGE_HEADER + META.size:
            self.fail(f"{DATA_FILE} is {self.file_size} bytes, too short for its meta pages (truncated)")
        flags = PAGE.unpack_from(raw)[2]
        fields = META.unpack_from(raw, PAGE_HEADER)
        if not flags & P_META or fields[0] != MAGIC:
            raise FormatError(self.where, f"not an LMDB: {DATA_FILE} has no LMDB meta page at byte {offset}")
        if fields[1] != DATA_VERSION:
            raise FormatError(self.where, f"LMDB data format {fields[1]}, expected {DATA_VERSION} (LMDB 0.9)")
        return fields

    def run(self) -> LmdbLayout:
        first = self.meta(0)
        page_size = first[4]  # mm_dbs[FREE_DBI].md_pad
        if page_size < 256 or page_size > 0x8000 or page_size & (page_size - 1):
            self.fail(f"page size {page_size} in the meta page is not a power of two from 256 to 32768")
        second = self.meta(page_size)
        if second[4] != page_size:
            self.fail(f"the two meta pages disagree on the page size ({page_size}, {second[4]})")
        meta = second if first[-1] < second[-1] else first  # mdb_env_pick_meta: the later transaction
        self.page_size = page_size
        self.last_page = meta[-2]
        db_flags, depth, entries, root = meta[13], meta[14], meta[18], meta[19]  # mm_dbs[MAIN_DBI]
        if db_flags & ~DB_KEY_FLAGS & 0xFFFF:
            self.fail(f"the main database has flags {db_flags:#x} (duplicate keys or sub-databases), "
                      f"which an LMDB of images never has")
        if self.last_page < 1:
            self.fail(f"the meta page's last page is {self.last_page}")
        counted = 0 if root == NO_PAGE else self.walk(root, depth)
        if counted != entries:
            self.fail(f"the tree holds {counted} entries but the meta page says {entries}")
        return LmdbLayout(page_size, self.last_page, meta[3], entries, self.file_size)

    # ------------------------------------------------------------ the tree

    def page_in_file(self, pgno: int, pages: int, what: str, key: Optional[bytes] = None) -> None:
        end = pgno + pages
        if pgno < 2 or end > self.last_page + 1:
            self.fail(f"{what} {pgno} lies outside the database's pages 2..{self.last_page}", key)
        if end * self.page_size > self.file_size:
            self.fail(f"{what} {pgno} ends at byte {end * self.page_size}, past the end of the "
                      f"{self.file_size}-byte {DATA_FILE} (truncated)", key)

    def walk(self, root: int, depth: int) -> int:
        if not 1 <= depth <= MAX_DEPTH:
            self.fail(f"tree depth {depth} in the meta page is not 1..{MAX_DEPTH}")
        seen, entries = set(), 0
        stack = [(root, 1)]
        while stack:
            pgno, level = stack.pop()
            if pgno in seen:
                self.fail(f"page {pgno} is reached twice (a loop in the tree)")
            seen.add(pgno)
            self.page_in_file(pgno, 1, "page")
            page = self.read(pgno * self.page_size, self.page_size)
            nodes = self.nodes(pgno, page, level, depth)
            if page_is_branch(page):
                stack.extend((child, level + 1) for child in reversed(nodes))
            else:
                entries += nodes
        return entries

    def nodes(self, pgno: int, page: bytes, level: int, depth: int):
        """Child page numbers of a branch page, or the entry count of a leaf page."""
        number, _, flags, lower, upper = PAGE.unpack_from(page)
        kind = flags & PAGE_KINDS
        if number != pgno:
            self.fail(f"page {pgno} says it is page {number}")
        if kind not in (P_BRANCH, P_LEAF):
            self.fail(f"page {pgno} (tree level {level}) is neither a branch nor a leaf page (flags {flags:#x})")
        if (kind == P_LEAF) != (level == depth):
            self.fail(f"page {pgno} is a {'leaf' if kind == P_LEAF else 'branch'} page at level {level} "
                      f"of a {depth}-level tree")
        size = self.page_size
        if not PAGE_HEADER <= lower <= upper <= size or (lower - PAGE_HEADER) % 2:
            self.fail(f"page {pgno} has free-space bounds {lower}..{upper} outside its {size} bytes")
        count = (lower - PAGE_HEADER) // 2
        if count == 0:
            self.fail(f"page {pgno} holds no nodes")
        children = []
        for offset in struct.unpack_from(f"<{count}H", page, PAGE_HEADER):
            if offset < upper or offset + NODE_HEADER > size:
                self.fail(f"page {pgno} has a node at byte {offset}, outside its node area {upper}..{size}")
            lo, hi, node_flags, key_size = NODE.unpack_from(page, offset)
            key_end = offset + NODE_HEADER + key_size
            if key_end > size:
                self.fail(f"page {pgno} has a {key_size}-byte key running past the page")
            key = page[offset + NODE_HEADER:key_end]
            if kind == P_BRANCH:
                children.append(lo | hi << 16 | node_flags << 32)
                self.page_in_file(children[-1], 1, "child page", key)
                continue
            data_size = lo | hi << 16
            if not 1 <= key_size <= MAX_KEY:
                self.fail(f"page {pgno} has a key of {key_size} bytes (LMDB keys have 1 to {MAX_KEY})")
            if node_flags & (F_SUBDATA | F_DUPDATA):
                self.fail("holds a sub-database or duplicates, which an LMDB of images never has", key)
            if node_flags & F_BIGDATA:
                if key_end + 8 > size:
                    self.fail(f"its overflow page number runs past page {pgno}", key)
                first = struct.unpack_from("<Q", page, key_end)[0]
                pages = (PAGE_HEADER - 1 + data_size) // size + 1  # OVPAGES
                self.page_in_file(first, pages, f"its {data_size}-byte value on overflow page", key)
                self.overflow_header(first, pages, key)
            elif key_end + data_size > size:
                self.fail(f"its {data_size}-byte value runs past page {pgno}", key)
        return children if kind == P_BRANCH else count


    def overflow_header(self, pgno: int, pages: int, key: bytes) -> None:
        """The first overflow page of a value: its own number, the overflow flag, enough pages."""
        number, _, flags, lower, upper = PAGE.unpack_from(self.read(pgno * self.page_size, PAGE_HEADER))
        count = lower | upper << 16  # mp_pages shares the lower/upper bytes
        if number != pgno or flags & PAGE_KINDS != P_OVERFLOW or count < pages:
            self.fail(f"its value's overflow page {pgno} is not one (page {number}, flags {flags:#x}, "
                      f"{count} pages for {pages})", key)


def page_is_branch(page: bytes) -> bool:
    return bool(PAGE.unpack_from(page)[2] & P_BRANCH)


def open_checked(path, **options):
    """`lmdb.open(path, readonly=True, lock=False, ...)` after check_lmdb; an
    lmdb.Error is a FormatError naming the database."""
    import lmdb

    path = Path(path)
    check_lmdb(path)
    settings = dict(readonly=True, lock=False, readahead=False, subdir=path.is_dir(), max_readers=16)
    settings.update(options)
    try:
        return lmdb.open(os.fspath(path), **settings)
    except lmdb.Error as exc:
        raise FormatError(path, f"cannot open as LMDB: {exc}") from None
