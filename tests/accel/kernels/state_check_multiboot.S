/* A Multiboot v1 test kernel that checks its own state while it is moved between accelerators
   (checkpoint/restore, live migration): emu -> kvm -> emu. Like timer_smp_multiboot.S it runs
   in real mode with FS a 4 GiB flat segment ("unreal" mode, which KVM's instruction emulator on
   PVM hosts can run), interrupts through the IVT.
   The LAPIC timer ticks at 100 Hz (vector 0x30); its handler counts each tick twice, in TICKS
   and in TICKS_COPY. The main loop first spins for about half a tick with interrupts on,
   adding 1 to ESI and to its RAM copy SPIN and comparing them at every step (so RAM is written
   all the time: a live migration that missed a dirty page leaves a stale copy), then waits in
   HLT for a tick and, with interrupts off:
     - adds 1 to a register counter (EBX) and to its RAM copy (COUNT), and EBX to a register
       sum (EBP) and its RAM copy (SUM): a register or RAM page lost or stale in a move differs;
     - reads the TSC: it must be above the last reading (LAST_TSC), never equal or below;
     - TICKS must equal TICKS_COPY and be no less than the last seen;
     - FS's hidden 4 GiB limit must survive: the LAPIC's EOI goes through it (a lost limit is a
       #GP, vector 13, which reports a failure; so does #UD);
     - CPUID leaves 0, 1, 7 and 0x80000001 must read as they did at the start (CPUID_SAVED):
       a guest checks CPUID once, so a move to a machine presenting another CPU model would
       leave it using what is no longer there. With "pvm" in the Multiboot command line the
       feature words of leaves 1 and 7 (and leaf 7's subleaf count) are left out: PVM shows a guest the hardware's there,
       whatever CPUID table it was given (ARCHITECTURE.md, KVM).
   COM1: "state-check-start", then "progress TICKS COUNT" (hex) every 50 ticks, and "state-ok
   TICKS COUNT" after TOTAL_TICKS ticks, then debug-exit status 7 (lamina exits 15). A failed
   check prints "STATE-FAIL what" and exits with status 1 (lamina exits 3).
   Run it with 64 MiB of RAM. SDM Vol. 3A 10.5.4 (APIC timer), 17.17 (TSC), 6.8.3 (the STI shadow), 9.9.2 (real mode). */
        .code32
        .include "multiboot_header.inc"
        .include "unreal_mode.inc"

        .set REAL_BASE, 0x1000
        .set TICKS, 0x600
        .set TICKS_COPY, 0x604
        .set COUNT, 0x608
        .set SUM, 0x60c
        .set LAST_TSC, 0x610              /* 8 bytes */
        .set SEEN, 0x618                  /* the last tick count the loop saw */
        .set SPIN, 0x61c                  /* the spin counter's RAM copy */
        .set CPUID_SAVED, 0x640           /* 4 leaves x EAX, EBX, ECX, EDX */
        .set CPUID_NOW, 0x680             /* a leaf that differs: EAX, EBX, ECX, EDX now */
        .set PVM_FLAG, 0x690              /* 1: "pvm" in the command line */
        .set SPIN_TSC, 10000000           /* ~5 ms of TSC at 2 GHz */
        .set LAPIC, 0xfee00000
        .set TOTAL_TICKS, 1200            /* 12 s of guest time */

        .text
        .globl _start
_start:
        cli
        /* Multiboot: EBX is the information structure; flags bit 2, the command line at 16. */
        movb $0, PVM_FLAG
        testb $4, (%ebx)
        jz 2f
        movl 16(%ebx), %esi
3:      cmpb $0, (%esi)
        je 2f
        cmpb $'p', (%esi)
        jne 4f
        cmpb $'v', 1(%esi)
        jne 4f
        cmpb $'m', 2(%esi)
        jne 4f
        movb $1, PVM_FLAG
        jmp 2f
4:      incl %esi
        jmp 3b
2:
        /* One word in each page from 2 MiB to 62 MiB (a 64 MiB VM): no zero page there, so a
           live migration's first round reads all of it while the guest runs on, and a page
           the guest writes meanwhile must come again from the dirty log. */
        movl $0x200000, %edi
