#!/usr/bin/env python3
"""Guest networking through `lamina run --net` on the default guest.

--mode switch: two VMs boot in parallel on one Lamina virtual switch (auto-started from
  `lamina run`, in a private XDG_RUNTIME_DIR), take 10.0.0.1 and 10.0.0.2 with busybox `ip`,
  and each pings the other. Each guest keeps answering until it has both had a reply and been
  pinged itself (the kernel's Icmp InEchos counter), so traffic is checked both ways. Each
  guest's NIC must carry the MAC address given with mac=, and `lamina switch list` must show
  the switch the runs started.
--mode tap: in a private network namespace (unshare -rn) the test makes tap interface lam0
  with 10.0.1.1, the guest (10.0.1.2, --net tap:lam0) pings it, and the host's neighbour
  table must hold the guest's MAC address. Exits 77 (skipped) when no namespace can be made.
--mode spoof: one VM with two NICs on a switch the test serves (`lamina switch serve`), the
  first with MAC spoofing off (the default), the second with mac-spoofing=on. A port of the
  test's own on the switch watches every frame. The guest sends ARP from both NICs, changes
  both MAC addresses (`ip link set NIC address`) and sends again: traffic from the first NIC's
  new address must never reach the switch's other ports (and be counted as spoofed in
  `lamina switch show`), traffic from the second's must.
Usage: net_guest_test.py --lamina PATH --guest DIR [--mode switch|tap|spoof]
"""
import json
import select
import signal
import socket
import struct
import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
# Seconds a guest keeps trying; the built-in CPU boots the guest in 10-30 s, two at once slower.
GUEST_TRIES = 180


def guest_command(address, peer):
    """Configures the one non-loopback NIC and pings `peer` until it answers and the peer has
    pinged this guest too. No double quotes: the command is a quoted kernel parameter."""
    return (
        "nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1); "
        "echo nic=$nic mac=$(cat /sys/class/net/$nic/address); "
        f"ip link set $nic up && ip addr add {address}/24 dev $nic || exit 3; "
        "echoes() { awk '/^Icmp:/ { if (!c) { for (i = 1; i <= NF; i++) "
        "if ($i ~ /^InEchos$/) c = i } else print $c }' /proc/net/snmp; }; "
        "replied=0; n=0; "
        f"while [ $n -lt {GUEST_TRIES} ]; do n=$((n + 1)); "
        f"if [ $replied = 0 ]; then ping -c 1 -W 1 {peer} >/dev/null 2>&1 && "
        "{ replied=1; echo peer-replied; }; else sleep 1; fi; "
        "e=$(echoes); if [ $replied = 1 ] && [ ${e:-0} -gt 0 ]; then "
        "echo pinged-by-peer=$(echoes); sleep 2; exit 0; fi; done; "
        "echo replied=$replied echoes=$(echoes); exit 4"
    )


def host_only_command(address, peer):
    """The tap case: the host answers pings but does not ping back."""
    return (
        "nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1); "
        "echo nic=$nic mac=$(cat /sys/class/net/$nic/address); "
        f"ip link set $nic up && ip addr add {address}/24 dev $nic || exit 3; "
        f"n=0; while [ $n -lt {GUEST_TRIES} ]; do n=$((n + 1)); "
        f"ping -c 1 -W 1 {peer} >/dev/null 2>&1 && {{ echo peer-replied; sleep 1; exit 0; }}; done; "
        "exit 4"
    )


def random_mac(last):
    return "52:54:00:{:02x}:{:02x}:{:02x}".format(random.randrange(256), random.randrange(256),
                                                  last)


