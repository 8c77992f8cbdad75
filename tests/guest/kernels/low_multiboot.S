/* Conformance test kernel linked at 0x8000, as kernels made for QEMU's loader can be: its image
   (with 128 KiB of data) covers where Lamina keeps its boot data for other kernels, so the
   loader must put the Multiboot information, memory map and command line elsewhere. Checks
   that its data arrived intact and that the information structure, command line and memory
   map lie outside the image, then runs like hello_multiboot: prints the command line's message
   and exits with its status. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .text
        .globl _start
_start:
        movl %eax, %ebp
        movl %ebx, %edx
        call harness_init
        expect %ebp, $0x2BADB002, 1
        movl %edx, %ebx
        /* The data is all 0xA5, not overwritten by the loader. */
        movl $filler, %esi
        movl $filler_end, %ecx
        subl %esi, %ecx
1:      cmpb $0xa5, (%esi)
        jne 2f
        incl %esi
        loop 1b
        jmp 3f
2:      movl $2, %edi
        jmp fail_check
        /* The information structure, command line and memory map are outside the image. */
3:      movl %ebx, %eax
        call outside_image
        expect %eax, $1, 3
        testl $4, (%ebx)
        jz 4f
        movl 16(%ebx), %eax
        call outside_image
        expect %eax, $1, 4
4:      movl 48(%ebx), %eax
        call outside_image
        expect %eax, $1, 5
        testl $4, (%ebx)
        jnz 5f
        movl $6, %edi
        jmp fail_check
        /* Like hello_multiboot: "STATUS MESSAGE". */
5:      movl 16(%ebx), %esi
        xorl %edi, %edi
6:      movzbl (%esi), %eax
        cmpb $'0', %al
        jb 7f
        cmpb $'9', %al
        ja 7f
        imull $10, %edi, %edi
        subl $'0', %eax
        addl %eax, %edi
        incl %esi
        jmp 6b
7:      cmpb $' ', (%esi)
        jne 8f
        incl %esi
8:      call print
        movb $'\n', %al
        call putc
        movl %edi, %eax
        jmp exit_status

/* %eax = 1 when the address in %eax lies outside [image_start, image_end), else 0. */
outside_image:
        cmpl $image_start, %eax
        jb 1f
        cmpl $image_end, %eax
        jae 1f
        xorl %eax, %eax
        ret
1:      movl $1, %eax
        ret

        .include "harness.inc"

        .data
filler: .fill 0x20000, 1, 0xa5
filler_end:
