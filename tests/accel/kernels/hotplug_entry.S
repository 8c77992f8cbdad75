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

/* u32 check_memory_long_mode(u32 pml4, u64 start, u64 end): enters long mode with the page
   tables at `pml4`, writes a word at each 4 KiB page's start and end in [start, end), reads
   them back, leaves long mode and returns the number of mismatches. Long mode because KVM's
   PVM flavour runs neither 32-bit nor PAE paging (a triple fault at the first access), and
   the memory lies above 4 GiB. SDM Vol. 3A 9.8.5 (initializing IA-32e mode), 9.8.5.4
   (leaving it). cdecl; keeps EBX, ESI, EDI, EBP. */
        .globl check_memory_long_mode
check_memory_long_mode:
        pushl %ebx
        pushl %esi
        pushl %edi
        pushl %ebp
        movl 20(%esp), %eax
        movl %eax, %cr3
        movl %cr4, %eax
        orl $0x20, %eax                  /* PAE */
        movl %eax, %cr4
        movl $0xc0000080, %ecx           /* EFER.LME */
        rdmsr
        orl $0x100, %eax
        wrmsr
        movl %cr0, %eax
        orl $0x80000000, %eax            /* PG: IA-32e mode, compatibility mode */
        movl %eax, %cr0
        ljmp $0x18, $4f
        .code64
4:      movl %esp, %esp                  /* the stack pointer's upper half zeroed */
        movq 24(%rsp), %rsi
        movq 32(%rsp), %rdi
        xorl %eax, %eax
        movq %rsi, %rcx
5:      cmpq %rdi, %rcx
        jae 6f
        movl %ecx, %edx
        xorl $0x5a000000, %edx
        movl %edx, (%rcx)
        notl %edx
        movl %edx, 4092(%rcx)
        addq $4096, %rcx
        jmp 5b
6:      movq %rsi, %rcx
7:      cmpq %rdi, %rcx
        jae 9f
        movl %ecx, %edx
        xorl $0x5a000000, %edx
        cmpl %edx, (%rcx)
        je 8f
        incl %eax
8:      notl %edx
        cmpl %edx, 4092(%rcx)
        je 10f
        incl %eax
10:     addq $4096, %rcx
        jmp 7b
9:      pushq $0x08                      /* back to 32-bit code (compatibility mode) */
        leaq 11f(%rip), %rdx
        pushq %rdx
        lretq
        .code32
11:     movl %eax, %ebx
        movl %cr0, %eax                  /* PG off leaves IA-32e mode */
        andl $0x7fffffff, %eax
        movl %eax, %cr0
        movl $0xc0000080, %ecx
        rdmsr
        andl $~0x100, %eax
        wrmsr
        movl %cr4, %eax
        andl $~0x20, %eax
        movl %eax, %cr4
        movl %ebx, %eax
        popl %ebp
        popl %edi
        popl %esi
        popl %ebx
        ret

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
        .quad 0x00af9b000000ffff         /* 0x18: 64-bit code (L = 1) */
gdt_end:
gdt_descriptor:
        .word gdt_end - gdt - 1
        .long gdt

        .bss
        .align 4096
stacks: .skip STACK_SIZE * MAX_CPUS
        .section .note.GNU-stack,"",@progbits
