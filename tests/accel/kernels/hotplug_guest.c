/* The guest side of Lamina's hotplug without ACPI's AML interpreter: a 32-bit flat
   protected-mode kernel (hotplug_entry.S starts it) that polls the hotplug registers the DSDT
   describes and reports on COM1 what it saw, one line per event, for tests and the bench:
     "hotplug-guest ready"                      after its boot-time scan
     "cpu N online apic N"                      printed by a hot-added vCPU the kernel started
                                                with INIT + SIPI (the vCPU's own line)
     "cpu N ejected"                            a removal asked for: the vCPU is parked with an
                                                INIT (as a play-dead loop would) and ejected
     "pci SS added VVVV:DDDD"                   a function in root-bus slot SS (config space)
     "blk SS capacity C data TEXT"              a virtio-blk: its capacity (sectors) and the
                                                first bytes of sector 0 up to a newline
     "net SS mac M"                             a virtio-net: its MAC from the device config
     "pci SS ejected"                           a removal asked for: device reset, decoding
                                                off, EJECT written
     "mem plugged P MiB"                        virtio-mem (slot 31, at boot): the request
     "mem pattern P MiB ok|bad"                 queue plugged/unplugged blocks to follow
     "mem unplugged to P MiB"                   requested_size; the new memory (above 4 GiB,
                                                reached from long mode) then holds a pattern
   Registers (src/hw/hotplug_controller.h): UP +0, DOWN +8 (read clears), EJECT +0x10 (write),
   PRESENT +0x20, each a 64-bit bitmap as two dwords; the PCI block at 0xae00 (unit = slot),
   the CPU block at 0xaf00 (unit = vCPU index = APIC ID, as in the MADT). Virtio 1.2 sections
   3.1.1 (driver initialization), 4.1.4 (PCI capabilities), 2.7 (split virtqueues), 5.2
   (block), 5.1 (network), 5.15 (memory). Intel SDM Vol. 3A 4.5 (4-level paging). */

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define PCI_HOTPLUG 0xae00
#define CPU_HOTPLUG 0xaf00
#define HOTPLUG_UP 0x00
#define HOTPLUG_DOWN 0x08
#define HOTPLUG_EJECT 0x10
#define HOTPLUG_PRESENT 0x20
#define LAPIC 0xfee00000u
#define MAX_CPUS 7
#define VIRTIO_MEM_SLOT 31
/* Where this kernel puts a function's memory BARs: 4 MiB per slot in the 32-bit PCI window,
   above what the host assigns to boot-time devices from 0xc0000000. */
#define BAR_WINDOW 0xe0000000u
#define BAR_WINDOW_PER_SLOT 0x400000u
/* A bound on every wait for the host (iterations), so a broken host shows as a line, not a
   hang: about seconds under KVM's emulator. */
#define WAIT_LIMIT 20000000u

