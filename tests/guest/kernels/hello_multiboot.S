/* A Multiboot v1 test kernel: prints its command line's message to COM1 and exits through the
   debug-exit port 0xf4 with a status taken from the command line.
   Command line: "STATUS MESSAGE" (STATUS decimal, 0-255). Writes "MESSAGE\n" to COM1, then
   outb(STATUS, 0xf4), so `lamina run` exits with (STATUS << 1) | 1.
   Multiboot spec 0.6.96 section 3.2: EAX = 0x2BADB002, EBX = info structure, 32-bit flat. */
        .code32
        .include "multiboot_header.inc"

        .text
        .globl _start
_start:
        cmpl $0x2BADB002, %eax
        jne fail
        testl $4, (%ebx)                 /* flags bit 2: cmdline present */
        jz fail
        movl 16(%ebx), %esi              /* cmdline address */
        /* Parse the decimal status into %edi. */
        xorl %edi, %edi
1:      movzbl (%esi), %eax
        cmpb $'0', %al
        jb 2f
        cmpb $'9', %al
        ja 2f
        imull $10, %edi, %edi
        subl $'0', %eax
        addl %eax, %edi
        incl %esi
        jmp 1b
2:      cmpb $' ', (%esi)                /* skip one separating space */
        jne 3f
        incl %esi
3:      movzbl (%esi), %eax              /* print the rest of the line */
        testb %al, %al
        jz 4f
        call putc
        incl %esi
        jmp 3b
4:      movb $'\n', %al
        call putc
        movl %edi, %eax
        movw $0xf4, %dx
        outb %al, %dx
fail:   cli
        hlt
        jmp fail

        .include "com1_putc.inc"
