"""The container checks of the image stage, from the bytes alone (no pixel decode): JPEG or PNG, truncated or
not, colour components, and a JPEG's size from its frame header.

A JPEG is "truncated" when its segments end before the first scan or no end-of-image marker follows the
last scan, a PNG when its last chunk is not IEND (a cut-off download loses both); a 1-component JPEG is
"grayscale", a 4-component one "cmyk"."""

from __future__ import annotations

import re
import struct

_JPEG_SOI = b"\xff\xd8"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# a marker in a JPEG's entropy-coded data: FF followed by neither a stuffed 00, a restart marker nor a fill FF
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def check_container(data: bytes) -> tuple[str, str | None]:
    """('jpeg' | 'png' | 'other', problem or None) from the bytes, without decoding pixels."""
    if data.startswith(_JPEG_SOI):
        return "jpeg", _check_jpeg(data)
    if data.startswith(_PNG_SIGNATURE):
        # the last chunk must be IEND (a truncated download loses it)
        return "png", None if data.rstrip(b"\0")[-8:-4] == b"IEND" else "truncated"
    return "other", None


def _check_jpeg(data: bytes) -> str | None:
    header = jpeg_header(data)
    if header is None:
        return "truncated"  # the segments ran out before the first scan
    components = header[2]
    if components == 1:
        return "grayscale"
    if components == 4:
        return "cmyk"
    if components != 3:
        return "corrupt"
    return None if _ends_with_eoi(data) else "truncated"


def _ends_with_eoi(data: bytes) -> bool:
    """Whether the image data reach an end-of-image marker: walks the segments and scans (a progressive JPEG
    has several) to the first EOI. Bytes after it (camera and vendor trailers) may hold anything, FF DA or
    FF D9 included, so neither is searched for in the whole file."""
    pos = data.find(b"\xff\xda")  # the first scan: jpeg_header walked the segments before it
    while True:
        # the scan header's length, then entropy-coded data, in which a marker is FF + a non-stuffing byte
        if pos < 0 or pos + 4 > len(data):
            return False
        match = _JPEG_MARKER.search(data, pos + 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0])
        while match is not None:
            marker = data[match.start() + 1]
            if marker == 0xD9:
                return True
            if marker == 0xDA:
                break
            # a segment between scans (DHT, DQT, DRI, COM, APPn): skip its length
            seg = match.start()
            if seg + 4 > len(data):
                return False
            match = _JPEG_MARKER.search(data, seg + 2 + struct.unpack(">H", data[seg + 2:seg + 4])[0])
        if match is None:
            return False
        pos = match.start()


def jpeg_header(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, colour components) from the SOF segment, walking the segments up to the first scan;
    components is 0 when no SOF precedes the scan; None when the data is no JPEG or ends first."""
    if not data.startswith(_JPEG_SOI):
        return None
    pos, size = 2, (0, 0, 0)
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return size  # not a marker where one must be: the decoder will reject it
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            return size
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and pos + 10 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])  # SOFn: length, precision, h, w, n
            size = (width, height, data[pos + 9])
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, without decoding; None for other data."""
    header = jpeg_header(data)
    return (header[0], header[1]) if header and header[0] and header[1] else None