static inline void outb(u16 port, u8 value) { __asm__ volatile("outb %0, %1" ::"a"(value), "Nd"(port)); }
static inline void outl(u16 port, u32 value) { __asm__ volatile("outl %0, %1" ::"a"(value), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u32 mmio_read32(u32 address) { return *(volatile u32*)address; }
static inline u16 mmio_read16(u32 address) { return *(volatile u16*)address; }
static inline u8 mmio_read8(u32 address) { return *(volatile u8*)address; }
static inline void mmio_write32(u32 address, u32 value) { *(volatile u32*)address = value; }
static inline void mmio_write16(u32 address, u16 value) { *(volatile u16*)address = value; }
static inline void mmio_write8(u32 address, u8 value) { *(volatile u8*)address = value; }
static inline void barrier(void) { __asm__ volatile("lock; addl $0, (%%esp)" ::: "memory"); }
static inline void pause(void) { __asm__ volatile("pause" ::: "memory"); }

/* ---- COM1, shared by the BSP and APs under a spinlock ---- */

static volatile u32 console_lock;

static void lock_console(void) {
  u32 taken;
  do {
    taken = 1;
    __asm__ volatile("xchgl %0, %1" : "+r"(taken), "+m"(console_lock)::"memory");
  } while (taken);
}
static void unlock_console(void) { barrier(); console_lock = 0; }

static void putc(char c) {
  while (!(inb(0x3fd) & 0x20)) {}
  outb(0x3f8, (u8)c);
}
static void puts(const char* s) { while (*s) putc(*s++); }
static void put_hex(u32 value, int digits) {
  for (int i = digits - 1; i >= 0; --i) putc("0123456789abcdef"[(value >> (i * 4)) & 15]);
}
static void put_dec(u32 value) {
  char digits[12];
  int n = 0;
  do { digits[n++] = (char)('0' + value % 10); value /= 10; } while (value);
  while (n) putc(digits[--n]);
}

/* ---- hotplug registers ---- */

static u64 read_bitmap(u16 block, u16 reg) {
  const u32 low = inl(block + reg);
  return ((u64)inl(block + reg + 4) << 32) | low;
}
static void eject(u16 block, unsigned unit) {
  if (unit < 32) outl(block + HOTPLUG_EJECT, 1u << unit);
  else outl(block + HOTPLUG_EJECT + 4, 1u << (unit - 32));
}

/* ---- vCPUs ---- */

static volatile u32 cpu_online[MAX_CPUS + 1];

void ap_main(u32 id) {
  lock_console();
  puts("cpu "); put_dec(id); puts(" online apic "); put_dec(mmio_read32(LAPIC + 0x20) >> 24); putc('\n');
  unlock_console();
  cpu_online[id] = 1;
  /* Parked until the BSP sends INIT (a removal) or the machine stops. */
  for (;;) __asm__ volatile("cli; hlt");
}

static void send_ipi(u32 apic_id, u32 command) {
  mmio_write32(LAPIC + 0x310, apic_id << 24);
  mmio_write32(LAPIC + 0x300, command);
  for (u32 i = 0; i < WAIT_LIMIT && (mmio_read32(LAPIC + 0x300) & 0x1000); ++i) pause();
}

static void start_cpu(unsigned id) {
  if (id > MAX_CPUS) return;
  cpu_online[id] = 0;
  send_ipi(id, 0x4500);  /* INIT */
  send_ipi(id, 0x4608);  /* SIPI, vector 8: the trampoline at 0x8000 */
  for (u32 i = 0; i < WAIT_LIMIT && !cpu_online[id]; ++i) pause();
  if (!cpu_online[id]) {
    lock_console(); puts("cpu "); put_dec(id); puts(" did not start\n"); unlock_console();
  }
}

static void remove_cpu(unsigned id) {
  send_ipi(id, 0x4500);  /* INIT: back to wait-for-SIPI */
  cpu_online[id] = 0;
  /* The line goes before the eject, which lets the host's API answer. */
  lock_console(); puts("cpu "); put_dec(id); puts(" ejected\n"); unlock_console();
  eject(CPU_HOTPLUG, id);
}

/* ---- PCI configuration space (mechanism #1) and BARs ---- */

static u32 pci_read32(unsigned slot, unsigned offset) {
  outl(0xcf8, 0x80000000u | (slot << 11) | (offset & 0xfc));
  return inl(0xcfc);
}
static void pci_write32(unsigned slot, unsigned offset, u32 value) {
  outl(0xcf8, 0x80000000u | (slot << 11) | (offset & 0xfc));
  outl(0xcfc, value);
}
static u8 pci_read8(unsigned slot, unsigned offset) {
  return (u8)(pci_read32(slot, offset) >> ((offset & 3) * 8));
}

/* bar_address[slot][bar]: where this kernel put each memory BAR (0: none). */
static u32 bar_address[32][6];

/* Sizes each memory BAR and puts it in the slot's part of BAR_WINDOW, naturally aligned;
   then turns on memory decoding and bus mastering. I/O BARs stay off (virtio has none). */
static void assign_bars(unsigned slot) {
  u32 next = BAR_WINDOW + slot * BAR_WINDOW_PER_SLOT;
  const u32 end = next + BAR_WINDOW_PER_SLOT;
  pci_write32(slot, 0x04, 0);
  for (unsigned bar = 0; bar < 6; ++bar) {
    bar_address[slot][bar] = 0;
    const unsigned offset = 0x10 + bar * 4;
    const u32 original = pci_read32(slot, offset);
    pci_write32(slot, offset, 0xffffffffu);
    const u32 probe = pci_read32(slot, offset);
    if (original & 1 || probe == 0) { pci_write32(slot, offset, original); continue; }
    const int is64 = ((original >> 1) & 3) == 2;
    const u32 size = ~(probe & ~0xfu) + 1;
    next = (next + size - 1) & ~(size - 1);
    if (size != 0 && next + size <= end) {
      pci_write32(slot, offset, next);
      bar_address[slot][bar] = next;
      next += size;
    } else {
      pci_write32(slot, offset, 0);
    }
    if (is64) { pci_write32(slot, offset + 4, 0); ++bar; }
  }
  pci_write32(slot, 0x04, 0x6);
}

/* ---- virtio-pci modern transport, one queue, polled ---- */

#define QUEUE_SIZE 8
struct virtq_desc { u64 addr; u32 len; u16 flags; u16 next; };
struct queue_memory {
  struct virtq_desc desc[QUEUE_SIZE];                               /* 16-byte aligned */
  u16 avail_flags, avail_idx, avail_ring[QUEUE_SIZE], used_event;
  u8 pad[4096 - 16 * QUEUE_SIZE - 6 - 2 * QUEUE_SIZE];
  u16 used_flags, used_idx;                                         /* 4-byte aligned */
  struct { u32 id, len; } used_ring[QUEUE_SIZE];
  u16 avail_event;
} __attribute__((aligned(4096)));

struct virtio_function {
  unsigned slot;
  u32 common, device, notify;  /* addresses of the structures */
  u16 used_seen;
  struct queue_memory* queue;
};

static struct queue_memory queues[32];

static u32 capability_address(unsigned slot, unsigned cap) {
  const unsigned bar = pci_read8(slot, cap + 4);
  if (bar >= 6 || bar_address[slot][bar] == 0) return 0;
  return bar_address[slot][bar] + pci_read32(slot, cap + 8);
}

/* 3.1.1: reset, ACKNOWLEDGE|DRIVER, VERSION_1 only, FEATURES_OK, queue 0, DRIVER_OK.
   Returns 0 on success. */
static int virtio_start(unsigned slot, struct virtio_function* f) {
  f->slot = slot;
  f->common = f->device = f->notify = 0;
  u32 notify_multiplier = 0;
  assign_bars(slot);
  if (!(pci_read32(slot, 0x04) & (0x10u << 16))) return 1;
  for (unsigned cap = pci_read8(slot, 0x34) & 0xfc, hops = 0; cap && hops < 48; ++hops) {
    if (pci_read8(slot, cap) == 0x09) {
      switch (pci_read8(slot, cap + 3)) {
        case 1: f->common = capability_address(slot, cap); break;
        case 2:
          f->notify = capability_address(slot, cap);
          notify_multiplier = pci_read32(slot, cap + 16);
          break;
        case 4: f->device = capability_address(slot, cap); break;
      }
    }
    cap = pci_read8(slot, cap + 1) & 0xfc;
  }
  if (!f->common || !f->device || !f->notify) return 2;
  const u32 c = f->common;
  mmio_write8(c + 0x14, 0);
  for (u32 i = 0; i < WAIT_LIMIT && mmio_read8(c + 0x14) != 0; ++i) pause();
  mmio_write8(c + 0x14, 1);
  mmio_write8(c + 0x14, 3);
  mmio_write32(c + 0x00, 1);
  if (!(mmio_read32(c + 0x04) & 1)) return 3;  /* no VIRTIO_F_VERSION_1 */
  mmio_write32(c + 0x08, 1);
  mmio_write32(c + 0x0c, 1);
  mmio_write32(c + 0x08, 0);
  mmio_write32(c + 0x0c, 0);
  mmio_write8(c + 0x14, 3 | 8);
  if (!(mmio_read8(c + 0x14) & 8)) return 4;
  mmio_write16(c + 0x16, 0);
  const u16 size = mmio_read16(c + 0x18);
  if (size < QUEUE_SIZE) return 5;
  struct queue_memory* q = &queues[slot];
  for (unsigned i = 0; i < sizeof *q; ++i) ((volatile u8*)q)[i] = 0;
  mmio_write16(c + 0x18, QUEUE_SIZE);
  mmio_write16(c + 0x1a, 0xffff);
  mmio_write32(c + 0x20, (u32)q->desc); mmio_write32(c + 0x24, 0);
  mmio_write32(c + 0x28, (u32)&q->avail_flags); mmio_write32(c + 0x2c, 0);
  mmio_write32(c + 0x30, (u32)&q->used_flags); mmio_write32(c + 0x34, 0);
  f->notify += mmio_read16(c + 0x1e) * notify_multiplier;
  mmio_write16(c + 0x1c, 1);
  mmio_write8(c + 0x14, 3 | 8 | 4);
  f->queue = q;
  f->used_seen = 0;
  return 0;
}

/* Puts a chain of `count` descriptors on queue 0, notifies and waits for the device to use
   it. Returns 0 when it came back. */
static int virtio_transfer(struct virtio_function* f, const struct virtq_desc* chain, unsigned count) {
  struct queue_memory* q = f->queue;
  for (unsigned i = 0; i < count; ++i) {
    q->desc[i] = chain[i];
    if (i + 1 < count) { q->desc[i].flags |= 1; q->desc[i].next = (u16)(i + 1); }
  }
  q->avail_ring[q->avail_idx % QUEUE_SIZE] = 0;
  barrier();
  q->avail_idx++;
  barrier();
  mmio_write16(f->notify, 0);
  for (u32 i = 0; i < WAIT_LIMIT; ++i) {
    if (*(volatile u16*)&q->used_idx != f->used_seen) {
      f->used_seen++;
      barrier();
      return 0;
    }
    pause();
  }
  return 1;
}

static void virtio_stop(unsigned slot, u32 common) {
  if (common) mmio_write8(common + 0x14, 0);
  pci_write32(slot, 0x04, 0);
}

/* ---- devices ---- */

static u32 common_of_slot[32];

static void report_failure(const char* what, unsigned slot, int code) {
  puts(what); putc(' '); put_hex(slot, 2); puts(" failed "); put_dec((u32)code); putc('\n');
}

static struct { u32 type, reserved; u64 sector; } blk_header;
static u8 blk_data[512];
static volatile u8 blk_status;

static void block_added(unsigned slot) {
  struct virtio_function f;
  const int started = virtio_start(slot, &f);
  common_of_slot[slot] = f.common;
  if (started) { report_failure("blk", slot, started); return; }
  const u32 capacity = mmio_read32(f.device);
  blk_header.type = 0;  /* VIRTIO_BLK_T_IN */
  blk_header.sector = 0;
  blk_status = 0xff;
  const struct virtq_desc chain[3] = {
      {(u32)&blk_header, sizeof blk_header, 0, 0},
      {(u32)blk_data, sizeof blk_data, 2, 0},
      {(u32)&blk_status, 1, 2, 0}};
  if (virtio_transfer(&f, chain, 3) || blk_status != 0) {
    report_failure("blk read", slot, blk_status);
    return;
  }
  puts("blk "); put_hex(slot, 2); puts(" capacity "); put_dec(capacity); puts(" data ");
  for (unsigned i = 0; i < 64 && blk_data[i] >= 0x20 && blk_data[i] < 0x7f; ++i) putc((char)blk_data[i]);
  putc('\n');
}

static void net_added(unsigned slot) {
  struct virtio_function f;
  const int started = virtio_start(slot, &f);
  common_of_slot[slot] = f.common;
  if (started) { report_failure("net", slot, started); return; }
  puts("net "); put_hex(slot, 2); puts(" mac ");
  for (unsigned i = 0; i < 6; ++i) {
    if (i) putc(':');
    put_hex(mmio_read8(f.device + i), 2);
  }
  putc('\n');
}

static void pci_added(unsigned slot) {
  const u32 id = pci_read32(slot, 0);
  lock_console();
  puts("pci "); put_hex(slot, 2); puts(" added "); put_hex(id & 0xffff, 4); putc(':');
  put_hex(id >> 16, 4); putc('\n');
  if ((id & 0xffff) == 0x1af4 && (id >> 16) == 0x1042) block_added(slot);
  if ((id & 0xffff) == 0x1af4 && (id >> 16) == 0x1041) net_added(slot);
  unlock_console();
}

static void pci_removed(unsigned slot) {
  virtio_stop(slot, common_of_slot[slot]);
  common_of_slot[slot] = 0;
  /* The line goes before the eject, which lets the host's API answer. */
  lock_console(); puts("pci "); put_hex(slot, 2); puts(" ejected\n"); unlock_console();
  eject(PCI_HOTPLUG, slot);
}

/* ---- virtio-mem: plugged memory above 4 GiB, reached from long mode ---- */

/* Long-mode page tables (hotplug_entry.S's check_memory_long_mode uses them): 0-4 GiB
   identity mapped with 2 MiB pages (the top GiB uncached: MMIO), and the first GiB of the
   virtio-mem region at its own address. */
static u64 pml4[512] __attribute__((aligned(4096)));
static u64 pdpt[512] __attribute__((aligned(4096)));
static u64 page_directories[5][512] __attribute__((aligned(4096)));

u32 check_memory_long_mode(u32 pml4_address, u64 start, u64 end);

static void map_region(u64 region) {
  pml4[0] = (u32)pdpt | 3;
  for (unsigned d = 0; d < 5; ++d) {
    const u64 base = d < 4 ? (u64)d << 30 : region;
    for (unsigned i = 0; i < 512; ++i) {
      page_directories[d][i] = (base + ((u64)i << 21)) | 0x83 | (d == 3 ? 0x18 : 0);
    }
    pdpt[d < 4 ? d : (unsigned)(region >> 30) & 511] = (u32)page_directories[d] | 3;
  }
}

static struct virtio_function mem;
static int mem_ready;
static u64 mem_region;
static u32 mem_window_size, mem_plugged;  /* bytes, from the region's start */
static u32 mem_failed_request = 0xffffffffu;  /* not retried until the host asks for another */
static struct { u16 type, padding[3]; u64 address; u16 blocks, padding2[3]; } mem_request;
static volatile struct { u16 type, padding[3]; u16 state; } mem_response;

static void mem_start(void) {
  const u32 id = pci_read32(VIRTIO_MEM_SLOT, 0);
  if (id != ((0x1040u + 24) << 16 | 0x1af4)) return;
  const int started = virtio_start(VIRTIO_MEM_SLOT, &mem);
  if (started) { report_failure("mem", VIRTIO_MEM_SLOT, started); return; }
  mem_region = ((u64)mmio_read32(mem.device + 20) << 32) | mmio_read32(mem.device + 16);
  const u64 region_size = ((u64)mmio_read32(mem.device + 28) << 32) | mmio_read32(mem.device + 24);
  /* One GiB at most, and a region below 512 GiB (one PML4 entry): plenty for the tests. */
  if (mem_region < 0x100000000ull || mem_region >= (512ull << 30) || (mem_region & 0x3fffffff)) {
    report_failure("mem region", VIRTIO_MEM_SLOT, 0);
    return;
  }
  mem_window_size = region_size > 0x40000000u ? 0x40000000u : (u32)region_size;
  map_region(mem_region);
  mem_ready = 1;
}

/* One request for `blocks` 2 MiB blocks at `offset`; returns the response type (0 = ACK). */
static int mem_send(u16 type, u32 offset, u32 blocks) {
  mem_request.type = type;
  mem_request.address = mem_region + offset;
  mem_request.blocks = (u16)blocks;
  mem_response.type = 0xffff;
  const struct virtq_desc chain[2] = {{(u32)&mem_request, sizeof mem_request, 0, 0},
                                      {(u32)&mem_response, sizeof mem_response, 2, 0}};
  if (virtio_transfer(&mem, chain, 2)) return -1;
  return mem_response.type;
}

static void mem_follow_request(void) {
  if (!mem_ready) return;
  const u64 requested64 =
      ((u64)mmio_read32(mem.device + 52) << 32) | mmio_read32(mem.device + 48);
  const u32 requested = requested64 > mem_window_size ? mem_window_size : (u32)requested64;
  if (requested == mem_plugged || requested == mem_failed_request) return;
  lock_console();
  if (requested > mem_plugged) {
    const int answer = mem_send(0, mem_plugged, (requested - mem_plugged) >> 21);
    if (answer != 0) {
      report_failure("mem plug", VIRTIO_MEM_SLOT, answer);
    } else {
      const u32 first = mem_plugged;
      mem_plugged = requested;
      puts("mem plugged "); put_dec(mem_plugged >> 20); puts(" MiB\n");
      const u32 bad = check_memory_long_mode((u32)pml4, mem_region + first, mem_region + requested);
      puts("mem pattern "); put_dec(mem_plugged >> 20); puts(" MiB ");
      puts(bad ? "bad\n" : "ok\n");
    }
  } else {
    const int answer = mem_send(1, requested, (mem_plugged - requested) >> 21);
    if (answer != 0) {
      report_failure("mem unplug", VIRTIO_MEM_SLOT, answer);
    } else {
      mem_plugged = requested;
      puts("mem unplugged to "); put_dec(mem_plugged >> 20); puts(" MiB\n");
    }
  }
  unlock_console();
  mem_failed_request = mem_plugged == requested ? 0xffffffffu : requested;
}

/* ---- the loop ---- */

void hotplug_main(void) {
  mmio_write32(LAPIC + 0xf0, 0x1ff);  /* software-enable the BSP's local APIC (SVR) */
  /* Whatever was announced before the kernel looked is boot-time state, not an event. */
  (void)read_bitmap(PCI_HOTPLUG, HOTPLUG_UP);
  (void)read_bitmap(PCI_HOTPLUG, HOTPLUG_DOWN);
  (void)read_bitmap(CPU_HOTPLUG, HOTPLUG_UP);
  (void)read_bitmap(CPU_HOTPLUG, HOTPLUG_DOWN);
  /* A block the machine lacks reads all ones (a VM without vCPU headroom has no CPU block;
     PRESENT always has vCPU 0 and never all 64). */
  const int cpu_hotplug = inl(CPU_HOTPLUG + HOTPLUG_PRESENT) != 0xffffffffu;
  const int pci_hotplug = inl(PCI_HOTPLUG + HOTPLUG_PRESENT) != 0xffffffffu;
  mem_start();
  lock_console();
  puts("hotplug-guest ready cpus ");
  put_hex(cpu_hotplug ? (u32)read_bitmap(CPU_HOTPLUG, HOTPLUG_PRESENT) : 1, 2);
  puts(" mem "); puts(mem_ready ? "yes\n" : "no\n");
  unlock_console();
  for (;;) {
    const u64 cpus_up = cpu_hotplug ? read_bitmap(CPU_HOTPLUG, HOTPLUG_UP) : 0;
    const u64 cpus_down = cpu_hotplug ? read_bitmap(CPU_HOTPLUG, HOTPLUG_DOWN) : 0;
    for (unsigned id = 1; id < 64; ++id) {
      if (cpus_up >> id & 1) start_cpu(id);
      if (cpus_down >> id & 1) remove_cpu(id);
    }
    const u32 slots_up = pci_hotplug ? (u32)read_bitmap(PCI_HOTPLUG, HOTPLUG_UP) : 0;
    const u32 slots_down = pci_hotplug ? (u32)read_bitmap(PCI_HOTPLUG, HOTPLUG_DOWN) : 0;
    for (unsigned slot = 1; slot < 32; ++slot) {
      if (slots_up >> slot & 1) pci_added(slot);
      if (slots_down >> slot & 1) pci_removed(slot);
    }
    mem_follow_request();
    for (unsigned i = 0; i < 64; ++i) pause();
  }
}
