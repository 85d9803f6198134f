"""Cheap checks that encoded image bytes can be handed to DALI's decoder.

DALI 2.2 to 2.4 kill the process by SIGSEGV when their image decoder cannot parse the header of a
sample in a batch of 32 or more (issue 18): the header parsing runs on several threads, and an
exception on the calling thread leaves the others running on a stack frame that is gone. A native
crash cannot be caught afterwards, so the reading path looks at each sample before DALI does: the
magic number, the header segments the decoder parses first, and the end marker or declared size of
the format (a truncated file has lost it). Only the first bytes, the header and the last bytes are
read, so the check costs microseconds per sample whatever the file size. It catches deleted,
emptied, truncated and overwritten files. A file damaged in the middle with its headers and end
intact passes: DALI decodes it without error (the pixels are wrong, not the structure).
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["check_encoded", "sniff"]

# Leading bytes of the formats a data set may hold, most specific first.
MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)

# Writers may pad after the end marker (zero bytes, 0xFF fill, a newline); anything else after it
# within this window means the end marker seen is not the file's.
_TAIL = 1024
_PADDING = b"\x00\xff\r\n\t "

_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start-of-frame markers
_JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}  # RSTn and TEM: no length field
_JPEG_MAX_SEGMENTS = 256
# A marker in entropy-coded data: 0xFF not followed by stuffing (0x00), fill (0xFF) or a restart.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")
# What may follow a scan before the next one: tables (DHT, DAC, DQT, DNL, DRI), application data,
# a comment, or the next start of scan.
_JPEG_BETWEEN_SCANS = frozenset({0xC4, 0xCC, 0xDB, 0xDC, 0xDD, 0xDA, 0xFE, *range(0xE0, 0xF0)})

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_PNM_SEPARATOR = rb"(?:\s|#[^\n]*\n)+"  # whitespace and comments
_PNM_SIZE = re.compile(rb"P([1-6])" + _PNM_SEPARATOR + rb"(\d+)" + _PNM_SEPARATOR + rb"(\d+)")
_PNM_MAXVAL = re.compile(_PNM_SEPARATOR + rb"(\d+)")


def check_encoded(data: np.ndarray) -> str | None:
    """Say why ``data`` cannot be an intact image file, or None when it plausibly is one.

    Recognises JPEG, PNG, WebP, BMP, PNM (PBM/PGM/PPM) and TIFF: the formats dalaug reads.

    Args:
        data: the file's bytes, a 1-D ``uint8`` array (as the reading path hands it to DALI).

    Returns:
        None for plausible image bytes, else a short reason for a person to read.

    Example:
        >>> import numpy as np
        >>> check_encoded(np.frombuffer(b"\\xff\\xd8\\xff\\xe0\\x00\\x10JFIF", np.uint8))
        'truncated JPEG (ends in its header)'
    """
    if data.size == 0:
        return "empty file"
    data = np.ascontiguousarray(data, np.uint8).reshape(-1)
    head = data[:64].tobytes()
    kind = sniff(head)
    if kind == "GIF":
        return "GIF image (DALI has no GIF decoder)"
    check = _CHECKS.get(kind)
    if check is None:
        return f"not an image (starts with {_show(head[:8])})"
    return check(data, head)


def sniff(data: np.ndarray | bytes) -> str:
    """The image format the bytes start with ("JPEG", "PNG", "GIF", ...), or "unknown"."""
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if len(head) >= 2 and head[:1] == b"P" and head[1:2] in b"123456":
        return "PNM"
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    return "unknown"


def _check_jpeg(data: np.ndarray, head: bytes) -> str | None:
    # Walk the marker segments up to the first scan: random bytes after a valid SOI break the chain.
    view, size = memoryview(data), data.size
    pos, frame = 2, False
    for _ in range(_JPEG_MAX_SEGMENTS):
        if pos + 4 > size:
            return "truncated JPEG (ends in its header)"
        if view[pos] != 0xFF:
            return f"corrupt JPEG header (no marker at byte {pos})"
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0x00, 0xD8, 0xD9):
            return f"corrupt JPEG header (marker 0x{marker:02X} at byte {pos})"
        length = view[pos + 2] << 8 | view[pos + 3]
        if length < 2 or pos + 2 + length > size:
            return "truncated JPEG (ends in its header)"
        if marker in _JPEG_SOF:
            if length < 8:
                return "corrupt JPEG header (short frame header)"
            width = view[pos + 7] << 8 | view[pos + 8]
            components = view[pos + 9]
            if width == 0 or components not in (1, 3, 4):
                return "corrupt JPEG header (bad frame size or components)"
            frame = True
        if marker == 0xDA:
            if not frame:
                return "corrupt JPEG header (scan before frame header)"
            break
        pos += 2 + length
    else:
        return "corrupt JPEG header (too many segments)"
    # The end-of-image marker closes the file, or (a motion photo's video, a camera's trailer)
    # is followed by other bytes: then the scans are walked to it, which only such files pay for.
    if not _ends_with(data, b"\xff\xd9") and not _scans_end(data, pos):
        return "truncated JPEG (no end-of-image marker)"
    return None


def _scans_end(data: np.ndarray, pos: int) -> bool:
    """Whether the scans from the start-of-scan segment at ``pos`` reach an end-of-image marker.

    In entropy-coded data a 0xFF byte is followed by 0x00 (stuffing), a restart marker or more
    0xFF; any other marker ends the scan. Between scans only tables, comments, application data
    and the next scan may come: any other marker (or a bad length) means the image was cut, and
    the bytes after it are no JPEG's, whatever markers they happen to hold."""
    view = memoryview(data)
    for _ in range(_JPEG_MAX_SEGMENTS):
        if pos + 4 > data.size:
            return False
        length = view[pos + 2] << 8 | view[pos + 3]
        if length < 2:
            return False
        found = _JPEG_MARKER.search(view, pos + 2 + length)
        if found is None:
            return False
        pos = found.start()
        if view[pos + 1] == 0xD9:
            return True
        if view[pos + 1] not in _JPEG_BETWEEN_SCANS:
            return False
    return False


