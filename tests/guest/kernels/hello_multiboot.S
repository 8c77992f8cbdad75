/* A Multiboot v1 test kernel: prints its command line's message to COM1 and exits through the
   debug-exit port 0xf4 with a status taken from the command line.
   Command line: "STATUS MESSAGE" (STATUS decimal, 0-255). Writes "MESSAGE\n" to COM1, then
   outb(STATUS, 0xf4), so `lamina run --debug-exit` exits with (STATUS << 1) | 1. Without that
   option the port is absent and the write does nothing: the kernel then prints
   "debug-exit ignored" and triple-faults, so lamina exits 1 for a reason it chose.
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
        movl $ignored, %esi              /* still running: the port is not there */
5:      movzbl (%esi), %eax
        testb %al, %al
        jz 6f
        call putc
        incl %esi
        jmp 5b
6:      lidt empty_idt                   /* no IDT: the ud2 below triple-faults */
        ud2
fail:   cli
        hlt
        jmp fail

        .include "com1_putc.inc"

        .data
ignored: .asciz "debug-exit ignored\n"
        .align 4
empty_idt:
        .word 0
        .long 0
