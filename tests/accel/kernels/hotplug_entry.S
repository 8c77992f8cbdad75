/* Entry and AP trampoline of the hotplug test kernel (hotplug_guest.c holds the rest).
   The BSP enters from the Multiboot loader in 32-bit protected mode, loads a flat GDT and a
   stack and calls hotplug_main(). An AP the kernel starts with INIT + SIPI (vector 8) runs
   the trampoline copied to 0x8000 in real mode, enters flat 32-bit protected mode with the
   same GDT, takes a stack by its local APIC ID and calls ap_main(id). No interrupts are ever
   enabled: KVM's PVM flavour (this project's build host) emulates protected-mode guests and
   its emulator lacks protected-mode IRET, so the kernel polls.
   SDM Vol. 3A 8.4.4.1 (INIT-SIPI), 9.9.1 (switching to protected mode); Multiboot 0.6.96. */
        .code32
        .include "multiboot_header.inc"

        .set TRAMPOLINE, 0x8000          /* SIPI vector 8 */
        .set STACK_SIZE, 4096
        .set MAX_CPUS, 8

        .text
        .globl _start
_start:
        cli
        lgdt gdt_descriptor
        ljmp $0x08, $1f
1:      movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movw %ax, %fs
        movw %ax, %gs
        movl $(stacks + STACK_SIZE), %esp
        cld
        movl $trampoline, %esi           /* the AP trampoline to 0x8000 */
        movl $TRAMPOLINE, %edi
        movl $(trampoline_end - trampoline), %ecx
        rep movsb
        call hotplug_main
2:      cli
        hlt
        jmp 2b

/* An AP in flat protected mode: its stack is stacks[APIC ID + 1] (IDs past MAX_CPUS - 1 stop). */
ap_entry32:
        movw $0x10, %ax
        movw %ax, %ds
        movw %ax, %es
        movw %ax, %ss
        movw %ax, %fs
        movw %ax, %gs
        movl 0xfee00020, %eax            /* local APIC ID register, ID in bits 31:24 */
        shrl $24, %eax
        cmpl $(MAX_CPUS - 1), %eax
        jae 3f
        movl %eax, %ecx
        incl %ecx
        shll $12, %ecx
        leal (stacks + STACK_SIZE)(%ecx), %esp
        cld
        pushl %eax
        call ap_main
3:      cli
        hlt
        jmp 3b

/* Runs at 0000:8000 (CS = 0x0800, IP = 0): position independent. */
        .code16
trampoline:
        cli
        lgdtl %cs:(trampoline_gdt - trampoline)
        movl %cr0, %eax
        orl $1, %eax
        movl %eax, %cr0
        ljmpl $0x08, $ap_entry32
trampoline_gdt:
        .word gdt_end - gdt - 1
        .long gdt
trampoline_end:
        .code32

        .data
        .align 8
gdt:    .quad 0
        .quad 0x00cf9b000000ffff         /* 0x08: flat 32-bit code */
        .quad 0x00cf93000000ffff         /* 0x10: flat 32-bit data */
gdt_end:
gdt_descriptor:
        .word gdt_end - gdt - 1
        .long gdt

        .bss
        .align 4096
stacks: .skip STACK_SIZE * MAX_CPUS
        .section .note.GNU-stack,"",@progbits
