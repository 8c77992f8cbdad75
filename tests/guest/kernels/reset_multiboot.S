/* A Multiboot v1 test kernel that prints "booting" to COM1 and resets the machine through the
   reset control register (port 0xcf9: RST_CPU with SYS_RST, the value the FADT's RESET_REG
   advertises). With --on-reboot exit lamina stops; with restart it boots the kernel again. */
        .code32
        .include "multiboot_header.inc"

        .text
        .globl _start
_start:
        movl $message, %esi
1:      movzbl (%esi), %eax
        testb %al, %al
        jz 2f
        movw $0x3f8, %dx
        outb %al, %dx
        incl %esi
        jmp 1b
2:      movb $0x06, %al
        movw $0xcf9, %dx
        outb %al, %dx
3:      hlt
        jmp 3b

        .data
message: .asciz "booting\n"
