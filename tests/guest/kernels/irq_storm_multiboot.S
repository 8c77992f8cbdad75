/* Hostile guest: an interrupt storm. The PIT runs at its highest rate (mode 2, divisor 2) on
   IRQ0 through the 8259 (remapped to vector 0x20, LAPIC LINT0 as ExtINT), and every self-IPI
   (vector 0x40, ICR destination shorthand "self") sends the next one from its handler until
   200,000 have arrived, so the vCPU takes interrupts back to back. It waits until 2,000 timer
   ticks have been counted too (then the timer handler masks IRQ0), then prints both counts and exits through the debug-exit port
   with status 0x21; 0x22 when the wait runs out (about 2^30 loop rounds) first, 0x23 on an
   unexpected exception. */
        .code32
        .include "multiboot_header.inc"
        .set LAPIC, 0xfee00000
        .set IPIS, 200000
        .set TICKS, 2000
        .text
        .globl _start
_start: movl $stack_top, %esp
        cli
        movl $ignore, %eax
        call idt_fill
        xorl %ecx, %ecx                  /* exceptions 0-31 end the run */
1:      movl $exception, %eax
        call idt_set
        incl %ecx
        cmpl $32, %ecx
        jb 1b
        movl $0x20, %ecx
        movl $timer, %eax
        call idt_set
        movl $0x40, %ecx
        movl $self_ipi, %eax
        call idt_set
        /* 8259s: ICW1-4, master at 0x20, slave at 0x28; only IRQ0 unmasked. */
        movb $0x11, %al
        outb %al, $0x20
        outb %al, $0xa0
        movb $0x20, %al
        outb %al, $0x21
        movb $0x28, %al
        outb %al, $0xa1
        movb $4, %al
        outb %al, $0x21
        movb $2, %al
        outb %al, $0xa1
        movb $1, %al
        outb %al, $0x21
        outb %al, $0xa1
        movb $0xfe, %al
        outb %al, $0x21
        movb $0xff, %al
        outb %al, $0xa1
        /* LAPIC on (spurious vector 0xff), LINT0 = ExtINT unmasked (virtual wire). */
        movl $0x1ff, LAPIC + 0xf0
        movl $0x700, LAPIC + 0x350
        /* PIT channel 0, lobyte/hibyte, mode 2, divisor 2: the fastest it goes. */
        movb $0x34, %al
        outb %al, $0x43
        movb $2, %al
        outb %al, $0x40
        xorb %al, %al
        outb %al, $0x40
        sti
        movl $0x40 | (1 << 18), LAPIC + 0x300   /* the first self-IPI */
        movl $(1 << 30), %ecx
2:      cmpl $IPIS, ipis
        jb 3f
        cmpl $TICKS, ticks
        jae 4f
3:      pause
        loop 2b
        movb $0x22, %bl
        jmp 5f
4:      movb $0x21, %bl
5:      cli
        movl $ticks_text, %esi
        call puts
        movl ticks, %eax
        call puthex
        movl $ipis_text, %esi
        call puts
        movl ipis, %eax
        call puthex
        movb $'\n', %al
        call putc
        movb %bl, %al
        call exit_with

timer:  incl ticks
        pushl %eax
        cmpl $TICKS, ticks
        jb 7f
        /* Enough: mask IRQ0, so a vCPU slower than the PIT (a loaded host, a sanitizer build)
           is not kept in this handler for good and the main loop gets to finish. */
        movb $0xff, %al
        outb %al, $0x21
7:      movb $0x20, %al
        outb %al, $0x20                  /* 8259 EOI */
        popl %eax
        iret

self_ipi:
        incl ipis
        movl $0, LAPIC + 0xb0            /* LAPIC EOI */
        cmpl $IPIS, ipis
        jae 6f
        movl $0x40 | (1 << 18), LAPIC + 0x300
6:      iret

ignore: iret

exception:
        movl $exception_text, %esi
        call puts
        movb $0x23, %al
        call exit_with

        .include "hostile_common.inc"
        .data
ticks:  .long 0
ipis:   .long 0
ticks_text: .asciz "storm-done ticks="
ipis_text: .asciz " ipis="
exception_text: .asciz "unexpected exception\n"