def start_vm(args, folder, name, net, command, env=None):
    """net: one --net value or a list of them."""
    log = open(os.path.join(folder, f"{name}.log"), "w+b")
    cmdline = f'console=ttyS0 quiet no_timer_check panic=-1 lamina_run="{command}"'
    nets = [net] if isinstance(net, str) else net
    process = subprocess.Popen(
        [args.lamina, "run", "--memory", "256M",
         "--kernel", os.path.join(args.guest, "vmlinuz"),
         "--initrd", os.path.join(args.guest, "initrd.img"),
         "--rng", "none", *[part for value in nets for part in ("--net", value)],
         "--cmdline", cmdline],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
    return process, log


def wait_vm(name, process, log, failures):
    try:
        process.wait(timeout=240)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        failures.append(f"{name}: the guest did not finish in 240 s")
    log.seek(0)
    serial = log.read().decode(errors="replace").replace("\r", "")
    if process.returncode != 0:
        failures.append(f"{name}: lamina exited with status {process.returncode}")
    if "LAMINA-EXIT-STATUS: 0" not in serial:
        failures.append(f"{name}: the guest command did not exit 0")
    return serial


def check_guest(name, serial, mac, failures, need_echo):
    found = re.search(r"^nic=(\S+) mac=(\S+)", serial, re.M)
    if not found:
        failures.append(f"{name}: the guest has no network card")
    elif found.group(2) != mac:
        failures.append(f"{name}: the NIC has MAC {found.group(2)}, not {mac}")
    if "peer-replied" not in serial:
        failures.append(f"{name}: no ping reply from the peer")
    if need_echo and "pinged-by-peer=" not in serial:
        failures.append(f"{name}: the peer's pings never arrived")


def report(failures, serials):
    if not failures:
        return
    for line in failures:
        print(f"FAIL: {line}")
    for name, serial in serials.items():
        print(f"---- {name} serial console ----")
        print(serial)
    sys.exit(1)


def run_switch(args):
    with tempfile.TemporaryDirectory() as folder:
        runtime = os.path.join(folder, "run")
        os.mkdir(runtime, 0o700)
        env = dict(os.environ, XDG_RUNTIME_DIR=runtime)
        switch = f"guest{random.randrange(10**6)}"
        macs = {"vm-a": random_mac(1), "vm-b": random_mac(2)}
        vms = {
            "vm-a": start_vm(args, folder, "vm-a", f"switch:{switch},mac={macs['vm-a']}",
                             guest_command("10.0.0.1", "10.0.0.2"), env),
            "vm-b": start_vm(args, folder, "vm-b", f"switch:{switch},mac={macs['vm-b']}",
                             guest_command("10.0.0.2", "10.0.0.1"), env),
        }
        failures = []
        serials = {name: wait_vm(name, *vm, failures) for name, vm in vms.items()}
        for name, serial in serials.items():
            check_guest(name, serial, macs[name], failures, need_echo=True)
        # The daemon the first run started idles 10 s before it exits: it must still answer.
        listed = subprocess.run([args.lamina, "switch", "list"], env=env, capture_output=True,
                                text=True, timeout=30)
        if listed.returncode != 0 or switch not in listed.stdout:
            failures.append(f"`lamina switch list` does not show {switch}: "
                            f"{listed.returncode} {listed.stdout!r} {listed.stderr!r}")
        report(failures, serials)
    print("ok: two VMs on one virtual switch pinged each other both ways")


def run_tap(args):
    if not os.environ.get("LAMINA_NET_GUEST_NS"):
        if shutil.which("unshare") is None or subprocess.run(
                ["unshare", "-rn", "true"], capture_output=True).returncode != 0:
            print("SKIP: no private network namespace (unshare -rn failed)")
            sys.exit(SKIP)
        env = dict(os.environ, LAMINA_NET_GUEST_NS="1")
        sys.exit(subprocess.run(["unshare", "-rn", sys.executable, *sys.argv],
                                env=env).returncode)
    for step in (["ip", "tuntap", "add", "dev", "lam0", "mode", "tap"],
                 ["ip", "addr", "add", "10.0.1.1/24", "dev", "lam0"],
                 ["ip", "link", "set", "lam0", "up"]):
        made = subprocess.run(step, capture_output=True, text=True)
        if made.returncode != 0:
            print(f"SKIP: {' '.join(step)} failed: {made.stderr.strip()}")
            sys.exit(SKIP)
    mac = random_mac(3)
    with tempfile.TemporaryDirectory() as folder:
        process, log = start_vm(args, folder, "vm", f"tap:lam0,mac={mac}",
                                host_only_command("10.0.1.2", "10.0.1.1"))
        # The kernel forgets lam0's neighbours when the tap loses its carrier (lamina exits),
        # so look while the guest runs.
        neighbours = ""
        deadline = time.time() + 240
        while process.poll() is None and mac not in neighbours and time.time() < deadline:
            neighbours = subprocess.run(["ip", "neigh", "show", "dev", "lam0"],
                                        capture_output=True, text=True).stdout
            time.sleep(0.2)
        failures = []
        serials = {"vm": wait_vm("vm", process, log, failures)}
        check_guest("vm", serials["vm"], mac, failures, need_echo=False)
        if mac not in neighbours:
            failures.append(f"the host never saw {mac} on lam0 (neighbours: {neighbours!r})")
        report(failures, serials)
    print("ok: the guest pinged the host through a tap")


def spoof_command(macs, new_macs):
    """Finds the NICs by address, sends ARP (pings to absent hosts) from each, changes both
    addresses and sends again. Targets .98 before and .99 after the change tell the phases
    apart on the wire."""
    return (
        "for n in $(ls /sys/class/net); do a=$(cat /sys/class/net/$n/address); "
        f"[ $a = {macs[0]} ] && n0=$n; [ $a = {macs[1]} ] && n1=$n; done; "
        "echo nics=$n0,$n1; [ -n \"$n0\" ] && [ -n \"$n1\" ] || exit 3; "
        "ip link set $n0 up && ip link set $n1 up || exit 3; "
        "ip addr add 10.0.0.1/24 dev $n0 && ip addr add 10.0.1.1/24 dev $n1 || exit 3; "
        "ping -c 2 -W 1 10.0.0.98 >/dev/null 2>&1; ping -c 2 -W 1 10.0.1.98 >/dev/null 2>&1; "
        f"ip link set $n0 address {new_macs[0]} && ip link set $n1 address {new_macs[1]} || exit 5; "
        "echo changed=$(cat /sys/class/net/$n0/address),$(cat /sys/class/net/$n1/address); "
        "ping -c 2 -W 1 10.0.0.99 >/dev/null 2>&1; ping -c 2 -W 1 10.0.1.99 >/dev/null 2>&1; "
        "echo sent-after-change; sleep 5; exit 0"
    )


def mac_text(raw):
    return ":".join(f"{b:02x}" for b in raw)


def arp_target(frame):
    """The target IPv4 address of an ARP request frame, else None."""
    if len(frame) >= 42 and frame[12:14] == b"\x08\x06":
        return socket.inet_ntoa(frame[38:42])
    return None


def run_spoof(args):
    with tempfile.TemporaryDirectory() as folder:
        runtime = os.path.join(folder, "run")
        os.mkdir(runtime, 0o700)
        env = dict(os.environ, XDG_RUNTIME_DIR=runtime)
        switch = f"spoof{random.randrange(10**6)}"
        daemon = subprocess.Popen([args.lamina, "switch", "serve", switch], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            path = os.path.join(runtime, "lamina", "switch", f"{switch}.sock")
            deadline = time.time() + 20
            while not os.path.exists(path) and time.time() < deadline:
                time.sleep(0.05)
            watcher = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            watcher.connect(path)
            watcher.send(json.dumps({"lamina_switch": 2, "role": "port", "label": "watcher",
                                     "mac": "02:00:00:00:00:fe"}).encode())
            welcome = json.loads(watcher.recv(1024))
            if "port" not in welcome:
                print(f"FAIL: the switch refused the watcher: {welcome}")
                sys.exit(1)
            macs = [random_mac(1), random_mac(2)]
            new_macs = [random_mac(0x11), random_mac(0x12)]
            nets = [f"switch:{switch},mac={macs[0]}",
                    f"switch:{switch},mac={macs[1]},mac-spoofing=on"]
            process, log = start_vm(args, folder, "vm", nets, spoof_command(macs, new_macs), env)
            seen = {}  # source MAC -> set of ARP targets (or "other")
            ports = None  # `lamina switch show` once the guest sent from its new addresses
            deadline = time.time() + 240
            while time.time() < deadline:
                ready, _, _ = select.select([watcher], [], [], 0.5)
                if ready:
                    frame = watcher.recv(65536)
                    if len(frame) >= 14:
                        seen.setdefault(mac_text(frame[6:12]), set()).add(
                            arp_target(frame) or "other")
                elif process.poll() is not None:
                    break
                if ports is None and b"sent-after-change" in open(log.name, "rb").read():
                    # The guest waits 5 s before it powers off, for this look at the counters.
                    shown = subprocess.run([args.lamina, "switch", "show", switch, "--json"],
                                           env=env, capture_output=True, text=True, timeout=30)
                    ports = ({p["mac"]: p for p in json.loads(shown.stdout)["ports"]}
                             if shown.returncode == 0 else {"error": shown.stderr})
            failures = []
            serials = {"vm": wait_vm("vm", process, log, failures)}
            if f"changed={new_macs[0]},{new_macs[1]}" not in serials["vm"]:
                failures.append("the guest did not change its MAC addresses")
            if "10.0.0.98" not in seen.get(macs[0], set()):
                failures.append(f"no ARP from {macs[0]} before the change: {seen}")
            if new_macs[0] in seen:
                failures.append(f"frames from the spoofed {new_macs[0]} passed the switch: "
                                f"{seen[new_macs[0]]}")
            if "10.0.1.99" not in seen.get(new_macs[1], set()):
                failures.append(f"no ARP from {new_macs[1]} (mac-spoofing=on): {seen}")
            if ports is None:
                failures.append("the guest never reported sending from its new addresses")
            elif (ports.get(macs[0], {}).get("spoofed_frames", 0) == 0
                  or ports.get(macs[0], {}).get("mac_spoofing") is not False
                  or ports.get(macs[1], {}).get("spoofed_frames", 1) != 0
                  or ports.get(macs[1], {}).get("mac_spoofing") is not True):
                failures.append(f"switch show does not count the spoofed frames: {ports}")
            report(failures, serials)
            print("ok: a guest's changed MAC is dropped by the switch unless mac-spoofing=on")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=10)


def daemon_pids(switch, runtime):
    """The pids of the daemons serving `switch` for this test (their environment names it)."""
    found = subprocess.run(["pgrep", "-f", f"switch serve {switch}"], capture_output=True, text=True)
    pids = []
    for pid in found.stdout.split():
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if runtime.encode() in environ.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


def run_reconnect(args):
    """The switch daemon of a running `lamina run` VM is killed: lamina run starts the switch
    again and plugs the card into it, and the guest's pings get answers again."""
    pinger_script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mgmt",
                                 "switch_pinger.py")
    with tempfile.TemporaryDirectory() as folder:
        runtime = os.path.join(folder, "run")
        os.mkdir(runtime, 0o700)
        env = dict(os.environ, XDG_RUNTIME_DIR=runtime)
        switch = f"back{random.randrange(10**6)}"
        socket_path = os.path.join(runtime, "lamina", "switch", f"{switch}.sock")
        # Twenty answered pings, half a second apart: the switch is killed after the first, so
        # the later ones must cross the restarted switch (its pinger logs them).
        command = (
            "nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1); "
            "ip link set $nic up && ip addr add 10.0.9.2/24 dev $nic || exit 3; "
            "ok=0; n=0; "
            f"while [ $n -lt {GUEST_TRIES} ] && [ $ok -lt 20 ]; do n=$((n + 1)); "
            "ping -c 1 -W 1 10.0.9.1 >/dev/null 2>&1 && ok=$((ok + 1)); sleep 0.5; done; "
            "echo answered ok=$ok tries=$n carrier=$(cat /sys/class/net/$nic/carrier); "
            "[ $ok -ge 20 ] || exit 4")
        vm, log = start_vm(args, folder, "vm", f"switch:{switch},mac={random_mac(7)}", command, env)
        failures = []
        pings = os.path.join(folder, "pings")
        deadline = time.monotonic() + 200

        def start_pinger():
            while not os.path.exists(socket_path) and time.monotonic() < deadline:
                time.sleep(0.1)
            return subprocess.Popen([sys.executable, pinger_script, socket_path, pings],
                                    stderr=subprocess.DEVNULL)

        pinger = start_pinger()
        while (not os.path.exists(pings) or os.path.getsize(pings) == 0) and \
                time.monotonic() < deadline and vm.poll() is None:
            time.sleep(0.2)
        first = daemon_pids(switch, runtime)
        if not os.path.exists(pings) or os.path.getsize(pings) == 0:
            failures.append("the guest's pings never reached the switch")
        elif not first:
            failures.append(f"no daemon serves {switch}")
        else:
            for pid in first:
                os.kill(pid, 9)
            pinger.wait(timeout=10)
            os.remove(pings)  # from here on, only requests that crossed the new switch
            # lamina run starts a new daemon (a new pid) and plugs the card into it.
            while time.monotonic() < deadline and not [p for p in daemon_pids(switch, runtime)
                                                       if p not in first]:
                time.sleep(0.1)
            pinger = start_pinger()
        serial = wait_vm("vm", vm, log, failures)
        pinger.kill()
        pinger.wait()
        if "answered ok=20" not in serial:
            failures.append("the guest's pings were not answered after the switch came back")
        if not os.path.exists(pings) or os.path.getsize(pings) == 0:
            failures.append("no echo request reached the restarted switch")
        if "carrier=1" not in serial:
            failures.append("the card's link is not up after the reconnection")
        if "reconnected" not in serial:
            failures.append("lamina run did not say it reconnected the card")
        report(failures, {"vm": serial})
    print("ok: a card whose switch daemon died was plugged into the restarted switch")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lamina", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--mode", choices=["switch", "tap", "spoof", "reconnect"], default="switch")
    args = parser.parse_args()
    if args.mode == "switch":
        run_switch(args)
    elif args.mode == "spoof":
        run_spoof(args)
    elif args.mode == "reconnect":
        run_reconnect(args)
    else:
        run_tap(args)


if __name__ == "__main__":
    main()