def _check_png(data: np.ndarray, head: bytes) -> str | None:
    if len(head) < 33 or head[12:16] != b"IHDR":
        return "corrupt PNG (no IHDR chunk)"
    if int.from_bytes(head[16:20], "big") == 0 or int.from_bytes(head[20:24], "big") == 0:
        return "corrupt PNG (zero width or height)"
    if not _ends_with(data, _PNG_IEND):
        return "truncated PNG (no IEND chunk)"
    return None


def _check_webp(data: np.ndarray, head: bytes) -> str | None:
    # RIFF's size field counts the bytes after the first 8; an odd payload gets one pad byte.
    if len(head) < 16 or head[12:15] != b"VP8":
        return "corrupt WebP (no VP8 chunk)"
    riff = int.from_bytes(head[4:8], "little")
    if riff + 8 > data.size:
        return f"truncated WebP ({data.size} of {riff + 8} bytes)"
    return None


def _check_bmp(data: np.ndarray, head: bytes) -> str | None:
    if len(head) < 26:
        return "truncated BMP (ends in its header)"
    declared = int.from_bytes(head[2:6], "little")  # some writers leave 0 here
    offset = int.from_bytes(head[10:14], "little")
    header = int.from_bytes(head[14:18], "little")
    if header not in (12, 16, 40, 52, 56, 64, 108, 124):
        return f"corrupt BMP (header size {header})"
    if offset >= data.size or declared > data.size:
        return f"truncated BMP ({data.size} of {max(declared, offset + 1)} bytes)"
    return None


def _check_pnm(data: np.ndarray, head: bytes) -> str | None:
    head = data[:256].tobytes()  # a PNM header can run past the first 64 bytes
    size = _PNM_SIZE.match(head)
    if size is None:
        return "corrupt PNM (unreadable header)"
    kind, width, height = int(size[1]), int(size[2]), int(size[3])
    if width == 0 or height == 0:
        return "corrupt PNM (zero width or height)"
    if kind in (1, 2, 3):  # ASCII pixels: no fixed size to check
        return None
    if kind == 4:  # bitmap: no maxval, 8 pixels a byte
        header_end, expected = size.end(), (width + 7) // 8 * height
    else:
        maxval = _PNM_MAXVAL.match(head, size.end())
        if maxval is None:
            return "corrupt PNM (unreadable header)"
        depth = 2 if int(maxval[1]) > 255 else 1
        header_end, expected = maxval.end(), width * height * (3 if kind == 6 else 1) * depth
    # One whitespace byte ends the header.
    if header_end + 1 + expected > data.size:
        return f"truncated PNM ({data.size} of {header_end + 1 + expected} bytes)"
    return None


