#!/usr/bin/env bash
# `lamina vm import` with a VMware VM the test makes: one disk in each VMDK kind VMware writes
# (monolithicSparse, twoGbMaxExtentSparse, streamOptimized, monolithicFlat, made by qemu-img
# from one raw image with marks in it), a CD-ROM, EFI firmware, two network cards. The imported
# VM must keep the vCPUs, memory and MACs, its VHDX disks must equal the raw image (qemu-img
# compare), what has no equivalent must be listed, and the imported VM boots and reads its
# first disk. A second import under the same name changes nothing.
#   vmware_import_test.sh LAMINA LAMINAD GUEST_DIR
set -euo pipefail
lamina=$1 laminad=$2 guest=$3
[[ -f $guest/vmlinuz ]] || { echo "no default guest in $guest"; exit 1; }
source "$(dirname "${BASH_SOURCE[0]}")/laminad_lib.sh"
laminad_setup
start_laminad

# The source data: 24 MiB with a mark at the start, in the middle and near the end.
vm=$work/vmware
mkdir "$vm"
truncate -s 24M "$work/data.raw"
mark="vmware-data-$RANDOM$RANDOM"
for offset in 0 12582912 25165312; do
  printf '%s' "$mark" | dd of="$work/data.raw" bs=1 seek=$offset conv=notrunc status=none
done
for kind in monolithicSparse twoGbMaxExtentSparse streamOptimized monolithicFlat; do
  qemu-img convert -q -f raw -O vmdk -o subformat=$kind "$work/data.raw" "$vm/$kind.vmdk"
done
cat >"$vm/web server.vmx" <<VMX
.encoding = "UTF-8"
config.version = "8"
displayName = "web server"
guestOS = "debian12-64"
numvcpus = "2"
memsize = "256"
firmware = "efi"
scsi0.present = "TRUE"
scsi0.virtualDev = "pvscsi"
scsi0:0.present = "TRUE"
scsi0:0.fileName = "monolithicSparse.vmdk"
sata0.present = "TRUE"
sata0:1.present = "TRUE"
sata0:1.fileName = "twoGbMaxExtentSparse.vmdk"
ide0:0.present = "TRUE"
ide0:0.fileName = "streamOptimized.vmdk"
ide1:0.present = "TRUE"
ide1:0.deviceType = "cdrom-image"
ide1:0.fileName = "debian.iso"
nvme0:0.present = "TRUE"
nvme0:0.fileName = "monolithicFlat.vmdk"
ethernet0.present = "TRUE"
ethernet0.connectionType = "nat"
ethernet0.virtualDev = "vmxnet3"
ethernet0.addressType = "static"
ethernet0.address = "00:50:56:3F:00:01"
ethernet1.present = "TRUE"
ethernet1.networkName = "Lab Net"
ethernet1.addressType = "generated"
ethernet1.generatedAddress = "00:0c:29:ab:cd:ef"
floppy0.present = "TRUE"
VMX

"$lamina" vm import "$vm/web server.vmx" >"$work/report" 2>&1 || fail "import: $(cat "$work/report")"
grep -q "imported .* as web-server: 2 vCPU, 256 MiB" "$work/report" || fail "report: $(cat "$work/report")"
grep -q "not carried: firmware = efi" "$work/report" || fail "EFI not reported"
grep -q "not carried: ide1:0: a CD-ROM" "$work/report" || fail "CD-ROM not reported"
grep -q "not carried: floppy0" "$work/report" || fail "floppy not reported"
show=$("$lamina" vm --json show web-server)
python3 - "$show" <<'PY' || fail "definition: $show"
import json, sys
vm = json.loads(sys.argv[1]); d = vm["definition"]
assert d["cpus"] == 2 and d["memory"] == "256M", d
assert len(d["disks"]) == 4, d["disks"]
order = [p.rsplit("-disk", 1)[1] for p in d["disks"]]
assert order == ["1.vhdx", "2.vhdx", "3.vhdx", "4.vhdx"], order
assert d["nets"] == ["switch:vmware-nat,mac=00:50:56:3f:00:01",
                     "switch:vmware-lab-net,mac=00:0c:29:ab:cd:ef"], d["nets"]
PY
for i in 1 2 3 4; do
  qemu-img compare -q -f raw -F vhdx "$work/data.raw" "$vm/web-server-disk$i.vhdx" ||
    fail "disk $i differs from the source"
done
"$lamina" vm import "$vm/web server.vmx" 2>"$work/err" && fail "a second import under the same name"
grep -q "a VM named web-server exists" "$work/err" || fail "second import said: $(cat "$work/err")"

# The imported VM boots (Lamina's default guest kernel) and reads the mark from its first disk.
python3 - "$sock" <<'PY' || fail "could not set a command line"
import json, socket, sys, http.client
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])
c = Unix("laminad"); c.request("GET", "/v1/vms/web-server"); d = json.loads(c.getresponse().read())["definition"]
d["cmdline"] = "console=ttyS0 quiet no_timer_check panic=-1 lamina_run=\"head -c 64 /dev/vda; echo; sleep 600\""
c = Unix("laminad"); c.request("PATCH", "/v1/vms/web-server", json.dumps({"definition": d}))
assert c.getresponse().status == 200
PY
"$lamina" vm start web-server >/dev/null || fail "start"
for _ in $(seq 240); do grep -q "$mark" "$work/state/vms/web-server/console.log" 2>/dev/null && break; sleep 1; done
grep -q "$mark" "$work/state/vms/web-server/console.log" || fail "the guest did not read the disk"
# Its metrics count the guest's reads of that disk.
curl -sS --unix-socket "$sock" http://laminad/metrics >"$work/metrics"
grep -Eq '^lamina_vm_disk_bytes_total\{vm="web-server",disk="0",op="read"\} [1-9]' "$work/metrics" ||
  fail "no disk reads in the metrics: $(grep disk "$work/metrics")"
grep -Eq '^lamina_vm_cpu_seconds_total\{vm="web-server"\} [0-9.]+' "$work/metrics" || fail "no CPU time"
"$lamina" vm stop web-server --force >/dev/null 2>&1 || true
echo PASS
