/* Conformance test kernel: machine-check architecture as a guest's MCE setup sees it (SDM vol.
   3B chapter 15): CPUID.1:EDX advertises MCE (7) and MCA (14); MCG_CAP (0x179) gives the bank
   count with MCG_CTL_P; MCG_CTL takes all ones; every bank's CTL reads all ones after reset (as
   KVM and QEMU set it) and STATUS/ADDR/MISC read 0, CTL takes all ones and STATUS only 0
   (non-zero is #GP); CR4.MCE can be set. Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .text
        .globl _start
_start:
        call harness_init
        movl $1, %eax
        cpuid
        andl $0x4080, %edx
        expect %edx, $0x4080, 1
        movl $0x179, %ecx
        try rdmsr
        expect fault_vector, $-1, 2
        movl %eax, %ebp
        andl $0x100, %eax
        expect %eax, $0x100, 3            /* MCG_CTL_P */
        andl $0xff, %ebp                  /* bank count */
        cmpl $0, %ebp
        jne 1f
        movl $4, %edi
        jmp fail_check
1:      movl $0x17b, %ecx                 /* MCG_CTL: enable all */
        movl $-1, %eax
        movl $-1, %edx
        try wrmsr
        expect fault_vector, $-1, 5
        movl $0x17a, %ecx                 /* MCG_STATUS reads 0 */
        try rdmsr
        expect %eax, $0, 6
        /* Banks: %ebx = MCi_CTL index. */
        movl $0x400, %ebx
2:      movl $0, %esi
        movl %ebx, %ecx                   /* CTL reads all ones after reset (as on KVM) */
        try rdmsr
        expect fault_vector, $-1, 17
        expect %eax, $-1, 18
        expect %edx, $-1, 19
        incl %esi
3:      leal (%ebx, %esi), %ecx           /* STATUS, ADDR, MISC read 0 */
        try rdmsr
        expect fault_vector, $-1, 7
        expect %eax, $0, 8
        expect %edx, $0, 9
        incl %esi
        cmpl $4, %esi
        jne 3b
        movl %ebx, %ecx                   /* CTL takes all ones */
        movl $-1, %eax
        movl $-1, %edx
        try wrmsr
        expect fault_vector, $-1, 10
        movl %ebx, %ecx
        try rdmsr
        expect %eax, $-1, 11
        leal 1(%ebx), %ecx                /* STATUS takes 0 ... */
        xorl %eax, %eax
        xorl %edx, %edx
        try wrmsr
        expect fault_vector, $-1, 12
        leal 1(%ebx), %ecx                /* ... and nothing else */
        movl $1, %eax
        try wrmsr
        expect fault_vector, $13, 13
        addl $4, %ebx
        decl %ebp
        jnz 2b
        /* Past the last bank there is no MSR. */
        movl %ebx, %ecx
        try rdmsr
        expect fault_vector, $13, 14
        /* CR4.MCE */
        movl %cr4, %eax
        orl $0x40, %eax
        try movl %eax, %cr4
        expect fault_vector, $-1, 15
        movl %cr4, %eax
        andl $0x40, %eax
        expect %eax, $0x40, 16
        jmp pass

        .include "harness.inc"
