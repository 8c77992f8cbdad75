/* A Multiboot v1 test kernel for the accelerators: time, interrupts and a second vCPU.
   It enables its local APIC, arms the APIC timer in periodic mode at 100 Hz (10,000,000 bus
   cycles of Lamina's 1 GHz APIC bus clock, divide by 1), starts the vCPU with APIC ID 1 through
   INIT + SIPI (vector 8: a real-mode trampoline at 0x8000 that sets a byte at 0x7000 and halts),
   and sleeps in STI; HLT until 200 timer interrupts have arrived. COM1 shows "ticks-start" before
   arming the timer, "ticks-done" after the 200th tick, then "ap-started" or "ap-missing"; it
   exits through the debug-exit port with status 5 (lamina exits 11).
   A host that timestamps the two tick lines sees ~2 s between them when guest time is real time.
   SDM Vol. 3A 10.5.4 (APIC timer), 10.6.1 (ICR), 8.4.4.1 (INIT-SIPI); Multiboot 0.6.96 3.2. */
        .code32
        .section .multiboot, "a"
        .align 4
        .long 0x1BADB002
        .long 0x00000000
        .long -(0x1BADB002 + 0x00000000)

        .text
        .globl _start
_start:
        cli
        lgdt gdt_descriptor
        ljmp $0x08, $reload
reload:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movw %ax, %fs
        movw %ax, %gs
        movl $stack_top, %esp

        /* IDT: every vector ignores the event, except 0x30 (the timer). */
        movl $idt, %edi
        xorl %ecx, %ecx
1:      movl $ignore, %eax
        cmpl $0x30, %ecx
        jne 2f
        movl $tick, %eax
2:      movw %ax, (%edi)
        movw $0x08, 2(%edi)
        movw $0x8e00, 4(%edi)            /* present 32-bit interrupt gate, DPL 0 */
        shrl $16, %eax
        movw %ax, 6(%edi)
        addl $8, %edi
        incl %ecx
        cmpl $256, %ecx
        jne 1b
        lidt idt_descriptor

        /* The AP's trampoline goes to 0x8000 (SIPI vector 8). */
        movl $trampoline, %esi
        movl $0x8000, %edi
        movl $(trampoline_end - trampoline), %ecx
        cld
        rep movsb
        movb $0, 0x7000

        movl $0xfee00000, %ebx
        movl $0x1ff, 0xf0(%ebx)          /* SVR: software-enable, spurious vector 0xff */
        movl $msg_start, %esi
        call puts
        movl $0xb, 0x3e0(%ebx)           /* divide configuration: by 1 */
        movl $0x20030, 0x320(%ebx)       /* LVT timer: periodic, vector 0x30 */
        movl $10000000, 0x380(%ebx)      /* initial count: 10 ms */

        /* INIT, then SIPI, to APIC ID 1. */
        movl $0x01000000, 0x310(%ebx)
        movl $0x00004500, 0x300(%ebx)
        movl $0x01000000, 0x310(%ebx)
        movl $0x00004608, 0x300(%ebx)

        sti
3:      hlt
        cmpl $200, ticks
        jb 3b
        cli
        movl $0, 0x380(%ebx)             /* stop the timer */
        movl $msg_done, %esi
        call puts
        movl $msg_ap_missing, %esi
        cmpb $1, 0x7000
        jne 4f
        movl $msg_ap_started, %esi
4:      call puts
        movb $5, %al
        movw $0xf4, %dx
        outb %al, %dx
5:      cli
        hlt
        jmp 5b

tick:   incl ticks
        movl $0, 0xfee000b0              /* EOI */
        iret
ignore: iret

/* Writes the NUL-terminated string at %esi and a newline to COM1. */
puts:   movb (%esi), %al
        testb %al, %al
        jz 6f
        call putc
        incl %esi
        jmp puts
6:      movb $'\n', %al
        jmp putc

/* Writes %al to COM1 once its transmitter holding register is empty (LSR bit 5). */
putc:   movb %al, %cl
        movw $0x3fd, %dx
7:      inb %dx, %al
        testb $0x20, %al
        jz 7b
        movb %cl, %al
        movw $0x3f8, %dx
        outb %al, %dx
        ret

/* Runs in real mode at 0000:8000 on the AP (CS = 0x0800, IP = 0): position independent. */
        .code16
trampoline:
        xorw %ax, %ax
        movw %ax, %ds
        movb $1, 0x7000
8:      cli
        hlt
        jmp 8b
trampoline_end:
        .code32

        .data
        .align 8
gdt:    .quad 0
        .quad 0x00cf9b000000ffff         /* 0x08: flat 32-bit code */
        .quad 0x00cf93000000ffff         /* 0x10: flat data */
gdt_descriptor:
        .word gdt_descriptor - gdt - 1
        .long gdt
idt_descriptor:
        .word 256 * 8 - 1
        .long idt
ticks:  .long 0
msg_start:      .asciz "ticks-start"
msg_done:       .asciz "ticks-done"
msg_ap_started: .asciz "ap-started"
msg_ap_missing: .asciz "ap-missing"

        .bss
        .align 16
idt:    .space 256 * 8
        .space 4096
stack_top:
