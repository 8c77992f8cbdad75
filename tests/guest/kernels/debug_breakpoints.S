/* Conformance test kernel: the debug registers (Intel SDM vol. 3B 17.2-17.3). CPUID.1:EDX.DE;
   DR6/DR7 read their fixed bits; DR4 aliases DR6 without CR4.DE and is #UD with it; DR7.GD
   makes the next MOV DR a #DB fault with DR6.BD, and GD is clear in the handler; an
   instruction breakpoint is a fault (B0, RF = 0 pushed) that RF in the IRET image lets
   resume; data breakpoints are traps after the access (write-only ignores reads; an 8-byte
   read/write range is aligned down); an I/O breakpoint (CR4.DE, R/W = 10b) traps after OUT;
   ICEBP (F1) is a #DB trap that leaves DR6 alone. Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .macro expect_db count, eip, dr6_low, number
        expect db_count, \count, \number
        expect db_eip, \eip, \number
        movl db_dr6, %eax
        andl $0xe00f, %eax
        expect %eax, \dr6_low, \number
        .endm

        .text
        .globl _start
_start:
        call harness_init
        call install_db_handler
        movl $1, %eax
        cpuid
        andl $4, %edx
        expect %edx, $4, 1                /* CPUID.1:EDX.DE */

        xorl %eax, %eax
        movl %eax, %dr6
        movl %eax, %dr7
        movl %dr6, %eax
        expect %eax, $0xffff0ff0, 2       /* DR6 fixed bits */
        movl %dr7, %eax
        expect %eax, $0x400, 3            /* DR7 bit 10 */
        movl %dr4, %eax
        expect %eax, $0xffff0ff0, 4       /* DR4 is DR6 without CR4.DE */
        movl %cr4, %eax
        orl $8, %eax
        movl %eax, %cr4                   /* CR4.DE: writable now that DE is advertised */
        movl %cr4, %eax
        andl $8, %eax
        expect %eax, $8, 5
        try movl %dr4, %eax
        expect fault_vector, $6, 6        /* #UD with CR4.DE */

        /* General detect: the MOV DR faults (RIP on it, RF = 1 pushed), the handler sees GD
           clear, and the IRET reruns the MOV, which now succeeds. */
        call reset_db
        movl $0x2400, %eax
        movl %eax, %dr7
gd_move:
        movl %dr0, %eax
        expect_db $1, $gd_move, $0x2000, 7
        movl db_eflags, %eax
        andl $0x10000, %eax
        expect %eax, $0x10000, 8
        movl %dr7, %eax
        expect %eax, $0x400, 9            /* GD cleared */

        /* Instruction breakpoint on bp_nop: hit once per pass of a two-pass loop. */
        call reset_db
        movl $1, db_set_rf
        movl $bp_nop, %eax
        movl %eax, %dr0
        movl $0x401, %eax                 /* L0, R/W0 = 00, LEN0 = 00 */
        movl %eax, %dr7
        movl $2, %ecx
1:      nop
bp_nop: nop
        nop
        loop 1b
        expect_db $2, $bp_nop, $1, 10
        movl db_eflags, %eax
        andl $0x10000, %eax
        expect %eax, $0, 11               /* RF pushed as it was */
        pushfl
        popl %eax
        andl $0x10000, %eax
        expect %eax, $0, 12               /* RF cleared again */
        movl $0, db_set_rf

        /* DR1: 4-byte write breakpoint on data_word. A read does not hit; a byte write does,
           after the store. */
        call reset_db
        movl $data_word, %eax
        movl %eax, %dr1
        movl $(0x400 | 0x4 | (0xd << 20)), %eax  /* L1, R/W1 = 01, LEN1 = 11 */
        movl %eax, %dr7
        movl data_word, %eax
        expect db_count, $0, 13
        movb $0x5a, data_word + 2
after_write:
        expect_db $1, $after_write, $2, 14
        expect data_word, $0x005a0000, 15

        /* DR2: 8-byte read/write at data_quad + 3, taken as data_quad .. + 7. */
        call reset_db
        movl $data_quad + 3, %eax
        movl %eax, %dr2
        movl $(0x400 | 0x10 | (0xb << 24)), %eax  /* L2, R/W2 = 11, LEN2 = 10 */
        movl %eax, %dr7
        movw data_quad, %ax
after_read:
        expect_db $1, $after_read, $4, 16

        /* DR3: I/O breakpoint on port 0x80 (CR4.DE is set). */
        call reset_db
        movl $0x80, %eax
        movl %eax, %dr3
        movl $(0x400 | 0x40 | (0x2 << 28)), %eax  /* L3, R/W3 = 10, LEN3 = 00 */
        movl %eax, %dr7
        outb %al, $0x81
        expect db_count, $0, 17
        outb %al, $0x80
after_out:
        expect_db $1, $after_out, $8, 18
        xorl %eax, %eax
        movl %eax, %dr7

        /* ICEBP: a trap, DR6 unchanged (the handler left it clear). */
        call reset_db
        .byte 0xf1
after_icebp:
        expect db_count, $1, 19
        expect db_eip, $after_icebp, 19
        expect db_dr6, $0xffff0ff0, 20
        jmp pass

        .include "debug_handler.inc"
        .include "harness.inc"

        .data
        .align 8
data_word:      .long 0
        .align 8
data_quad:      .long 0, 0
