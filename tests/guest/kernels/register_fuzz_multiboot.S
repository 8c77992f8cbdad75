/* Hostile guest: random values into every device register it can reach, with interrupts off:
   16 rounds over the legacy port range 0x000-0x3ff (byte, word and dword writes), then the
   LAPIC page (0xfee00000), the IOAPIC (every register through IOREGSEL/IOWIN, and its window
   directly), the HPET block (0xfed00000) and the ACPI hotplug blocks (PCI hotplug 0xae00, CPU
   hotplug 0xaf00, GPE0 0xafe0: random writes of every width, ejects of slots and CPUs never
   offered included, each followed by a read), then it exits through the debug-exit port with
   status 0x21. The seed comes from the TSC and is printed first ("seed=...") so a failure can
   be replayed by hard-coding it.
   Left out, because a guest may legitimately use them to end or reset its VM, which would
   end the test early: the debug-exit port 0xf4 itself, the reset ports 0x64 (i8042 command),
   0x92 and 0xcf9, and PCI configuration (0xcf8-0xcff; the virtio-pci transport has its own
   robustness test). Delivery-mode bits of the LAPIC's LVT and ICR and of IOAPIC redirection
   entries are cleared (fixed delivery), so a random INIT or SIPI cannot park the only vCPU. */
        .code32
        .include "multiboot_header.inc"
        .set LAPIC, 0xfee00000
        .set IOAPIC, 0xfec00000
        .set HPET, 0xfed00000
        .set ROUNDS, 16
        .text
        .globl _start
_start: movl $stack_top, %esp
        cli
        movl $ignore, %eax               /* an NMI a random write causes returns */
        call idt_fill
        rdtsc
        orl $1, %eax                     /* xorshift needs a non-zero state */
        movl %eax, random_state
        movl $seed_text, %esi
        call puts
        movl random_state, %eax
        call puthex
        movb $'\n', %al
        call putc

        movl $ROUNDS, %ebp
1:      xorl %ebx, %ebx                  /* port */
2:      call skipped_port
        jc 3f
        call random
        movl %ebx, %edx
        testb $1, %ah                    /* the width varies with the value */
        jz 4f
        outb %al, %dx
        jmp 3f
4:      testb $2, %ah
        jz 5f
        outw %ax, %dx
        jmp 3f
5:      outl %eax, %dx
3:      incl %ebx
        cmpl $0x400, %ebx
        jb 2b
        decl %ebp
        jnz 1b

        /* LAPIC: every 16-byte register, delivery mode bits (8-10) cleared. */
        xorl %ebx, %ebx
6:      call random
        andl $0xfffff8ff, %eax
        movl %eax, LAPIC(%ebx)
        addl $0x10, %ebx
        cmpl $0x400, %ebx
        jb 6b

        /* IOAPIC: each indirect register (0x00-0x3f), redirection entries with fixed
           delivery, then the window's other offsets directly. */
        xorl %ebx, %ebx
7:      movl %ebx, IOAPIC
        call random
        andl $0xfffff8ff, %eax
        movl %eax, IOAPIC + 0x10
        incl %ebx
        cmpl $0x40, %ebx
        jb 7b
        xorl %ebx, %ebx
8:      call random
        andl $0x3f, %eax                 /* keep IOREGSEL on a real register */
        movl %eax, IOAPIC(%ebx)
        addl $4, %ebx
        cmpl $0x100, %ebx
        jb 8b

        /* HPET: every dword of its 1 KiB block. */
        xorl %ebx, %ebx
9:      call random
        movl %eax, HPET(%ebx)
        addl $4, %ebx
        cmpl $0x400, %ebx
        jb 9b

        /* ACPI hotplug registers: ROUNDS passes over each block. */
        movl $ROUNDS, %ebp
10:     movl $hotplug_blocks, %esi
11:     movl (%esi), %ebx                /* first port */
        movl 4(%esi), %edi               /* end port */
        testl %ebx, %ebx
        jz 14f
12:     call random
        movl %ebx, %edx
        testb $1, %ah
        jz 13f
        outb %al, %dx
        jmp 15f
13:     outl %eax, %dx
15:     inl %dx, %eax
        incl %ebx
        cmpl %edi, %ebx
        jb 12b
        addl $8, %esi
        jmp 11b
14:     decl %ebp
        jnz 10b

        movb $0x21, %al
        call exit_with

        .data
/* [first, end) port ranges of the ACPI hotplug blocks, ended by a zero. */
hotplug_blocks:
        .long 0xae00, 0xae28, 0xaf00, 0xaf28, 0xafe0, 0xafe4, 0, 0
        .text

/* skipped_port: carry set when port %ebx (or the word/dword write starting there) may touch
   a port left out above. */
skipped_port:
        cmpl $0x61, %ebx                 /* 0x61-0x64 (a dword write at 0x61 reaches 0x64) */
        jb 10f
        cmpl $0x64, %ebx
        jbe 11f
10:     cmpl $0x8f, %ebx                 /* 0x8f-0x92 */
        jb 12f
        cmpl $0x92, %ebx
        jbe 11f
12:     cmpl $0xf1, %ebx                 /* 0xf1-0xf7 (the debug-exit port is 4 wide) */
        jb 13f
        cmpl $0xf7, %ebx
        jbe 11f
13:     cmpl $0x3fd, %ebx                /* a dword at 0x3fd..0x3ff would reach 0x400+ */
        jae 11f
        clc
        ret
11:     stc
        ret

ignore: iret

        .include "hostile_common.inc"
        .data
seed_text: .asciz "seed="
