/* Conformance test kernel: the local APIC's modes through IA32_APIC_BASE (0x1b; SDM vol. 3A
   11.4.3, 11.12.5). CPUID.1 advertises the APIC and x2APIC. With the global enable (EN, bit
   11) clear the xAPIC page at 0xFEE00000 is not decoded (reads see what is behind it: nothing,
   all ones) and CPUID.1:EDX.APIC is clear; setting EN restores it. xAPIC -> x2APIC (EN|EXTD)
   moves the registers to MSRs 0x800+ and out of the page; x2APIC -> xAPIC directly, EXTD
   without EN and disabled -> x2APIC are #GP; x2APIC -> disabled -> xAPIC is the legal way back.
   Relocated over RAM, the xAPIC page is decoded there instead of the memory behind it.
   Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .set APIC_VERSION, 0xfee00030
        .set RELOCATED, 0x400000          /* RAM, above this kernel */
        .set EN, 0x800
        .set EXTD, 0x400

        .macro set_apic_base value
        movl $0x1b, %ecx
        movl \value, %eax
        xorl %edx, %edx
        try wrmsr
        .endm

        .text
        .globl _start
_start:
        call harness_init
        movl $1, %eax
        cpuid
        andl $0x200000, %ecx
        expect %ecx, $0x200000, 1         /* x2APIC advertised */
        andl $0x200, %edx
        expect %edx, $0x200, 2            /* APIC present (enabled) */
        movl $0x1b, %ecx
        rdmsr
        movl %eax, %ebx
        andl $(EN | EXTD), %eax
        expect %eax, $EN, 3               /* xAPIC mode after reset */
        andl $0xfffff000, %ebx            /* the base, 0xFEE00000 */
        expect %ebx, $0xfee00000, 4
        movl APIC_VERSION, %ebp           /* an xAPIC register that is never all ones */
        cmpl $-1, %ebp
        jne 1f
        movl $5, %edi
        jmp fail_check

        /* Globally disabled: the page is not decoded, CPUID.1:EDX.APIC is clear. */
1:      set_apic_base $0xfee00000
        expect fault_vector, $-1, 6
        expect APIC_VERSION, $-1, 7
        movl $1, %eax
        cpuid
        andl $0x200, %edx
        expect %edx, $0, 8
        /* Disabled -> x2APIC and EXTD without EN are illegal. */
        set_apic_base $(0xfee00000 | EN | EXTD)
        expect fault_vector, $13, 9
        set_apic_base $(0xfee00000 | EXTD)
        expect fault_vector, $13, 10
        /* Enabled again: the page answers. */
        set_apic_base $(0xfee00000 | EN)
        expect fault_vector, $-1, 11
        expect APIC_VERSION, %ebp, 12
        movl $1, %eax
        cpuid
        andl $0x200, %edx
        expect %edx, $0x200, 13

        /* xAPIC -> x2APIC: the version is MSR 0x803, the page is gone. */
        set_apic_base $(0xfee00000 | EN | EXTD)
        expect fault_vector, $-1, 14
        movl $0x803, %ecx
        try rdmsr
        expect fault_vector, $-1, 15
        expect %eax, %ebp, 16
        expect APIC_VERSION, $-1, 17
        /* x2APIC -> xAPIC directly is illegal. */
        set_apic_base $(0xfee00000 | EN)
        expect fault_vector, $13, 18
        movl $0x1b, %ecx
        rdmsr
        andl $(EN | EXTD), %eax
        expect %eax, $(EN | EXTD), 19     /* still x2APIC */
        /* x2APIC -> disabled -> xAPIC. */
        set_apic_base $0xfee00000
        expect fault_vector, $-1, 20
        movl $0x803, %ecx
        try rdmsr
        expect fault_vector, $13, 21      /* no x2APIC registers while disabled */
        set_apic_base $(0xfee00000 | EN)
        expect fault_vector, $-1, 22
        expect APIC_VERSION, %ebp, 23
        movl $0x803, %ecx
        try rdmsr
        expect fault_vector, $13, 24      /* nor in xAPIC mode */

        /* Relocated over RAM: the page at the new base is the APIC's, not memory; moved back,
           the RAM behind it is untouched. */
        movl $0x5a5a5a5a, RELOCATED + 0x30
        set_apic_base $(RELOCATED | EN)
        expect fault_vector, $-1, 25
        expect RELOCATED + 0x30, %ebp, 26
        expect APIC_VERSION, $-1, 27      /* the old page is no longer decoded */
        set_apic_base $(0xfee00000 | EN)
        expect RELOCATED + 0x30, $0x5a5a5a5a, 28
        expect APIC_VERSION, %ebp, 29
        jmp pass

        .include "harness.inc"