1:      movl %edi, (%edi)
        addl $4096, %edi
        cmpl $0x3e00000, %edi
        jb 1b
        lgdt gdt_descriptor
        cld
        movl $real_start, %esi
        movl $REAL_BASE, %edi
        movl $(real_end - real_start), %ecx
        rep movsb
        ENTER_REAL_MODE

        REAL_MODE_START
        xorl %eax, %eax
        movl %eax, TICKS
        movl %eax, TICKS_COPY
        movl %eax, COUNT
        movl %eax, SUM
        movl %eax, LAST_TSC
        movl %eax, LAST_TSC + 4
        movl %eax, SEEN
        movl %eax, SPIN
        /* IVT: the timer, the APIC's spurious vector, and the faults a damaged state raises. */
        movw $(tick - real_start + REAL_BASE), 0x30 * 4
        movw $0, 0x30 * 4 + 2
        movw $(ignore - real_start + REAL_BASE), 0xff * 4
        movw $0, 0xff * 4 + 2
        .irp vector, 6, 13
        movw $(fault - real_start + REAL_BASE), \vector * 4
        movw $0, \vector * 4 + 2
        .endr

        movw $(msg_start - real_start + REAL_BASE), %si
        call puts
        call record_cpuid
        xorl %ebx, %ebx                   /* the register counter */
        xorl %ebp, %ebp                   /* the register sum */
        xorl %esi, %esi                   /* the spin counter */
        addr32 movl $0x1ff, %fs:LAPIC + 0xf0      /* SVR: software-enable, spurious 0xff */
        addr32 movl $0xb, %fs:LAPIC + 0x3e0       /* divide by 1 */
        addr32 movl $0x20030, %fs:LAPIC + 0x320   /* LVT timer: periodic, vector 0x30 */
        addr32 movl $10000000, %fs:LAPIC + 0x380  /* 10 ms at the 1 GHz bus clock */

loop:   sti
        rdtsc
        movl %eax, %edi
spin:   incl %esi
        incl SPIN
        cmpl SPIN, %esi
        jne bad_count
        rdtsc
        subl %edi, %eax
        cmpl $SPIN_TSC, %eax
        jb spin
        hlt
        cli
        call check_cpuid
        incl %ebx
        incl COUNT
        addl %ebx, %ebp
        addl %ebx, SUM
        cmpl COUNT, %ebx
        jne bad_count
        cmpl SUM, %ebp
        jne bad_count
        rdtsc
        cmpl LAST_TSC + 4, %edx
        ja tsc_ok
        jb bad_tsc
        cmpl LAST_TSC, %eax
        jbe bad_tsc
tsc_ok: movl %eax, LAST_TSC
        movl %edx, LAST_TSC + 4
        movl TICKS, %eax
        cmpl TICKS_COPY, %eax
        jne bad_ticks
        cmpl SEEN, %eax
        jb bad_ticks
        /* Every 50th tick (once per tick value), a progress line. */
        cmpl SEEN, %eax
        movl %eax, SEEN
        je loop
        xorl %edx, %edx
        movl $50, %ecx
        divl %ecx
        testl %edx, %edx
        jnz 1f
        pushl %esi                        /* the spin counter; SI points at text */
        movw $(msg_progress - real_start + REAL_BASE), %si
        call report
        popl %esi
1:      cmpl $TOTAL_TICKS, SEEN
        jb loop
        addr32 movl $0, %fs:LAPIC + 0x380         /* stop the timer */
        movw $(msg_ok - real_start + REAL_BASE), %si
        call report
        movb $7, %al
        jmp exit

bad_count:
        movw $(msg_bad_count - real_start + REAL_BASE), %si
        jmp failed
bad_tsc:
        movw $(msg_bad_tsc - real_start + REAL_BASE), %si
        jmp failed
bad_ticks:
        movw $(msg_bad_ticks - real_start + REAL_BASE), %si
        jmp failed
fault:  movw $(msg_fault - real_start + REAL_BASE), %si
failed: call puts
        movb $1, %al
exit:   movw $0xf4, %dx
        outb %al, %dx
2:      cli
        hlt
        jmp 2b

/* CPUID of each leaf in cpuid_leaves into CPUID_SAVED (record_cpuid), or compared with it
   (check_cpuid, which fails naming the leaf). Both keep every register. */
record_cpuid:
        pushal
        movw $0, %bp
        jmp 6f
check_cpuid:
        pushal
        movw $1, %bp
6:      movw $(cpuid_leaves - real_start + REAL_BASE), %si
        movw $CPUID_SAVED, %di
        movw $4, %cx
