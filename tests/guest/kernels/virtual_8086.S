/* Conformance test kernel: virtual-8086 mode (SDM vol. 3A ch. 20), without VME (Lamina does not
   advertise it). Linked at 0x8000 so its virtual-8086 code and stack are reachable from segment 0.
   IRET from ring 0 with EFLAGS.VM enters virtual-8086 mode; below IOPL 3, CLI and INT n raise
   #GP(0) to the ring-0 monitor, whose stack holds ES, DS, FS, GS above the usual frame and whose
   data segments start null; at IOPL 3, CLI/PUSHF/POPF/STI run and INT n goes through a DPL 3
   gate whose handler IRETs back into virtual-8086 mode; HLT (CPL 3) still faults.
   Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .set TSS_SELECTOR, 0x18
        .set VM, 0x20000
        .set IOPL3, 0x3000

        .text
        .globl _start
_start:
        call harness_init
        movl $gdt + TSS_SELECTOR, %edi
        movl $tss, %eax
        call set_descriptor_base
        movl $gdt_descriptor, %eax
        call load_gdt
        movl $monitor_stack_top, tss + 4       /* ESP0 */
        movl $0x10, tss + 8                    /* SS0 */
        movw $TSS_SELECTOR, %ax
        ltr %ax
        /* #GP from virtual-8086 mode goes to the monitor; vector 3 is a DPL 3 trap gate. */
        movl $monitor, %eax
        movw %ax, idt + 13 * 8
        shrl $16, %eax
        movw %ax, idt + 13 * 8 + 6
        movl $int_handler, %eax
        movw %ax, idt + 3 * 8
        movw $0xef00, idt + 3 * 8 + 4
        shrl $16, %eax
        movw %ax, idt + 3 * 8 + 6

        /* 1: CLI at IOPL 0. */
        movl $v86_cli, %eax
        movl $VM, %ebx
        call run_v86
        expect gp_error, $0, 1
        expect gp_eip, $v86_cli + 1, 2         /* the CLI after a NOP */
        expect gp_cs, $0, 3
        movl gp_eflags, %eax
        andl $VM, %eax
        expect %eax, $VM, 4
        expect gp_ds, $0x1234, 5               /* the v86 segments, pushed */
        expect gp_gs, $0x4321, 6
        expect gp_es, $0x5678, 7
        expect monitor_ds, $0, 8               /* the monitor began with null DS */

        /* 2: INT n at IOPL 0. */
        movl $v86_int, %eax
        movl $VM, %ebx
        call run_v86
        expect gp_error, $0, 9
        expect gp_eip, $v86_int, 10
        expect int_count, $0, 11

        /* 3: IOPL 3: CLI, PUSHF, POPF, STI and INT 3 run; HLT faults. */
        movl $v86_iopl3, %eax
        movl $(VM | IOPL3), %ebx
        call run_v86
        expect int_count, $1, 12
        expect gp_eip, $v86_iopl3_hlt, 13
        expect int_saw_vm, $VM, 14             /* the handler's frame had VM set */
        movzwl v86_pushed_flags, %eax
        andl $0x3200, %eax
        expect %eax, $0x3000, 15               /* PUSHF: IOPL 3, IF clear after CLI */
        movl gp_eflags, %eax
        andl $0x200, %eax
        expect %eax, $0x200, 16                /* STI set IF */
        jmp pass

/* run_v86: enters virtual-8086 mode at 0000:%eax with EFLAGS %ebx (IF clear) and returns when
   the monitor takes a #GP. */
run_v86:
        movl %esp, saved_esp
        movl $return_from_v86, continuation
        pushl $0x4321                          /* GS */
        pushl $0x1111                          /* FS */
        pushl $0x1234                          /* DS */
        pushl $0x5678                          /* ES */
        pushl $0                               /* SS */
        pushl $v86_stack_top                   /* ESP */
        orl $2, %ebx
        pushl %ebx                             /* EFLAGS */
        pushl $0                               /* CS */
        pushl %eax                             /* EIP */
        iret
return_from_v86:
        ret

/* The monitor: #GP from virtual-8086 mode. Stack: error, EIP, CS, EFLAGS, ESP, SS, ES, DS, FS,
   GS. Records them and goes back to run_v86's caller on the saved stack. */
monitor:
        movw %ds, %ax
        movzwl %ax, %eax
        movw $0x10, %cx
        movw %cx, %ds
        movw %cx, %es
        movl %eax, monitor_ds
        popl gp_error
        popl gp_eip
        popl gp_cs
        popl gp_eflags
        addl $8, %esp                          /* ESP, SS */
        popl gp_es
        popl gp_ds
        popl %eax                              /* FS */
        popl gp_gs
        movl saved_esp, %esp
        jmp *continuation

/* INT 3 from virtual-8086 mode at IOPL 3: counts, notes VM in the frame and returns. */
int_handler:
        pushl %eax
        pushl %ds
        movw $0x10, %ax
        movw %ax, %ds
        incl int_count
        movl 16(%esp), %eax                    /* EFLAGS image: above DS, EAX, EIP, CS */
        andl $VM, %eax
        movl %eax, int_saw_vm
        popl %ds
        popl %eax
        iret

/* Virtual-8086 code (16-bit, segment 0, so offsets are the link addresses). */
        .code16
v86_cli:
        nop
        cli
        jmp .
v86_int:
        int $0x21
        jmp .
v86_iopl3:
        cli
        pushf
        popw %ax
        movw %ax, %cs:v86_pushed_flags
        pushw %ax
        popf
        sti
        int $3
v86_iopl3_hlt:
        hlt
        jmp .
        .code32

        .include "harness.inc"

        .data
        flat_gdt
        .quad 0x0000890000000067               /* 0x18: TSS (base set at run time) */
        end_gdt
saved_esp:      .long 0
continuation:   .long 0
gp_error:       .long 0
gp_eip:         .long 0
gp_cs:          .long 0
gp_eflags:      .long 0
gp_es:          .long 0
gp_ds:          .long 0
gp_gs:          .long 0
monitor_ds:     .long 0xffff
int_count:      .long 0
int_saw_vm:     .long 0
v86_pushed_flags: .long 0
        .align 16
tss:            .fill 104, 1, 0
                .fill 512, 1, 0
monitor_stack_top:
                .fill 256, 1, 0
v86_stack_top:
