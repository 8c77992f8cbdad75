/* Hostile guest: floods the virtio console's emergency-write register (virtio 1.2 section
   5.3.4, emerg_wr at device-config offset 8), one byte per 32-bit MMIO write, 2,000,000 times,
   with nobody reading the console (lamina run --console-port socket:PATH, no client). The
   host must keep a bounded buffer and count what it dropped.
   It finds the console (PCI 1af4:1043) on bus 0 through ports 0xcf8/0xcfc, follows the
   virtio vendor capabilities to the device-config window (cfg_type 4: BAR and offset; the
   BARs are assigned and decoding enabled by lamina, as firmware would), writes, prints
   "flood-done" and exits through the debug-exit port with status 0x21, or 0x22 when no
   console is found. */
        .code32
        .include "multiboot_header.inc"
        .set WRITES, 2000000
        .text
        .globl _start
_start: movl $stack_top, %esp
        xorl %ebx, %ebx                  /* device number */
1:      xorl %eax, %eax
        call config_read
        cmpl $0x10431af4, %eax
        je 2f
        incl %ebx
        cmpl $32, %ebx
        jb 1b
        movl $no_console, %esi
        call puts
        movb $0x22, %al
        call exit_with
2:      movl $0x34, %eax                 /* capabilities pointer */
        call config_read
        andl $0xfc, %eax
3:      testl %eax, %eax
        jz 5f
        movl %eax, %edi                  /* this capability's offset */
        call config_read
        cmpb $0x09, %al                  /* vendor-specific: a virtio capability */
        jne 4f
        movl %eax, %ecx
        shrl $24, %ecx
        cmpl $4, %ecx                    /* VIRTIO_PCI_CAP_DEVICE_CFG */
        jne 4f
        leal 4(%edi), %eax
        call config_read
        movzbl %al, %esi                 /* BAR index */
        leal 8(%edi), %eax
        call config_read
        movl %eax, %ebp                  /* offset in the BAR */
        leal 0x10(,%esi,4), %eax
        call config_read
        andl $0xfffffff0, %eax
        addl %eax, %ebp
        addl $8, %ebp                    /* emerg_wr */
        jmp 6f
4:      movl %edi, %eax
        call config_read
        shrl $8, %eax
        andl $0xfc, %eax
        jmp 3b
5:      movl $no_console, %esi
        call puts
        movb $0x22, %al
        call exit_with
6:      movl $WRITES, %ecx
7:      movl %ecx, %eax
        andl $0x3f, %eax
        addl $0x30, %eax                 /* printable bytes '0'..'o' */
        movl %eax, (%ebp)
        loop 7b
        movl $done, %esi
        call puts
        movb $0x21, %al
        call exit_with

/* config_read: the dword at config offset %eax of bus 0, device %ebx, function 0. */
config_read:
        pushl %edx
        andl $0xfc, %eax
        movl %ebx, %edx
        shll $11, %edx
        orl %edx, %eax
        orl $0x80000000, %eax
        movw $0xcf8, %dx
        outl %eax, %dx
        movw $0xcfc, %dx
        inl %dx, %eax
        popl %edx
        ret

        .include "hostile_common.inc"
        .data
no_console: .asciz "no-virtio-console\n"
done:   .asciz "flood-done\n"
