/* Conformance test kernel: the EFLAGS image a fault pushes has RF (bit 16) set (SDM vol. 3B
   17.3.1.1), so IRET back to the instruction does not re-trigger its breakpoint; traps and
   software interrupts push RF clear, and RF is clear again once an instruction completed.
   Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .text
        .globl _start
_start:
        call harness_init
        try ud2                           /* #UD */
        expect fault_vector, $6, 1
        movl fault_eflags, %eax
        andl $0x10000, %eax
        expect %eax, $0x10000, 2
        movl $0x12345678, %ecx            /* #GP(0): no such MSR */
        try rdmsr
        expect fault_vector, $13, 3
        expect fault_error, $0, 4
        movl fault_eflags, %eax
        andl $0x10000, %eax
        expect %eax, $0x10000, 5
        xorl %edx, %edx                   /* #DE */
        xorl %ecx, %ecx
        movl $1, %eax
        try divl %ecx
        expect fault_vector, $0, 6
        movl fault_eflags, %eax
        andl $0x10000, %eax
        expect %eax, $0x10000, 7
        try int3                          /* a trap: RF clear */
        expect fault_vector, $3, 8
        movl fault_eflags, %eax
        andl $0x10000, %eax
        expect %eax, $0, 9
        pushfl                            /* and the running EFLAGS has no RF */
        popl %eax
        andl $0x10000, %eax
        expect %eax, $0, 10
        jmp pass

        .include "harness.inc"