7:      pushw %cx
        movl (%si), %eax
        xorl %ecx, %ecx
        cpuid
        cmpb $0, PVM_FLAG
        je 11f
        cmpl $1, (%si)
        jne 12f
        xorl %ecx, %ecx                   /* PVM: leaf 1's features are the hardware's */
        xorl %edx, %edx
        jmp 11f
12:     cmpl $7, (%si)
        jne 11f
        xorl %eax, %eax                   /* PVM: leaf 7's too, and (some builds) its */
        xorl %ebx, %ebx                   /* subleaf count */
        xorl %ecx, %ecx
        xorl %edx, %edx
11:     testw %bp, %bp
        jnz 8f
        movl %eax, (%di)
        movl %ebx, 4(%di)
        movl %ecx, 8(%di)
        movl %edx, 12(%di)
        jmp 9f
8:      movl %eax, CPUID_NOW
        movl %ebx, CPUID_NOW + 4
        movl %ecx, CPUID_NOW + 8
        movl %edx, CPUID_NOW + 12
        cmpl (%di), %eax
        jne bad_cpuid
        cmpl 4(%di), %ebx
        jne bad_cpuid
        cmpl 8(%di), %ecx
        jne bad_cpuid
        cmpl 12(%di), %edx
        jne bad_cpuid
9:      popw %cx
        addw $4, %si
        addw $16, %di
        loop 7b
        popal
        ret
/* "STATE-FAIL CPUID changed: leaf L, now A B C D, was A B C D". */
bad_cpuid:
        pushw %di                         /* puthex clobbers EDI */
        movl (%si), %ebx
        movw $(msg_bad_cpuid - real_start + REAL_BASE), %si
        call putstr
        movl %ebx, %eax
        call puthex
        movw $(msg_now - real_start + REAL_BASE), %si
        movw $CPUID_NOW, %bx
        call put4hex
        movw $(msg_was - real_start + REAL_BASE), %si
        popw %bx
        call put4hex
        movb $'\n', %al
        call putc
        movb $1, %al
        jmp exit

/* The string at SI, then the four dwords at BX in hex. */
put4hex:
        call putstr
        movw $4, %cx
10:     pushw %cx
        movl (%bx), %eax
        call puthex
        popw %cx
        addw $4, %bx
        loop 10b
        ret

tick:   incl TICKS
        incl TICKS_COPY
        addr32 movl $0, %fs:LAPIC + 0xb0          /* EOI */
        iret
ignore: iret

/* Prints the string at SI, then " TICKS COUNT" in hex and a newline. */
report: call putstr
        movl TICKS, %eax
        call puthex
        movl COUNT, %eax
        call puthex
        movb $'\n', %al
        jmp putc

/* " " and EAX as eight hex digits. Clobbers EAX, ECX, EDX, EDI. */
puthex: movl %eax, %edi
        movb $' ', %al
        call putc
        movw $8, %cx
3:      roll $4, %edi
        movl %edi, %eax
        andb $0xf, %al
        addb $'0', %al
        cmpb $'9', %al
        jbe 4f
        addb $('a' - '9' - 1), %al
4:      pushw %cx
        call putc
        popw %cx
        loop 3b
        ret

/* The NUL-terminated string at DS:SI, then a newline. */
puts:   call putstr
        movb $'\n', %al
        jmp putc
putstr: movb (%si), %al
        testb %al, %al
        jz 5f
        call putc
        incw %si
        jmp putstr
5:      ret

        .include "com1_putc.inc"

cpuid_leaves:
        .long 0, 1, 7, 0x80000001
        IVT_DESCRIPTOR
msg_start:      .asciz "state-check-start"
msg_progress:   .asciz "progress"
msg_ok:         .asciz "state-ok"
msg_bad_count:  .asciz "STATE-FAIL counter or sum (register and RAM differ)"
msg_bad_tsc:    .asciz "STATE-FAIL the TSC did not move forward"
msg_bad_ticks:  .asciz "STATE-FAIL tick counts differ or went back"
msg_fault:      .asciz "STATE-FAIL an exception (lost segment or register state)"
msg_bad_cpuid:  .asciz "STATE-FAIL CPUID changed: leaf"
msg_now:        .asciz ", now"
msg_was:        .asciz ", was"
real_end:

        UNREAL_GDT
