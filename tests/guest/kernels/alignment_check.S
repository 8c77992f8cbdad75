/* Conformance test kernel: alignment checks (Intel SDM vol. 3A 6.15, interrupt 17). #AC(0)
   for a misaligned data access only at CPL 3 with CR0.AM and EFLAGS.AC: not at CPL 0, not with
   AC clear; bytes never fault, words need 2-byte and doublewords 4-byte alignment, stack
   pushes are checked too. The kernel sets up its own GDT with ring-3 segments and a TSS and
   IRETs to CPL 3 (IOPL 3, so the checks can still print). Prints PASS and exits with status
   0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .set AM, 0x40000
        .set AC, 0x40000

        .text
        .globl _start
_start:
        call harness_init
        movl $tss, %eax                   /* the TSS descriptor's base */
        movl $gdt_tss, %edi
        call set_descriptor_base
        movl $gdt_descriptor, %eax
        call load_gdt
        movl %esp, tss + 4                /* ESP0: the #AC handler runs on this stack */
        movw $0x28, %ax
        ltr %ax
        movl %cr0, %eax
        orl $AM, %eax
        movl %eax, %cr0

        /* CPL 0 with AM and AC: no check. */
        pushfl
        orl $AC, (%esp)
        popfl
        try movl data + 1, %eax
        expect fault_vector, $-1, 1
        pushfl
        andl $~AC, (%esp)
        popfl

        /* To CPL 3 with IOPL 3 and AC clear. */
        pushl $0x23
        pushl $user_stack_top
        pushl $0x3002
        pushl $0x1b
        pushl $user
        iret

user:   movw $0x23, %ax
        movw %ax, %ds
        movw %ax, %es
        try movl data + 1, %eax
        expect fault_vector, $-1, 2       /* AC clear */
        pushfl
        orl $AC, (%esp)                   /* POPF sets AC at CPL 3 */
        popfl
        try movl data + 1, %eax
        expect fault_vector, $17, 3
        expect fault_error, $0, 4
        try movl %eax, data + 2
        expect fault_vector, $17, 5
        try movw data + 1, %ax
        expect fault_vector, $17, 6
        try movw data + 2, %ax
        expect fault_vector, $-1, 7
        try movb data + 1, %al
        expect fault_vector, $-1, 8
        try movl data + 4, %eax
        expect fault_vector, $-1, 9
        movl %esp, %ebx                   /* a push at a misaligned ESP */
        subl $2, %esp
        try pushl %eax
        expect fault_vector, $17, 10
        movl %ebx, %esp
        pushfl
        andl $~AC, (%esp)
        popfl
        try movl data + 1, %eax
        expect fault_vector, $-1, 11      /* AC clear again */
        jmp pass

        .include "harness.inc"

        .data
        .align 8
gdt:    .quad 0
        .quad 0x00cf9a000000ffff          /* 0x08: code, DPL 0 */
        .quad 0x00cf92000000ffff          /* 0x10: data, DPL 0 */
        .quad 0x00cffa000000ffff          /* 0x18: code, DPL 3 */
        .quad 0x00cff2000000ffff          /* 0x20: data, DPL 3 */
gdt_tss:
        .word 0x67, 0                     /* 0x28: 32-bit TSS, base filled in at start */
        .byte 0, 0x89, 0, 0
gdt_end:
gdt_descriptor:
        .word gdt_end - gdt - 1
        .long gdt
        .align 4
tss:    .long 0                           /* previous task link */
        .long 0                           /* ESP0 */
        .long 0x10                        /* SS0 */
        .fill 23, 4, 0
        .word 0, 104                      /* T flag; no I/O bitmap */
        .align 8
data:   .long 0x04030201, 0x08070605
        .fill 256, 4, 0
user_stack_top:
