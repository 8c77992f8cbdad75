/* A Multiboot v1 test kernel that triple-faults: it prints a line to COM1, loads an empty IDT
   (limit 0) and executes UD2. #UD cannot be delivered (the IDT has no entries: #GP), nor can
   the #GP (double fault), nor the #DF: the processor shuts down (SDM vol. 3A 6.15, "Double
   Fault Exception": a fault while delivering #DF is a triple fault). */
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
2:      lidt empty_idt
        ud2
        hlt

        .data
message: .asciz "about to triple-fault\n"
        .align 4
empty_idt:
        .word 0
        .long 0
