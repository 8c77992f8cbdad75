/* Conformance test kernel: the A20 gate. With A20 off, physical address bit 20 is forced to
   0, so 0x160000 is 0x060000 (the 8086 wraparound firmware probes). Port 0x92 bit 1 (fast
   A20) and the i8042 (commands 0xDD/0xDF, and 0xD1 writing the output port, whose bit 1 is
   A20) switch it. Linked at 2 MiB: the kernel's own addresses have bit 20 clear (so do the
   boot data and stack Lamina places below 1 MiB). Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .set LOW, 0x060000
        .set HIGH, 0x160000

        /* Checks that HIGH aliases LOW (number) or not (number + 1). */
        .macro expect_wrap number
        movl $0x5a5a0000 + \number, HIGH
        expect LOW, $0x5a5a0000 + \number, \number
        .endm
        .macro expect_no_wrap number
        movl $0x11111111, LOW
        movl $0x22222222, HIGH
        expect LOW, $0x11111111, \number
        .endm

        .text
        .globl _start
_start:
        call harness_init
        expect_no_wrap 1
        /* Port 0x92: A20 is on after reset. */
        inb $0x92, %al
        movzbl %al, %eax
        andl $2, %eax
        expect %eax, $2, 2
        inb $0x92, %al
        andb $0xfc, %al                   /* A20 off (bit 0 would reset) */
        outb %al, $0x92
        expect_wrap 3
        inb $0x92, %al
        movzbl %al, %eax
        andl $2, %eax
        expect %eax, $0, 4
        inb $0x92, %al
        orb $2, %al
        outb %al, $0x92
        expect_no_wrap 5
        /* The i8042: 0xDD disables A20, 0xDF enables it. */
        movb $0xdd, %al
        call i8042_command
        expect_wrap 6
        movb $0xdf, %al
        call i8042_command
        expect_no_wrap 7
        /* 0xD1: the next data byte is the output port (bit 0 reset line high, bit 1 A20). */
        movb $0xd1, %al
        call i8042_command
        movb $0xcd, %al
        call i8042_data
        expect_wrap 8
        movb $0xd1, %al
        call i8042_command
        movb $0xcf, %al
        call i8042_data
        expect_no_wrap 9
        jmp pass

/* Writes %al to the i8042's command (0x64) or data (0x60) port once its input buffer is empty
   (status bit 1). */
i8042_command:
        movb %al, %ah
1:      inb $0x64, %al
        testb $2, %al
        jnz 1b
        movb %ah, %al
        outb %al, $0x64
        ret
i8042_data:
        movb %al, %ah
1:      inb $0x64, %al
        testb $2, %al
        jnz 1b
        movb %ah, %al
        outb %al, $0x60
        ret

        .include "harness.inc"
