/* Hostile guest: churns code pages. 300,000 rounds, each writing a fresh "mov $imm32, %eax;
   ret" into one of four pages (at a slot that moves through the page) and calling it at once,
   so every round modifies code that was executed before and must run the new bytes (the
   emulator's decoded-block cache must invalidate, not grow). Each result is checked. Then it
   prints "churn-ok" and exits with status 0x21 through the debug-exit port, or prints
   "churn-mismatch" and exits with 0x22 when stale code ran. */
        .code32
        .include "multiboot_header.inc"
        .set ROUNDS, 300000
        .text
        .globl _start
_start: movl $stack_top, %esp
        xorl %edi, %edi                  /* round */
1:      movl %edi, %eax
        andl $3, %eax
        shll $12, %eax
        leal code_pages(%eax), %ebx      /* one of four pages */
        movl %edi, %eax
        shrl $2, %eax
        andl $0xff, %eax
        shll $4, %eax
        addl %eax, %ebx                  /* a 16-byte slot in it */
        imull $0x9e3779b1, %edi, %ebp    /* the value this round's code returns */
        movb $0xb8, (%ebx)               /* mov $imm32, %eax */
        movl %ebp, 1(%ebx)
        movb $0xc3, 5(%ebx)              /* ret */
        call *%ebx
        cmpl %ebp, %eax
        jne 2f
        /* Rewrite the same slot once more and run it again: back-to-back modification. */
        notl %ebp
        movl %ebp, 1(%ebx)
        call *%ebx
        cmpl %ebp, %eax
        jne 2f
        incl %edi
        cmpl $ROUNDS, %edi
        jb 1b
        movl $ok, %esi
        call puts
        movb $0x21, %al
        call exit_with
2:      movl $mismatch, %esi
        call puts
        movl %edi, %eax
        call puthex
        movb $0x22, %al
        call exit_with

        .include "hostile_common.inc"
        .data
ok:     .asciz "churn-ok\n"
mismatch: .asciz "churn-mismatch at round "
        .bss
        .align 4096
code_pages: .skip 4 * 4096
