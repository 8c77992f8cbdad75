#!/usr/bin/env python3
"""Hot-add latency against QEMU's, same machine, same run (issue 12's bench).

The default guest (256 MiB, 1 vCPU with room for 3) runs once under laminad (the built-in CPU)
and once under QEMU TCG (`-M pc`, ACPI PCI and CPU hotplug, as Lamina offers). Each gets the
same hot-adds, and each time is from the management call (`lamina vm attach` / `vm set`, or
QEMU's QMP command) to the guest showing the resource, seen on its serial console through a
loop typed into the guest beforehand (the guest onlines CPUs and memory itself):
  disk    a raw image with a known first sector: until the guest reads it from /dev/vda
  vcpus   1 -> 3: until nproc says 3
  memory  +256 MiB through virtio-mem (Lamina's `--memory 256M,max=512M`, QEMU's virtio-mem-pci):
          until MemTotal has grown
Prints milliseconds for each and the ratio lamina/qemu (below 1: Lamina is faster).
Usage: bench/hotplug_bench.py [BUILD_DIR] [--rounds N]
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = b"lamina-guest:/#"
CMDLINE = "console=ttyS0 quiet panic=-1 no_timer_check"
WATCH = {
    "disk": "while [ ! -b /dev/vda ]; do usleep 5000; done; echo seen-$((40+2)) $(head -c 10 /dev/vda)",
    "vcpus": "while [ $(nproc) -lt 3 ]; do usleep 5000; done; echo cpus-$((1+2))",
    "memory": "while [ $(awk '/MemTotal/ {print $2}' /proc/meminfo) -lt 400000 ]; do usleep 5000; "
              "done; echo mem-$((9+9))",
}
SEEN = {"disk": b"seen-42 bench-4711", "vcpus": b"cpus-3", "memory": b"mem-18"}


class Console:
    """A guest's serial console: typed into through `send`, read from a growing log."""

    def __init__(self, send, log_path):
        self.send, self.log_path = send, log_path

    def text(self):
        try:
            with open(self.log_path, "rb") as log:
                return log.read()
        except FileNotFoundError:
            return b""

    def wait(self, pattern, after=0, timeout=240):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pattern in self.text()[after:]:
                return time.monotonic()
            time.sleep(0.002)
        sys.exit(f"the guest never showed {pattern!r}; its console ended with:\n"
                 f"{self.text()[-600:].decode(errors='replace')}")

    def type_line(self, line):
        self.send((line + "\n").encode())


def measure(console, what, trigger):
    """Types the watching loop, waits until it runs, fires the hot-add, returns ms to seen."""
    mark = len(console.text())
    console.type_line(WATCH[what])
    time.sleep(1.5)
    start = time.monotonic()
    trigger()
    return (console.wait(SEEN[what], mark, timeout=60) - start) * 1000


