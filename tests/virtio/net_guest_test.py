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
Usage: net_guest_test.py --lamina PATH --guest DIR [--mode switch|tap]
"""
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
    log = open(os.path.join(folder, f"{name}.log"), "w+b")
    cmdline = f'console=ttyS0 quiet panic=-1 lamina_run="{command}"'
    process = subprocess.Popen(
        [args.lamina, "run", "--memory", "256M",
         "--kernel", os.path.join(args.guest, "vmlinuz"),
         "--initrd", os.path.join(args.guest, "initrd.img"),
         "--rng", "none", "--net", net, "--cmdline", cmdline],
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--lamina", required=True)
    parser.add_argument("--guest", required=True)
    parser.add_argument("--mode", choices=["switch", "tap"], default="switch")
    args = parser.parse_args()
    if args.mode == "switch":
        run_switch(args)
    else:
        run_tap(args)


if __name__ == "__main__":
    main()
