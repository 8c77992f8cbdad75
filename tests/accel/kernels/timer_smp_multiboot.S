/* A Multiboot v1 test kernel for the accelerators: time, interrupts and a second vCPU.
   It copies its main part to 0x1000 and runs it in real mode with FS kept as a 4 GiB flat
   segment ("unreal" mode), so the local APIC page is reachable and interrupts go through the
   IVT: the real-mode forms are ones every KVM flavour can run, including KVM's instruction
   emulator (it lacks protected-mode IRET). There it enables its local APIC, arms the APIC timer
   in periodic mode at 100 Hz (10,000,000 cycles of Lamina's 1 GHz APIC bus clock, divide by 1),
   starts the vCPU with APIC ID 1 through INIT + SIPI (vector 8: a trampoline at 0x8000 that sets
   the byte at 0x7000 and halts), and sleeps in STI; HLT until 200 timer interrupts have arrived.
   COM1 shows "ticks-start" before arming the timer, "ticks-done" after the 200th tick, then
   "ap-started" or "ap-missing"; it exits through the debug-exit port with status 5 (lamina
   exits 11). A host that timestamps the two tick lines sees ~2 s between them when guest time
   is real time.
   SDM Vol. 3A 10.5.4 (APIC timer), 10.6.1 (ICR), 8.4.4.1 (INIT-SIPI), 9.9.2 (back to real
   mode); Multiboot 0.6.96 section 3.2. */
        .code32
        .include "multiboot_header.inc"
        .include "unreal_mode.inc"

        .set REAL_BASE, 0x1000           /* where the real-mode part runs (CS = 0) */
        .set TICKS, 0x600                /* 16-bit tick counter */
        .set AP_FLAG, 0x7000
        .set LAPIC, 0xfee00000
        /* Code below real_start runs at REAL_BASE: its addresses are (label - real_start + REAL_BASE). */

        .text
        .globl _start
_start:
        cli
        lgdt gdt_descriptor
        cld
        movl $real_start, %esi           /* the real-mode part to 0x1000 */
        movl $REAL_BASE, %edi
        movl $(real_end - real_start), %ecx
        rep movsb
        movl $trampoline, %esi           /* the AP's trampoline to 0x8000 (SIPI vector 8) */
        movl $0x8000, %edi
        movl $(trampoline_end - trampoline), %ecx
        rep movsb
        ENTER_REAL_MODE

        REAL_MODE_START
        movw $0, TICKS
        movb $0, AP_FLAG
        /* IVT: vector 0x30 (the timer) and 0xff (APIC spurious). */
        movw $(tick - real_start + REAL_BASE), 0x30 * 4
        movw $0, 0x30 * 4 + 2
        movw $(ignore - real_start + REAL_BASE), 0xff * 4
        movw $0, 0xff * 4 + 2

        addr32 movl $0x1ff, %fs:LAPIC + 0xf0      /* SVR: software-enable, spurious 0xff */
        movw $(msg_start - real_start + REAL_BASE), %si
        call puts
        addr32 movl $0xb, %fs:LAPIC + 0x3e0       /* divide configuration: by 1 */
        addr32 movl $0x20030, %fs:LAPIC + 0x320   /* LVT timer: periodic, vector 0x30 */
        addr32 movl $10000000, %fs:LAPIC + 0x380  /* initial count: 10 ms */
        /* INIT, then SIPI, to APIC ID 1. */
        addr32 movl $0x01000000, %fs:LAPIC + 0x310
        addr32 movl $0x00004500, %fs:LAPIC + 0x300
        addr32 movl $0x01000000, %fs:LAPIC + 0x310
        addr32 movl $0x00004608, %fs:LAPIC + 0x300

        sti
1:      hlt
        cmpw $200, TICKS
        jb 1b
        cli
        addr32 movl $0, %fs:LAPIC + 0x380         /* stop the timer */
        movw $(msg_done - real_start + REAL_BASE), %si
        call puts
        movw $(msg_ap_missing - real_start + REAL_BASE), %si
        cmpb $1, AP_FLAG
        jne 2f
        movw $(msg_ap_started - real_start + REAL_BASE), %si
2:      call puts
        movb $5, %al
        movw $0xf4, %dx
        outb %al, %dx
3:      cli
        hlt
        jmp 3b

tick:   incw TICKS
        addr32 movl $0, %fs:LAPIC + 0xb0          /* EOI */
        iret
ignore: iret

/* Writes the NUL-terminated string at DS:SI and a newline to COM1. */
puts:   movb (%si), %al
        testb %al, %al
        jz 4f
        call putc
        incw %si
        jmp puts
4:      movb $'\n', %al
        jmp putc

        .include "com1_putc.inc"

        IVT_DESCRIPTOR
msg_start:      .asciz "ticks-start"
msg_done:       .asciz "ticks-done"
msg_ap_started: .asciz "ap-started"
msg_ap_missing: .asciz "ap-missing"
real_end:

/* Runs in real mode at 0000:8000 on the AP (CS = 0x0800, IP = 0): position independent. */
trampoline:
        xorw %ax, %ax
        movw %ax, %ds
        movb $1, AP_FLAG
6:      cli
        hlt
        jmp 6b
trampoline_end:

        UNREAL_GDT
