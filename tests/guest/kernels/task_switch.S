/* Conformance test kernel: hardware task switches (SDM vol. 3A ch. 7) in 32-bit protected mode.
   LTR marks the TSS busy; CALL to a TSS nests the new task (back-link, NT, busy) and its IRET
   returns (NT clear, the callee available again, CR0.TS set); INT3 through a task gate in the
   IDT does the same; JMP to the busy running TSS is #GP(selector); IRET with NT whose back-link
   names an available TSS is #TS(back-link); a TSS whose limit is below 0x67 is #TS(selector).
   Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .set MAIN_TSS, 0x18
        .set TASK_B, 0x20
        .set SMALL_TSS, 0x28

        .text
        .globl _start
_start:
        call harness_init
        movl $gdt + MAIN_TSS, %edi
        movl $main_tss, %eax
        call set_descriptor_base
        movl $gdt + TASK_B, %edi
        movl $tss_b, %eax
        call set_descriptor_base
        movl $gdt + SMALL_TSS, %edi
        movl $small_tss, %eax
        call set_descriptor_base
        movl $gdt_descriptor, %eax
        call load_gdt
        /* Task B: flat ring 0 at task_b on its own stack. */
        movl $task_b, tss_b + 0x20
        movl $2, tss_b + 0x24
        movl $stack_b_top, tss_b + 0x38
        movl $0x08, tss_b + 0x4c
        movl $0x10, tss_b + 0x48
        movl $0x10, tss_b + 0x50
        movl $0x10, tss_b + 0x54
        movl $0x10, tss_b + 0x58
        movl $0x10, tss_b + 0x5c

        movw $MAIN_TSS, %ax
        ltr %ax
        movzbl gdt + MAIN_TSS + 5, %eax
        expect %eax, $0x8b, 1                  /* LTR set the busy bit */

        movl $0x1234, %ebx
        lcall $TASK_B, $0
        expect b_entries, $1, 2
        expect %ebx, $0x1234, 3                /* our registers came back from our TSS */
        expect b_saw_ebx, $0, 4                /* task B had its own */
        movzwl tss_b, %eax
        expect %eax, $MAIN_TSS, 5              /* back-link */
        expect b_saw_nt, $0x4000, 6            /* B ran nested */
        pushfl
        popl %eax
        andl $0x4000, %eax
        expect %eax, $0, 7
        movzbl gdt + TASK_B + 5, %eax
        expect %eax, $0x89, 8                  /* IRET made B available again */
        movl %cr0, %eax
        andl $8, %eax
        expect %eax, $8, 9                     /* CR0.TS */
        clts

        /* INT3 through a task gate to B. */
        movl $(TASK_B << 16), idt + 3 * 8
        movl $0x8500, idt + 3 * 8 + 4
        int3
        expect b_entries, $2, 10
        movzbl gdt + TASK_B + 5, %eax
        expect %eax, $0x89, 11

        /* JMP to the busy running task. */
        try ljmp $MAIN_TSS, $0
        expect fault_vector, $13, 12
        expect fault_error, $MAIN_TSS, 13

        /* IRET with NT set and a back-link naming an available TSS. */
        movw $TASK_B, main_tss
        pushfl
        orl $0x4000, (%esp)
        popfl
        try iret
        pushfl
        andl $~0x4000, (%esp)
        popfl
        expect fault_vector, $10, 14
        expect fault_error, $TASK_B, 15
        expect b_entries, $2, 16

        /* A TSS too small for a 32-bit task. */
        try lcall $SMALL_TSS, $0
        expect fault_vector, $10, 17
        expect fault_error, $SMALL_TSS, 18
        jmp pass

/* Task B: counts its entries, records what it saw, and returns to its caller. */
task_b: incl b_entries
        movl %ebx, b_saw_ebx
        pushfl
        popl %eax
        andl $0x4000, %eax
        movl %eax, b_saw_nt
        iret
        jmp task_b

        .include "harness.inc"

        .data
        flat_gdt
        .quad 0x0000890000000067               /* 0x18: our TSS (base set at run time) */
        .quad 0x0000890000000067               /* 0x20: task B's TSS */
        .quad 0x0000890000000060               /* 0x28: a TSS below the minimum limit */
        end_gdt
b_entries:  .long 0
b_saw_ebx:  .long 0
b_saw_nt:   .long 0
        .align 16
main_tss:   .fill 104, 1, 0
tss_b:      .fill 104, 1, 0
small_tss:  .fill 104, 1, 0
        .align 16
stack_b:    .fill 1024, 1, 0
stack_b_top:
