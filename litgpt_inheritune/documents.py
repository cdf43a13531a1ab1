"""Reading documents from a folder of text: .jsonl, .jsonl.zst, .parquet (a text field) and .txt files.

A file is read in parts that a process can read on its own (``file_parts``): line-aligned byte ranges of at most
PART_BYTES for jsonl and .txt lines, row groups for parquet; a compressed file is one part, and one-document .txt files
are grouped into parts of up to PART_BYTES (``group_documents``). ``documents`` reads a part from a seeded position,
wrapping around to its start; ``file_documents`` reads a whole file from its start. A malformed or unreadable document
raises ``BadInput``, whose message names the file and line.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

PART_BYTES = 64 * 2**20  # largest byte range of a jsonl/.txt file that one worker reads as a unit
SUFFIXES = (".jsonl", ".jsonl.zst", ".parquet", ".txt")
TEXT_FIELD = "text"  # the field holding a document's text in jsonl and parquet files (RedPajama's)


class BadInput(ValueError):
    """An unreadable or malformed document: the message names the file and line (``line``, 1-based, when the problem
    is one line's)."""

    def __init__(self, message: str, line: Optional[int] = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True)
class Part:
    """A unit of work for one litdata worker: a slice of one file and its shares of the two budgets."""

    path: str
    name: str  # the path relative to data_dir: seeds the part's choices, so that a copy elsewhere samples the same
    format: str
    start: int  # byte offset (jsonl, .txt lines) or row group (parquet)
    end: int
    val_tokens: int
    train_tokens: int
    size: int  # bytes, for the budget shares and litdata's work balancing
    files: tuple[tuple[str, str], ...] = ()  # "txt": the (path, name) of each one-document file of the group


def file_parts(path: Path, size: int, txt_documents: str) -> Iterator[tuple[str, int, int, int]]:
    """(format, start, end, bytes) of the units a file is read in."""
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            metadata = pq.ParquetFile(path).metadata
        except Exception as error:
            raise BadInput(
                f"{path} is not a readable parquet file ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})"
            ) from None
        group_bytes = [metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups)]
        for g, nbytes in enumerate(group_bytes):
            yield "parquet", g, g + 1, max(1, round(size * nbytes / max(1, sum(group_bytes))))
    elif path.name.endswith(".zst") or (path.name.endswith(".txt") and txt_documents == "file"):
        yield ("jsonl.zst" if path.name.endswith(".zst") else "txt"), 0, size, size  # read whole, from the start
    else:
        format = "lines" if path.name.endswith(".txt") else "jsonl"
        count = max(1, math.ceil(size / PART_BYTES))  # parts of equal size: no small last part short of its share
        for k in range(count):
            yield format, k * size // count, (k + 1) * size // count, (k + 1) * size // count - k * size // count


def group_documents(units: list[tuple[Path, tuple]], data_dir: Path) -> list[tuple]:
    """(path, format, start, end, bytes, files) per part: one-document .txt files grouped, in file order, into parts of
    up to PART_BYTES (a part of one file could not give a share larger than its document); other units as they are."""
    parts, group, group_bytes = [], [], 0
    for path, (format, start, end, size) in [*units, (None, ("end", 0, 0, 0))]:
        if group and (format != "txt" or group_bytes + size > PART_BYTES):
            members = tuple((str(member), member.relative_to(data_dir).as_posix()) for member in group)
            parts.append((group[0], "txt", 0, group_bytes, max(1, group_bytes), members))
            group, group_bytes = [], 0
        if format == "txt":
            group.append(path)
            group_bytes += size
        elif path is not None:
            parts.append((path, format, start, end, size, ()))
    return parts