def lamina_run(build, guest, work, image):
    env = dict(os.environ, XDG_RUNTIME_DIR=os.path.join(work, "run"))
    os.mkdir(env["XDG_RUNTIME_DIR"], 0o700)
    sock = os.path.join(work, "laminad.sock")
    env["LAMINA_CONNECT"] = f"unix:{sock}"
    daemon = subprocess.Popen([os.path.join(build, "laminad"), "--state-dir",
                               os.path.join(work, "state"), "--socket", sock],
                              env=env, stderr=subprocess.DEVNULL)
    lamina = os.path.join(build, "lamina")
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.1)
        run = lambda *args: subprocess.run([lamina, *args], env=env, check=True,
                                           stdout=subprocess.DEVNULL)
        run("vm", "create", "hb", "--cpus", "1,max=3", "--memory", "256M,max=512M", "--kernel",
            os.path.join(guest, "vmlinuz"), "--initrd", os.path.join(guest, "initrd.img"),
            "--cmdline", CMDLINE)
        run("vm", "start", "hb")

        def send(data):
            # stdin stays open a moment: the console session ends at its end of input.
            session = subprocess.Popen(["timeout", "3", lamina, "vm", "console", "hb"], env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            session.stdin.write(data)
            session.stdin.flush()
            time.sleep(0.5)
            session.stdin.close()
            session.wait()
        console = Console(send, os.path.join(work, "state", "vms", "hb", "console.log"))
        console.wait(PROMPT)
        return {
            "disk": measure(console, "disk", lambda: run("vm", "attach", "hb", "--disk", image)),
            "vcpus": measure(console, "vcpus", lambda: run("vm", "set", "hb", "--cpus", "3")),
            "memory": measure(console, "memory", lambda: run("vm", "set", "hb", "--memory", "512M")),
        }
    finally:
        subprocess.run([lamina, "vm", "stop", "hb", "--force"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        daemon.terminate()
        daemon.wait(timeout=20)


def qemu_run(guest, work, image):
    serial_path, qmp_path = os.path.join(work, "serial.sock"), os.path.join(work, "qmp.sock")
    log_path = os.path.join(work, "qemu-console.log")
    qemu = subprocess.Popen([
        "qemu-system-x86_64", "-accel", "tcg", "-M", "pc", "-nodefaults", "-display", "none",
        "-m", "256M,slots=1,maxmem=512M", "-smp", "1,maxcpus=3,sockets=3,cores=1,threads=1",
        "-object", "memory-backend-ram,id=hot,size=256M",
        "-device", "virtio-mem-pci,id=vmem,memdev=hot,requested-size=0",
        "-kernel", os.path.join(guest, "vmlinuz"), "-initrd", os.path.join(guest, "initrd.img"),
        "-append", CMDLINE, "-serial", f"unix:{serial_path},server=on,wait=off",
        "-qmp", f"unix:{qmp_path},server=on,wait=off"], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(serial_path) and os.path.exists(qmp_path):
                break
            time.sleep(0.05)
        serial = socket.socket(socket.AF_UNIX)
        serial.connect(serial_path)
        log = open(log_path, "wb", buffering=0)
        import threading

        def pump():
            while data := serial.recv(65536):
                log.write(data)
        threading.Thread(target=pump, daemon=True).start()
        qmp = socket.socket(socket.AF_UNIX)
        qmp.connect(qmp_path)
        replies = qmp.makefile("rb")
        replies.readline()  # greeting

        def command(name, **arguments):
            qmp.sendall(json.dumps({"execute": name, "arguments": arguments}).encode())
            while True:
                reply = json.loads(replies.readline())
                if "return" in reply:
                    return
                if "error" in reply:
                    sys.exit(f"QMP {name}: {reply['error']}")
        command("qmp_capabilities")
        console = Console(serial.sendall, log_path)
        console.wait(PROMPT)

        def add_disk():
            command("blockdev-add", **{"node-name": "hd1", "driver": "raw",
                                       "file": {"driver": "file", "filename": image}})
            command("device_add", driver="virtio-blk-pci", drive="hd1", id="vd1")

        def add_cpus():
            for socket_id in (1, 2):
                command("device_add", driver="qemu64-x86_64-cpu", id=f"cpu{socket_id}",
                        **{"socket-id": socket_id, "core-id": 0, "thread-id": 0})
        return {
            "disk": measure(console, "disk", add_disk),
            "vcpus": measure(console, "vcpus", add_cpus),
            "memory": measure(console, "memory",
                              lambda: command("qom-set", path="vmem", property="requested-size",
                                              value=256 << 20)),
        }
    finally:
        qemu.kill()
        qemu.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("build", nargs="?", default=os.path.join(TOP, "build"))
    parser.add_argument("--rounds", type=int, default=1, help="runs of each VMM (medians shown)")
    args = parser.parse_args()
    build = os.path.abspath(args.build)
    guest = os.environ.get("LAMINA_GUEST_DIR", os.path.expanduser("~/.cache/lamina/guest"))
    if not os.path.exists(os.path.join(guest, "vmlinuz")):
        subprocess.run([os.path.join(TOP, "scripts", "make-guest")], check=True,
                       stdout=subprocess.DEVNULL)
    results = {"lamina": [], "qemu": []}
    for _ in range(args.rounds):
        for vmm in ("lamina", "qemu"):
            with tempfile.TemporaryDirectory() as work:
                image = os.path.join(work, "data.raw")
                with open(image, "wb") as data:
                    data.write(b"bench-4711\n".ljust(512, b"\0"))
                    data.truncate(8 << 20)
                results[vmm].append(lamina_run(build, guest, work, image) if vmm == "lamina"
                                    else qemu_run(guest, work, image))
    median = lambda values: sorted(values)[len(values) // 2]
    print(f"hot-add, ms from the call to the guest seeing it ({args.rounds} round(s), medians)")
    print(f"{'':8} {'lamina':>8} {'qemu-tcg':>8} {'ratio':>6}")
    for what in ("disk", "vcpus", "memory"):
        ours = median([r[what] for r in results["lamina"]])
        theirs = median([r[what] for r in results["qemu"]])
        print(f"{what:8} {ours:8.0f} {theirs:8.0f} {ours / theirs:6.2f}")


if __name__ == "__main__":
    main()
