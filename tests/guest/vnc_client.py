#!/usr/bin/env python3
"""A small RFB 3.8 client (RFC 6143) for the display test: connects to a VNC server on a Unix
socket, keeps a framebuffer from raw-encoded updates (and DesktopSize changes), and runs a script:
  wait for a stable non-uniform screen, press keys and check that the screen changed, then (with
--wait-close, after --last-keys) read until the server closes, and write the last frame.
  vnc_client.py SOCKET OUT.rgb --keys Down [--last-keys Return --wait-close]
OUT.rgb: "WIDTH HEIGHT\n" then WIDTH*HEIGHT*3 bytes of RGB. Exit 0 when every key changed the
screen, 1 otherwise (with the reason)."""
import argparse
import os
import select
import socket
import subprocess
import struct
import sys
import time

KEYSYMS = {"Down": 0xFF54, "Up": 0xFF52, "Return": 0xFF0D, "Escape": 0xFF1B}


def vnc_response(password, challenge):
    """RFB 6.2.2 VNC Authentication: the challenge DES-encrypted (ECB) with the password,
    padded to 8 bytes, each byte's bits reversed, as the key. openssl's legacy provider does
    the DES (no DES in Python's standard library)."""
    key = bytes(int(f"{byte:08b}"[::-1], 2) for byte in password.encode()[:8].ljust(8, b"\0"))
    done = subprocess.run(["openssl", "enc", "-des-ecb", "-nopad", "-K", key.hex(),
                           "-provider", "legacy", "-provider", "default"],
                          input=challenge, capture_output=True, check=True)
    return done.stdout


