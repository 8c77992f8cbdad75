/* Conformance test kernel: VMMCALL (0F 01 D9) and VMCALL (0F 01 C1) in a VM that offers no
   hypercalls answer as KVM answers an unknown one: EAX = -1000 (-KVM_ENOSYS), execution goes on
   after the instruction, no #UD. Prints PASS and exits with status 0x55. */
        .code32
        .include "multiboot_header.inc"
        .include "harness_macros.inc"

        .text
        .globl _start
_start:
        call harness_init
        movl $1, %eax
        try vmmcall
        expect fault_vector, $-1, 1
        expect %eax, $-1000, 2
        movl $5, %eax
        try vmcall
        expect fault_vector, $-1, 3
        expect %eax, $-1000, 4
        jmp pass

        .include "harness.inc"
