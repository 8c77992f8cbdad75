#pragma once
// The worker's control protocol, version 1: JSON messages on a MessageChannel between laminad
// (the controller) and one lamina-vm. laminad includes this header only from the worker (it
// never runs machine code). Every message carries "v": kControlProtocolVersion.
//
//   worker → controller, first:   {"event": "hello", "pid": P}
//   controller → worker, first:   {"id": N, "op": "start", "name": NAME, "definition": {...},
//                                   "grants": {"files": [...], "answers": {...}}}
//                                  (machine/vm_definition.h, with the kernel named; the
//                                   worker opens what it names through the grants — the
//                                   descriptors laminad opened, base/granted_files.h — then
//                                   enters its sandbox, then answers and boots). Its fds, in
//                                  order: with "console": true a stream socket that carries
//                                  the first serial port both ways (instead of "serial"); the
//                                  grants'; with "restore": true, last, a machine state file
//                                  (migration/machine_state.h) the VM continues from
//   controller → worker, then:    {"id": N, "op": OP}  with OP one of "query", "pause",
//                                  "resume", "power_button", "reset", "stop"
//   controller → worker:          {"id": N, "op": "attach_console"} with one fd: a new console
//                                  link (a VM started with "console": true)
//   controller → worker:          {"id": N, "op": "save"} with one fd: a regular file the
//                                  worker writes the VM's state into (flushed) before it
//                                  answers; the VM then stops ("stopped", exit "host_stop").
//                                  The reply adds "state_bytes", "ram_bytes", "ram_written",
//                                  "file_bytes"; on an error the VM runs on
//   controller → worker:          {"id": N, "op": "screenshot"} with one fd: a file the
//                                  worker writes the screen into as PNG (from offset 0); the
//                                  reply adds "width", "height", "png_bytes" and, in a VGA
//                                  text mode, "text" (the characters, a line per row)
//   controller → worker:          {"id": N, "op": "attach", "disk": SPEC | "net": SPEC,
//                                  "grants": {...}} with the grants' fds: laminad opened the
//                                  image (its chain, its lock) or the port; the device is
//                                  hot-plugged (ACPI PCI hotplug) and the reply adds "slot"
//   controller → worker:          {"id": N, "op": "detach", "disk": I | "net": I,
//                                  "timeout_ms": T (<= 120000)}: the I-th disk or card in
//                                  definition order leaves after the guest ejects it (the
//                                  image flushed and closed); a guest that does not eject
//                                  within T gets {"ok": false, "timed_out": true} and keeps it.
//                                  An error reply says "detached": true when the device went
//                                  but its last flush failed
//   controller → worker:          {"id": N, "op": "set_vcpus", "vcpus": C, "timeout_ms": T}:
//                                  ACPI CPU hotplug until C vCPUs are present; the reply (also
//                                  an error's) says "vcpus" reached
//   controller → worker:          {"id": N, "op": "set_memory", "bytes": B}: the guest is
//                                  asked to use B bytes of RAM (virtio-mem); "query"'s
//                                  "memory_bytes" then says what it has
//   worker → controller replies:  {"id": N, "ok": true, ...} or {"id": N, "ok": false,
//                                  "error": "why"}; "query" adds "state", "vcpus",
//                                  "memory_bytes", "instructions", "boots", "disks" and
//                                  "nics" (traffic counters, in definition order)
//   worker → controller events:   {"event": "state", "state": "running|paused"}
//                                 {"event": "hello", "name": NAME, "state": S} to a
//                                  controller that connects to the worker's listening socket
//                                  (--listen-fd) after the first one went away
//                                 {"event": "stopped", "exit": EXIT, "status": S, "reason": R}
//                                  (then the worker exits with status S)
//
// A peer that breaks the protocol (bad JSON, wrong version, unknown op) gets an error reply or
// a closed channel, never a crash. Plain constants; thread-safe.

#include <array>
#include <string_view>

namespace lamina::worker {

inline constexpr int kControlProtocolVersion = 1;

// Values of "exit" in the stopped event.
inline constexpr std::array<std::string_view, 7> kExitNames = {
    "poweroff", "reset", "triple_fault", "debug_exit", "user_quit", "host_stop", "error"};

}  // namespace lamina::worker
