/* Hostile guest: churns decoded code without writing it. A 256 KiB region of NOPs with a RET
   ending every 64-byte line is called at every byte offset, four times over: each call starts
   a block the emulator has not seen (up to 63 NOPs and the RET), about a million blocks in all.
   Without a bound on decoded blocks and translated code the worker grows by gigabytes; with
   it, the peak RSS stays flat. Prints "sled-ok" and exits with status 0x21. */
        .code32
        .include "multiboot_header.inc"
        .set SLED_BYTES, 256 * 1024
        .set ROUNDS, 4
        .text
        .globl _start
_start: movl $stack_top, %esp
        /* Fill the sled: NOPs, and a RET as the last byte of every 64-byte line. */
        movl $sled, %edi
        movl $SLED_BYTES, %ecx
        movb $0x90, %al
        rep stosb
        movl $sled + 63, %edi
1:      movb $0xc3, (%edi)
        addl $64, %edi
        cmpl $sled + SLED_BYTES, %edi
        jb 1b
        movl $ROUNDS, %ebp
2:      movl $sled, %ebx
3:      call *%ebx
        incl %ebx
        cmpl $sled + SLED_BYTES, %ebx
        jb 3b
        decl %ebp
        jnz 2b
        movl $ok, %esi
        call puts
        movb $0x21, %al
        call exit_with

        .include "hostile_common.inc"
        .data
ok:     .asciz "sled-ok\n"
        .bss
        .align 4096
sled:   .skip SLED_BYTES
