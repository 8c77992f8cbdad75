#!/usr/bin/env python3
"""The far end of a migrating guest's ping stream, as a port of its Lamina virtual switch.

Answers ARP for 10.0.9.1 and ICMP echo requests to it, and appends "SEQ MONOTONIC-SECONDS" for
each request to LOG, so that the migration test can check the guest's stream lost and repeated
nothing and measure the longest gap the guest's traffic saw.
Usage: migration_pinger.py SWITCH-SOCKET LOG
"""
import json
import socket
import struct
import sys
import time

MAC = bytes.fromhex("0200000000fe")
ADDRESS = bytes([10, 0, 9, 1])


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def main():
    path, log = sys.argv[1], sys.argv[2]
    port = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    port.connect(path)
    port.send(json.dumps({"lamina_switch": 2, "role": "port", "label": "pinger",
                          "mac": "02:00:00:00:00:fe"}).encode())
    if "port" not in json.loads(port.recv(1024)):
        sys.exit("the switch refused the pinger")
    out = open(log, "a", buffering=1)
    announcements = open(log + ".rarp", "a", buffering=1)
    while True:
        frame = port.recv(65536)
        if not frame:
            return
        if len(frame) < 14:
            continue
        source, kind = frame[6:12], frame[12:14]
        if kind == b"\x80\x35":
            announcements.write(source.hex(":") + "\n")
        elif kind == b"\x08\x06" and len(frame) >= 42 and frame[20:22] == b"\x00\x01" \
                and frame[38:42] == ADDRESS:
            # ARP request for us: reply with our MAC.
            port.send(source + MAC + b"\x08\x06" + frame[14:20] + b"\x00\x02" + MAC + ADDRESS
                      + frame[22:28] + frame[28:32])
        elif kind == b"\x08\x00" and len(frame) >= 34:
            header = (frame[14] & 15) * 4
            total = struct.unpack("!H", frame[16:18])[0]
            ip = frame[14:14 + header]
            icmp = frame[14 + header:14 + total]
            if ip[9] != 1 or ip[16:20] != ADDRESS or len(icmp) < 8 or icmp[0] != 8:
                continue
            out.write(f"{struct.unpack('!H', icmp[6:8])[0]} {time.monotonic():.4f}\n")
            reply = b"\0\0\0\0" + icmp[4:]
            reply = reply[:2] + struct.pack("!H", checksum(reply)) + reply[4:]
            head = bytearray(ip)
            head[8] = 64
            head[10:12] = b"\0\0"
            head[12:16], head[16:20] = ip[16:20], ip[12:16]
            head[10:12] = struct.pack("!H", checksum(bytes(head)))
            port.send(source + MAC + b"\x08\x00" + bytes(head) + reply)


if __name__ == "__main__":
    main()
