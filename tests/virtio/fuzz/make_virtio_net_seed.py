#!/usr/bin/env python3
"""Writes a seed input for virtio_net_fuzz (layout in virtio_net_fuzz.cc): queue size 16, three
frames from the host, one 2 KiB receive buffer, and one transmitted frame (header and a 60-byte
frame in two descriptors, as Linux sends it). Usage: make_virtio_net_seed.py OUTPUT_FILE"""
import struct
import sys

ram = bytearray(0x2200)
# Receive queue at 0x0: descriptor 0 device-writable (VIRTQ_DESC_F_WRITE = 2), available idx 1.
struct.pack_into("<QIHH", ram, 0x0, 0x1000, 2048, 2, 0)
struct.pack_into("<HHH", ram, 0x100, 0, 1, 0)
# Transmit queue at 0x200: header (NEXT = 1) then frame; available idx 1.
struct.pack_into("<QIHH", ram, 0x200, 0x2000, 12, 1, 1)
struct.pack_into("<QIHH", ram, 0x210, 0x2100, 60, 0, 0)
struct.pack_into("<HHH", ram, 0x300, 0, 1, 0)
ram[0x2100:0x2100 + 14] = bytes.fromhex("ffffffffffff525400010203") + b"\x08\x06"
header = bytes([0x01, 4, 3, 7])  # mergeable buffers, queue size 1 << 4, 3 frames, length seed
with open(sys.argv[1], "wb") as out:
    out.write(header + bytes(ram))
