#!/usr/bin/env python3
"""Decodes a PNG as Lamina writes it (8-bit RGB, filter type 0 rows) with zlib only, checks the
signature, the chunk CRCs and the size, and prints "WIDTH HEIGHT COLOURS".
  png_check.py FILE.png [--same-as FRAME.rgb | --pixel X,Y]
--same-as: exit 1 unless the pixels equal a frame vnc_probe wrote.
--pixel: also prints the colour at (X, Y) as RRGGBB (a fourth field)."""
import struct
import sys
import zlib


def decode(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit(f"{path}: no PNG signature")
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(kind + body) != crc:
            raise SystemExit(f"{path}: bad CRC in {kind}")
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if (depth, colour) != (8, 2):
                raise SystemExit(f"{path}: not 8-bit RGB")
            size = (width, height)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = size
    raw = zlib.decompress(idat)
    stride = width * 3 + 1
    if len(raw) != stride * height or any(raw[y * stride] != 0 for y in range(height)):
        raise SystemExit(f"{path}: pixel data does not match {width}x{height}")
    pixels = b"".join(raw[y * stride + 1:(y + 1) * stride] for y in range(height))
    return width, height, pixels


def main():
    width, height, pixels = decode(sys.argv[1])
    colours = len(set(pixels[i:i + 3] for i in range(0, len(pixels), 3)))
    if len(sys.argv) > 3 and sys.argv[2] == "--pixel":
        x, y = map(int, sys.argv[3].split(","))
        if not (0 <= x < width and 0 <= y < height):
            raise SystemExit(f"({x}, {y}) is outside the {width}x{height} picture")
        offset = (y * width + x) * 3
        print(width, height, colours, pixels[offset:offset + 3].hex())
        return 0
    print(width, height, colours)
    if len(sys.argv) > 3 and sys.argv[2] == "--same-as":
        frame = open(sys.argv[3], "rb").read()
        newline = frame.index(b"\n")
        if tuple(map(int, frame[:newline].split())) != (width, height) or frame[newline + 1:] != pixels:
            print("the VNC client's last frame differs from the screenshot")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