def _check_tiff(data: np.ndarray, head: bytes) -> str | None:
    # TIFF has no end marker: the first directory, and the strips or tiles it points to, must lie
    # inside the file.
    order = "<" if head[:2] == b"II" else ">"
    big = head[2:4] in (b"+\x00", b"\x00+")  # BigTIFF: 8-byte offsets and counts
    if big:
        ifd, count_size, entry_size = int(np.frombuffer(head[8:16], order + "u8")[0]), 8, 20
    else:
        ifd, count_size, entry_size = int(np.frombuffer(head[4:8], order + "u4")[0]), 2, 12
    if ifd < 8 or ifd + count_size > data.size:
        return "truncated TIFF (first directory outside the file)"
    entries = int(np.frombuffer(data[ifd : ifd + count_size].tobytes(), order + f"u{count_size}")[0])
    table_end = ifd + count_size + entries * entry_size
    if entries == 0 or table_end + (8 if big else 4) > data.size:  # the table, then the next offset
        return "truncated TIFF (first directory cut off)"
    fields = {}
    for entry in range(ifd + count_size, table_end, entry_size):
        values = _tiff_entry(data, entry, big, order)
        if values is None:
            return "truncated TIFF (a directory entry points past the end)"
        fields[values[0]] = values[1]
    for offsets_tag, counts_tag in ((273, 279), (324, 325)):  # strips, tiles
        offsets, counts = fields.get(offsets_tag), fields.get(counts_tag)
        if offsets is None or counts is None:
            continue
        if offsets.size != counts.size:
            return "corrupt TIFF (strip offsets and sizes disagree)"
        end = int((offsets + counts).max(initial=0))
        if end > data.size:
            return f"truncated TIFF ({data.size} of {end} bytes)"
    return None


# Bytes per value of each TIFF field type; the offsets and sizes of strips are unsigned ints.
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
                    16: 8, 17: 8, 18: 8}  # fmt: skip
_TIFF_UINTS = {3: "u2", 4: "u4", 16: "u8"}


def _tiff_entry(data: np.ndarray, entry: int, big: bool, order: str) -> tuple[int, np.ndarray | None] | None:
    """(tag, its values if unsigned ints) of the directory entry at ``entry``; None when its values
    lie past the end of the file."""
    tag, kind = (int(v) for v in np.frombuffer(data[entry : entry + 4].tobytes(), order + "u2"))
    field = 8 if big else 4
    count = int(np.frombuffer(data[entry + 4 : entry + 4 + field].tobytes(), f"{order}u{field}")[0])
    nbytes = count * _TIFF_TYPE_SIZES.get(kind, 1)
    value = entry + 4 + field
    if nbytes > field:  # the values do not fit in the entry: it holds their offset
        value = int(np.frombuffer(data[value : value + field].tobytes(), f"{order}u{field}")[0])
        if value + nbytes > data.size:
            return None
    dtype = _TIFF_UINTS.get(kind)
    if dtype is None:
        return tag, None
    return tag, np.frombuffer(data[value : value + nbytes].tobytes(), order + dtype).astype(np.uint64)


def _ends_with(data: np.ndarray, marker: bytes) -> bool:
    tail = data[-_TAIL:].tobytes()
    # Stripping 0xFF padding can eat into a marker that ends in 0xFF-free bytes only: try both.
    return tail.endswith(marker) or tail.rstrip(_PADDING).endswith(marker)


def _show(head: bytes) -> str:
    text = head.decode("ascii", "replace")
    if text.isprintable():
        return repr(text)
    return head.hex(" ")


# What each format's bytes must show; sniff() decides which applies.
_CHECKS = {
    "JPEG": _check_jpeg, "PNG": _check_png, "WebP": _check_webp, "BMP": _check_bmp,
    "PNM": _check_pnm, "TIFF": _check_tiff,
}  # fmt: skip
