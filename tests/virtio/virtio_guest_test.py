#!/usr/bin/env python3
"""Boots the default guest on `lamina run` with virtio-rng and a virtio console port on a Unix
socket, and checks from inside the guest that the devices are there and work:
  - /sys/bus/virtio/devices lists both devices;
  - the kernel's hw_random core picked virtio_rng and /dev/hwrng returns 256 varied bytes;
  - /dev/hvc0 carries a random token guest -> host (read here from the socket) and another
    host -> guest (sent here, echoed by the guest on its serial console);
  - interrupts are MSI-X (PCI-MSI in /proc/interrupts), or INTx through the IOAPIC when the
    kernel runs with pci=nomsi (--interrupts intx).
With --rng none the guest must see only the console and no virtio_rng.
Usage: virtio_guest_test.py --lamina PATH --guest DIR [--interrupts msix|intx] [--rng host|none]
       [--cpus N]
"""
import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time


def fail(message, serial):
    print(f"FAIL: {message}")
    print("---- guest serial console ----")
    print(serial)
    sys.exit(1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lamina", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--interrupts", choices=["msix", "intx"], default="msix")
    parser.add_argument("--rng", choices=["host", "none"], default="host")
    parser.add_argument("--cpus", type=int, default=1)
    args = parser.parse_args()

    # Random tokens, so no hard-coded line can pass.
    to_host = f"from-guest-{random.randrange(10**9)}"
    to_guest = f"from-host-{random.randrange(10**9)}"
    command = (
        "echo devices: $(ls /sys/bus/virtio/devices); "
        "echo rng-current=$(cat /sys/devices/virtual/misc/hw_random/rng_current); "
        "echo rng-bytes=$(dd if=/dev/hwrng bs=64 count=4 2>/dev/null | wc -c); "
        "echo rng-distinct=$(dd if=/dev/hwrng bs=64 count=4 2>/dev/null | od -An -v -tx1 "
        "| tr -s ' ' '\\n' | grep . | sort -u | wc -l); "
        "grep virtio /proc/interrupts; "
        "exec 3<>/dev/hvc0; stty raw -echo <&3; "
        f"echo {to_host} >&3; read -r line <&3; echo got:$line"
    )
    cmdline = "console=ttyS0 quiet no_timer_check panic=-1 "
    if args.interrupts == "intx":
        cmdline += "pci=nomsi "
    cmdline += f'lamina_run="{command}"'

    with tempfile.TemporaryDirectory() as folder:
        socket_path = os.path.join(folder, "console.sock")
        # The serial console goes to a file, so a full pipe can never stall the guest.
        log = open(os.path.join(folder, "serial.log"), "w+b")

        def serial_so_far():
            log.seek(0)
            return log.read().decode(errors="replace")

        vmm = subprocess.Popen(
            [args.lamina, "run", "--cpus", str(args.cpus), "--memory", "512M",
             "--kernel", os.path.join(args.guest, "vmlinuz"),
             "--initrd", os.path.join(args.guest, "initrd.img"),
             "--rng", args.rng, "--console-port", f"socket:{socket_path}",
             "--cmdline", cmdline],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            deadline = time.time() + 30
            while True:
                try:
                    client.connect(socket_path)
                    break
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.time() > deadline or vmm.poll() is not None:
                        fail("lamina never listened on the console socket",
                             serial_so_far())
                    time.sleep(0.1)
            # The guest's line arrives once it has booted; then answer it.
            client.settimeout(240)
            received = b""
            while to_host.encode() not in received:
                try:
                    data = client.recv(4096)
                except socket.timeout:
                    data = b""
                if not data:
                    vmm.kill()
                    fail(f"no '{to_host}' on the console socket (got {received!r})",
                         serial_so_far())
                received += data
            client.sendall(f"{to_guest}\n".encode())
            vmm.wait(timeout=240)
        except subprocess.TimeoutExpired:
            vmm.kill()
            fail("the guest did not finish", serial_so_far())
        serial = serial_so_far().replace("\r", "")

    if vmm.returncode != 0:
        fail(f"lamina exited with status {vmm.returncode}", serial)
    if "LAMINA-EXIT-STATUS: 0" not in serial:
        fail("the guest command did not exit 0", serial)
    devices = re.search(r"^devices: (.*)$", serial, re.M)
    expected_devices = 2 if args.rng == "host" else 1
    if not devices or len(devices.group(1).split()) != expected_devices:
        fail(f"expected {expected_devices} virtio devices", serial)
    if args.rng == "host":
        if not re.search(r"^rng-current=virtio_rng", serial, re.M):
            fail("the hw_random core did not pick virtio_rng", serial)
        if "rng-bytes=256" not in serial:
            fail("/dev/hwrng did not return 256 bytes", serial)
        distinct = re.search(r"^rng-distinct=(\d+)", serial, re.M)
        # 256 random bytes take about 160 distinct values; a stuck source gives a handful.
        if not distinct or int(distinct.group(1)) < 64:
            fail("/dev/hwrng bytes do not look random", serial)
    elif re.search(r"^rng-current=virtio", serial, re.M):
        fail("--rng none still gave the guest virtio-rng", serial)
    if f"got:{to_guest}" not in serial:
        fail("the host's line did not reach the guest through /dev/hvc0", serial)
    interrupts = [line for line in serial.splitlines() if "virtio" in line and ":" in line
                  and ("MSI" in line or "APIC" in line)]
    if args.interrupts == "msix":
        if not any("PCI-MSI" in line for line in interrupts):
            fail("no MSI-X interrupts for the virtio devices", serial)
    else:
        if any("MSI" in line for line in interrupts) or not any("IO-APIC" in line
                                                                for line in interrupts):
            fail("expected INTx through the IOAPIC only", serial)
    print(f"ok: virtio devices with {args.interrupts}, rng {args.rng}")


if __name__ == "__main__":
    main()
