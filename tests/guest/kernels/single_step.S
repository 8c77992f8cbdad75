/* Conformance test kernel: single step and the MOV SS shadow (Intel SDM vol. 3B 17.3.1.4,
   vol. 3A 6.8.3). A POPF that sets TF traps after the instruction after it, not after
   itself; the POPF that clears TF still traps (TF was set when it began); the trap reports
   DR6.BS with TF in the pushed EFLAGS. After MOV SS or POP SS the #DB waits for the next
   instruction. A REP string instruction traps after each iteration with EIP on it and RF = 1
   pushed, and after the last one with EIP past it. Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .macro set_tf
        pushfl
        orl $0x100, (%esp)
        popfl
        .endm
        .macro clear_tf
        pushfl
        andl $~0x100, (%esp)
        popfl
        .endm

        .text
        .globl _start
_start:
        call harness_init
        call install_db_handler
        xorl %eax, %eax
        movl %eax, %dr6

        /* POPF setting TF, two NOPs, then pushfl / andl / popfl: five traps. */
        call reset_db
        set_tf
        nop
step_second:
        nop
        clear_tf
step_end:
        nop
        expect db_count, $5, 1
        expect db_eips, $step_second, 2   /* the first trap follows the first NOP */
        expect db_eips + 16, $step_end, 3 /* the POPF clearing TF traps too */
        movl db_dr6, %eax
        andl $0xe00f, %eax
        expect %eax, $0x4000, 4           /* BS */
        movl db_eflagss, %eax
        andl $0x100, %eax
        expect %eax, $0x100, 5            /* TF in the image */

        /* MOV SS: no #DB between it and the next instruction. */
        call reset_db
        movw %ss, %dx
        set_tf
        movl $1, %ebx
ss_move:
        movw %dx, %ss
        nop
after_ss_nop:
        clear_tf
        expect db_eips, $ss_move, 6
        expect db_eips + 4, $after_ss_nop, 7

        /* POP SS likewise. */
        call reset_db
        pushl %ss
        set_tf
        movl $1, %ebx
ss_pop:
        popl %ss
        nop
after_pop_nop:
        clear_tf
        expect db_eips, $ss_pop, 8
        expect db_eips + 4, $after_pop_nop, 9

        /* REP STOSB over three bytes: traps after each iteration. */
        call reset_db
        movl $buffer, %edi
        movl $3, %ecx
        movb $0x77, %al
        set_tf
        movl $0, %ebx
rep_store:
        rep stosb
after_rep:
        clear_tf
        expect db_eips + 4, $rep_store, 10
        expect db_eips + 8, $rep_store, 11
        expect db_eips + 12, $after_rep, 12
        movl db_eflagss + 4, %eax
        andl $0x10000, %eax
        expect %eax, $0x10000, 13         /* RF: an iteration but the last */
        movl db_eflagss + 12, %eax
        andl $0x10000, %eax
        expect %eax, $0, 14
        expect buffer, $0x00777777, 15
        jmp pass

        .include "debug_handler.inc"
        .include "harness.inc"

        .data
        .align 4
buffer: .long 0