class Client:
    def __init__(self, path, password=None):
        deadline = time.time() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        self.buffer = b""
        self.closed = False
        version = self.read(12)
        if not version.startswith(b"RFB 003."):
            raise RuntimeError(f"not an RFB server: {version!r}")
        self.sock.sendall(b"RFB 003.008\n")
        count = self.read(1)[0]
        types = self.read(count)
        wanted = 1 if password is None else 2  # None, or VNC Authentication
        if wanted not in types:
            raise RuntimeError(f"no security type {wanted} in {list(types)}")
        self.sock.sendall(bytes([wanted]))
        if wanted == 2:
            self.sock.sendall(vnc_response(password, self.read(16)))
        if struct.unpack(">I", self.read(4))[0] != 0:
            raise RuntimeError("security handshake failed")
        self.sock.sendall(bytes([1]))  # shared
        self.width, self.height = struct.unpack(">HH", self.read(4))
        self.read(16)  # the server's pixel format; ours replaces it
        self.name = self.read(struct.unpack(">I", self.read(4))[0])
        # SetPixelFormat: 32 bpp, depth 24, little-endian, true colour, 255 each, R16 G8 B0.
        self.sock.sendall(struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
        # SetEncodings: raw and the DesktopSize pseudo-encoding.
        self.sock.sendall(struct.pack(">BxHii", 2, 2, 0, -223))
        self.pixels = bytearray(self.width * self.height * 4)
        self.request(incremental=False)

    def read(self, count):
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                self.closed = True
                raise EOFError
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def request(self, incremental=True):
        # A server that stopped (the VM ended) may have closed its end already: what it sent
        # before is still read, up to the end of the stream.
        try:
            self.sock.sendall(struct.pack(">BBHHHH", 3, 1 if incremental else 0, 0, 0, self.width, self.height))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def key(self, keysym):
        for down in (1, 0):
            self.sock.sendall(struct.pack(">BBxxI", 4, down, keysym))

    def pump(self, seconds):
        """Handles server messages for up to `seconds`; returns True when the screen changed."""
        changed = False
        deadline = time.time() + seconds
        while True:
            remaining = deadline - time.time()
            if remaining <= 0 and not self.buffer:
                return changed
            if not self.buffer:
                ready, _, _ = select.select([self.sock], [], [], max(remaining, 0))
                if not ready:
                    return changed
            kind = self.read(1)[0]
            if kind == 0:
                self.read(1)
                (rects,) = struct.unpack(">H", self.read(2))
                for _ in range(rects):
                    x, y, w, h, encoding = struct.unpack(">HHHHi", self.read(12))
                    if encoding == -223:
                        self.width, self.height = w, h
                        self.pixels = bytearray(w * h * 4)
                        changed = True
                    elif encoding == 0:
                        data = self.read(w * h * 4)
                        for row in range(h):
                            start = ((y + row) * self.width + x) * 4
                            line = data[row * w * 4:(row + 1) * w * 4]
                            if self.pixels[start:start + w * 4] != line:
                                changed = True
                            self.pixels[start:start + w * 4] = line
                    else:
                        raise RuntimeError(f"unexpected encoding {encoding}")
                self.request()
            elif kind == 1:  # SetColourMapEntries
                self.read(3)
                (count,) = struct.unpack(">H", self.read(2))
                self.read(count * 6)
            elif kind == 2:  # Bell
                pass
            elif kind == 3:  # ServerCutText
                self.read(3)
                self.read(struct.unpack(">I", self.read(4))[0])
            else:
                raise RuntimeError(f"unknown server message {kind}")

    def wait_stable(self, quiet, limit, size=None):
        """Pumps until no change for `quiet` seconds, the screen not uniform (and `size`)."""
        deadline = time.time() + limit
        while time.time() < deadline:
            if (not self.pump(quiet) and (size is None or (self.width, self.height) == size) and
                    len(set(bytes(self.pixels[i:i + 4]) for i in range(0, len(self.pixels), 4 * 97))) > 1):
                return True
        return False

    def rgb(self):
        out = bytearray()
        for i in range(0, len(self.pixels), 4):
            value = int.from_bytes(self.pixels[i:i + 4], "little")
            out += bytes([(value >> 16) & 255, (value >> 8) & 255, value & 255])
        return bytes(out)


def write_frame(client, path):
    with open(path, "wb") as out:
        out.write(f"{client.width} {client.height}\n".encode() + client.rgb())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("output")
    parser.add_argument("--keys", default="")
    parser.add_argument("--last-keys", default="", help="keys sent at the end, not checked")
    parser.add_argument("--size", default="", help="WIDTHxHEIGHT the screen must have first")
    parser.add_argument("--password", default=None, help="answer VNC Authentication with it")
    parser.add_argument("--expect-refusal", action="store_true",
                        help="succeed only if the server refuses the handshake")
    parser.add_argument("--wait-close", action="store_true",
                        help="read until the server closes (the VM stopped) before writing the frame")
    args = parser.parse_args()
    if args.expect_refusal:
        try:
            Client(args.socket, args.password)
        except RuntimeError as refusal:  # not a closed connection: a crashed server closes too
            print(f"refused: {refusal}")
            return 0
        print("the server took the handshake")
        return 1
    client = Client(args.socket, args.password)
    size = tuple(map(int, args.size.split("x"))) if args.size else None
    if not client.wait_stable(1.5, 60, size):
        print("the screen never settled on a picture")
        return 1
    failures = []
    for name in filter(None, args.keys.split(",")):
        before = bytes(client.pixels)
        client.key(KEYSYMS[name])
        # The guest may take a while to redraw (GRUB's gfxterm repaints through the framebuffer).
        deadline = time.time() + 30
        while bytes(client.pixels) == before and time.time() < deadline:
            client.pump(0.5)
        client.wait_stable(1.0, 30)
        if bytes(client.pixels) == before:
            failures.append(name)
        else:
            print(f"key {name}: the screen changed")
    write_frame(client, args.output)
    for name in filter(None, args.last_keys.split(",")):
        client.key(KEYSYMS[name])
    # The server sends the last screen when the VM stops, then closes.
    if args.wait_close:
        try:
            while True:
                client.pump(5)
        except (EOFError, ConnectionResetError):
            pass
    write_frame(client, args.output)
    if failures:
        print(f"keys that did not change the screen: {failures}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
