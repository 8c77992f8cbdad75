/* Conformance test kernel: AMD's legacy performance-counter MSRs (AMD APM vol. 2 13.2.1) exist
   on every AMD CPU, so a guest that resets its PMU at start must not fault: event selects
   0xC0010000-3 and counters 0xC0010004-7 read and write (a counter counts nothing here and is
   48 bits wide). The PERFCTR_CORE MSRs (0xC0010200-0xC001020B) exist only when CPUID
   0x80000001:ECX[23] advertises them, else #GP. RDPMC reads the counters (Linux's perf does).
   Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .text
        .globl _start
_start:
        call harness_init
        /* Every legacy MSR reads without a fault, and takes a write of 0 (a PMU reset). */
        movl $0xc0010000, %ebx
1:      movl %ebx, %ecx
        try rdmsr
        expect fault_vector, $-1, 1
        movl %ebx, %ecx
        xorl %eax, %eax
        xorl %edx, %edx
        try wrmsr
        expect fault_vector, $-1, 2
        incl %ebx
        cmpl $0xc0010008, %ebx
        jne 1b
        /* A counter keeps its 48-bit value: write, run a while, read back. */
        movl $0xc0010006, %ecx
        movl $0x12345678, %eax
        movl $0xffff9abc, %edx
        try wrmsr
        expect fault_vector, $-1, 3
        movl $100000, %ecx
2:      loop 2b
        movl $0xc0010006, %ecx
        try rdmsr
        expect fault_vector, $-1, 4
        expect %eax, $0x12345678, 5
        expect %edx, $0x9abc, 6
        /* RDPMC reads the counter (at CPL 0); ECX past the four counters is #GP. */
        movl $2, %ecx
        try rdpmc
        expect fault_vector, $-1, 10
        expect %eax, $0x12345678, 11
        expect %edx, $0x9abc, 12
        movl $4, %ecx
        try rdpmc
        expect fault_vector, $13, 13
        /* An event select keeps its bits: enable, OS, USR, event 0x76. */
        movl $0xc0010001, %ecx
        movl $0x530076, %eax
        xorl %edx, %edx
        try wrmsr
        movl $0xc0010001, %ecx
        try rdmsr
        expect %eax, $0x530076, 7
        /* PERFCTR_CORE MSRs only when advertised. */
        movl $0x80000001, %eax
        cpuid
        btl $23, %ecx
        jc 3f
        movl $0xc0010200, %ecx
        try rdmsr
        expect fault_vector, $13, 8
        movl $0xc001020b, %ecx
        xorl %eax, %eax
        xorl %edx, %edx
        try wrmsr
        expect fault_vector, $13, 9
3:      jmp pass

        .include "harness.inc"