def unit_random(*key) -> float:
    """A number in [0, 1) fixed by the key: the seeded coin and start position of a part, the same in every process."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def documents(part: Part, seed: int, text_field: str) -> Iterator[tuple[int, str]]:
    """(location, text) of the part's documents, from a seeded position, wrapping around to the part's start."""
    if part.format == "txt":  # a group of one-document files, in a seeded order
        for path, name in sorted(part.files, key=lambda file: unit_random(seed, file[1])):
            yield 0, read_text(Path(path))
    elif part.format == "parquet":
        yield from parquet_documents(part, seed, text_field)
    elif part.format == "jsonl.zst":
        yield from json_lines(part.path, zst_lines(part.path), text_field)
    else:
        pivot = part.start + int(unit_random(seed, part.name, part.start) * (part.end - part.start))
        lines = rotated_lines(part.path, part.start, part.end, pivot)
        if part.format == "jsonl":
            yield from json_lines(part.path, lines, text_field)
        else:
            for offset, line in lines:
                yield offset, decode(line, part.path, offset).rstrip("\r\n")


def file_documents(path: Path, text_field: str = TEXT_FIELD) -> Iterator[str]:
    """The documents of one file from its start, read lazily: one a line of a .jsonl file, else the whole file."""
    if not path.name.endswith(".jsonl"):
        yield read_text(path)
        return
    with open(path, "rb") as f:
        for _, text in json_lines(str(path), lines_between(f, 0, path.stat().st_size), text_field):
            yield text


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise BadInput(f"{path}: not UTF-8 text (byte {error.start}); convert it to UTF-8") from None
    except OSError as error:
        raise BadInput(f"{path}: cannot be read ({error.strerror})") from None


def rotated_lines(path: str, start: int, end: int, pivot: int) -> Iterator[tuple[int, bytes]]:
    """The lines that begin in [start, end), beginning with the first at or after pivot and wrapping around."""
    with open(path, "rb") as f:
        first = line_start(f, pivot)
        yield from lines_between(f, first, end)
        yield from lines_between(f, line_start(f, start), first)


def line_start(f, position: int) -> int:
    """The offset of the first line that begins at or after ``position``."""
    if position == 0:
        return 0
    f.seek(position - 1)
    f.readline()  # the rest of the line holding byte position - 1
    return f.tell()


def lines_between(f, begin: int, stop: int) -> Iterator[tuple[int, bytes]]:
    f.seek(begin)
    offset = begin
    while offset < stop:
        line = f.readline()
        if not line:
            return
        yield offset, line
        offset += len(line)


def zst_lines(path: str) -> Iterator[tuple[int, bytes]]:
    """Lines of a zstandard-compressed file with their line numbers (0-based): read from the start, streaming."""
    import io

    import zstandard

    try:
        with open(path, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as reader:
            for number, line in enumerate(io.BufferedReader(reader)):
                yield -1 - number, line  # negative: a line number, not a byte offset
    except zstandard.ZstdError as error:
        raise BadInput(f"{path}: not a readable zstandard file ({error})") from None


def line_number(path: str, location: int) -> int:
    """1-based line number of a byte offset (or of a line number encoded as -1 - n)."""
    if location < 0:
        return -location
    count = 1
    with open(path, "rb") as f:
        while location > 0:
            block = f.read(min(location, 2**20))
            if not block:
                break
            count += block.count(b"\n")
            location -= len(block)
    return count


def decode(line: bytes, path: str, location: int) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        number = line_number(path, location)
        raise BadInput(f"{path} line {number}: not UTF-8 text", number) from None


def json_lines(path: str, lines: Iterator[tuple[int, bytes]], text_field: str) -> Iterator[tuple[int, str]]:
    for location, line in lines:
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except ValueError as error:
            number = line_number(path, location)
            raise BadInput(f"{path} line {number}: not a JSON object ({str(error).splitlines()[0]})", number) from None
        if not isinstance(document, dict) or not isinstance(document.get(text_field), str):
            keys = ", ".join(document) if isinstance(document, dict) else type(document).__name__
            number = line_number(path, location)
            raise BadInput(
                f"{path} line {number}: no text field '{text_field}' (found: {keys}); set --data.text_field", number
            ) from None
        yield location, document[text_field]


def parquet_documents(part: Part, seed: int, text_field: str) -> Iterator[tuple[int, str]]:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(part.path)
    if text_field not in parquet.schema_arrow.names:
        raise BadInput(
            f"{part.path}: no column '{text_field}' (columns: {', '.join(parquet.schema_arrow.names)}); set --data.text_field"
        )
    rows = parquet.metadata.row_group(part.start).num_rows
    pivot = int(unit_random(seed, part.name, part.start) * rows)

    def rows_between(begin: int, stop: int) -> Iterator[tuple[int, str]]:
        row = 0
        for batch in parquet.iter_batches(row_groups=[part.start], columns=[text_field], batch_size=1024):
            for text in batch.column(0).to_pylist():
                if begin <= row < stop and isinstance(text, str):
                    yield row, text
                row += 1
                if row >= stop:
                    return

    yield from rows_between(pivot, rows)
    yield from rows_between(0, pivot)
