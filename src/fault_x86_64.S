/* Guarded memory routines for x86-64 (System V ABI), the exception-table half
 * of the fault layer (src/fault.c has the other half, the signal handler).
 *
 * Every routine here is a leaf: it never touches the stack, so at any
 * instruction a plain `ret` returns to its caller. Before its first access to
 * the memory that may fault, each routine puts the guarded range in r8 (start)
 * and r9 (end). When SIGSEGV/SIGBUS hits with the PC inside
 * [mmk__fault_text_start, mmk__fault_text_end) and the faulting address inside
 * [r8, r9), the handler sets rax to -EFAULT or -EIO and moves the PC to
 * mmk__fault_fixup, a `ret`. A fault on the other operand (the caller's own
 * buffer) is not ours and goes on to the previous handler.
 *
 * Loads never reach outside [src, src+n): small sizes use overlapping
 * accesses from both ends instead of reading a whole word past the end. */
#if defined(__x86_64__) && defined(__linux__) && !defined(MMK_FAULT_FORCE_PORTABLE)

#define COPY_REP_THRESHOLD 4096

        .text
        .p2align 6
        .globl mmk__fault_text_start
        .hidden mmk__fault_text_start
mmk__fault_text_start:

/* int mmk__x86_copy(void *dst, const void *src, size_t n): src may fault. */
        .globl mmk__x86_copy
        .hidden mmk__x86_copy
        .type mmk__x86_copy, @function
mmk__x86_copy:
        mov     %rsi, %r8
        lea     (%rsi,%rdx), %r9
        jmp     .Lbody
        .size mmk__x86_copy, .-mmk__x86_copy

/* int mmk__x86_store(void *dst, const void *src, size_t n): dst may fault. */
        .globl mmk__x86_store
        .hidden mmk__x86_store
        .type mmk__x86_store, @function
        .p2align 4
mmk__x86_store:
        mov     %rdi, %r8
        lea     (%rdi,%rdx), %r9
        .p2align 4
.Lbody:
        cmp     $16, %rdx
        jb      .Llt16
        cmp     $32, %rdx
        ja      .Lgt32
        movups  (%rsi), %xmm0
        movups  -16(%rsi,%rdx), %xmm1
        movups  %xmm0, (%rdi)
        movups  %xmm1, -16(%rdi,%rdx)
        xor     %eax, %eax
        ret
.Lgt32:
        cmp     $64, %rdx
        ja      .Lgt64
        movups  (%rsi), %xmm0
        movups  16(%rsi), %xmm1
        movups  -32(%rsi,%rdx), %xmm2
        movups  -16(%rsi,%rdx), %xmm3
        movups  %xmm0, (%rdi)
        movups  %xmm1, 16(%rdi)
        movups  %xmm2, -32(%rdi,%rdx)
        movups  %xmm3, -16(%rdi,%rdx)
        xor     %eax, %eax
        ret
.Lgt64:
        cmp     $COPY_REP_THRESHOLD, %rdx
        jb      .Lvec
        /* dst 1..63 bytes past src modulo 4 KiB: rep movsb on AMD Zen runs
         * ~20x slower there (2.2 us for 4 KiB, 34 us for 64 KiB: a malloc'd
         * buffer sits 16 bytes into its page, so reading a page-aligned
         * source into one is the common case). The vector loops do not care. */
        mov     %rdi, %rax
        sub     %rsi, %rax
        and     $4095, %eax
        dec     %eax
        cmp     $62, %eax
        ja      .Lrep
.Lvec:
        cmp     $128, %rdx
        jbe     .Lsse
        cmpb    $0, mmk__x86_avx2(%rip)
        jne     .Lavx
.Lsse:
        /* 64 bytes a step; the last 64 are loaded first and stored last, so
         * the loop needs no remainder handling. */
        movups  -64(%rsi,%rdx), %xmm4
        movups  -48(%rsi,%rdx), %xmm5
        movups  -32(%rsi,%rdx), %xmm6
        movups  -16(%rsi,%rdx), %xmm7
        lea     (%rdi,%rdx), %r10
        mov     %rdx, %rcx
1:      movups  (%rsi), %xmm0
        movups  16(%rsi), %xmm1
        movups  32(%rsi), %xmm2
        movups  48(%rsi), %xmm3
        movups  %xmm0, (%rdi)
        movups  %xmm1, 16(%rdi)
        movups  %xmm2, 32(%rdi)
        movups  %xmm3, 48(%rdi)
        add     $64, %rsi
        add     $64, %rdi
        sub     $64, %rcx
        cmp     $64, %rcx
        ja      1b
        movups  %xmm4, -64(%r10)
        movups  %xmm5, -48(%r10)
        movups  %xmm6, -32(%r10)
        movups  %xmm7, -16(%r10)
        xor     %eax, %eax
        ret
.Lavx:
        /* AVX2 CPUs only (mmk__x86_avx2 is set from cpuid before the first
         * copy). 128 < n <= 256: four ymm from each end. */
        cmp     $256, %rdx
        ja      .Lavxloop
        vmovdqu (%rsi), %ymm0
        vmovdqu 32(%rsi), %ymm1
        vmovdqu 64(%rsi), %ymm2
        vmovdqu 96(%rsi), %ymm3
        vmovdqu -128(%rsi,%rdx), %ymm4
        vmovdqu -96(%rsi,%rdx), %ymm5
        vmovdqu -64(%rsi,%rdx), %ymm6
        vmovdqu -32(%rsi,%rdx), %ymm7
        vmovdqu %ymm0, (%rdi)
        vmovdqu %ymm1, 32(%rdi)
        vmovdqu %ymm2, 64(%rdi)
        vmovdqu %ymm3, 96(%rdi)
        vmovdqu %ymm4, -128(%rdi,%rdx)
        vmovdqu %ymm5, -96(%rdi,%rdx)
        vmovdqu %ymm6, -64(%rdi,%rdx)
        vmovdqu %ymm7, -32(%rdi,%rdx)
        vzeroupper
        xor     %eax, %eax
        ret
.Lavxloop:
        /* As the SSE loop, 256 bytes a step; the last 256 go last. */
        vmovdqu -256(%rsi,%rdx), %ymm8
        vmovdqu -224(%rsi,%rdx), %ymm9
        vmovdqu -192(%rsi,%rdx), %ymm10
        vmovdqu -160(%rsi,%rdx), %ymm11
        vmovdqu -128(%rsi,%rdx), %ymm12
        vmovdqu -96(%rsi,%rdx), %ymm13
        vmovdqu -64(%rsi,%rdx), %ymm14
        vmovdqu -32(%rsi,%rdx), %ymm15
        lea     (%rdi,%rdx), %r10
        mov     %rdx, %rcx
        .p2align 4
3:      vmovdqu (%rsi), %ymm0
        vmovdqu 32(%rsi), %ymm1
        vmovdqu 64(%rsi), %ymm2
        vmovdqu 96(%rsi), %ymm3
        vmovdqu 128(%rsi), %ymm4
        vmovdqu 160(%rsi), %ymm5
        vmovdqu 192(%rsi), %ymm6
        vmovdqu 224(%rsi), %ymm7
        vmovdqu %ymm0, (%rdi)
        vmovdqu %ymm1, 32(%rdi)
        vmovdqu %ymm2, 64(%rdi)
        vmovdqu %ymm3, 96(%rdi)
        vmovdqu %ymm4, 128(%rdi)
        vmovdqu %ymm5, 160(%rdi)
        vmovdqu %ymm6, 192(%rdi)
        vmovdqu %ymm7, 224(%rdi)
        add     $256, %rsi
        add     $256, %rdi
        sub     $256, %rcx
        cmp     $256, %rcx
        ja      3b
        vmovdqu %ymm8, -256(%r10)
        vmovdqu %ymm9, -224(%r10)
        vmovdqu %ymm10, -192(%r10)
        vmovdqu %ymm11, -160(%r10)
        vmovdqu %ymm12, -128(%r10)
        vmovdqu %ymm13, -96(%r10)
        vmovdqu %ymm14, -64(%r10)
        vmovdqu %ymm15, -32(%r10)
        vzeroupper
        xor     %eax, %eax
        ret
.Lrep:
        mov     %rdx, %rcx
        rep movsb
        xor     %eax, %eax
        ret
.Llt16:
        cmp     $8, %rdx
        jb      .Llt8
        mov     (%rsi), %rax
        mov     -8(%rsi,%rdx), %rcx
        mov     %rax, (%rdi)
        mov     %rcx, -8(%rdi,%rdx)
        xor     %eax, %eax
        ret
.Llt8:
        cmp     $4, %rdx
        jb      .Llt4
        mov     (%rsi), %eax
        mov     -4(%rsi,%rdx), %ecx
        mov     %eax, (%rdi)
        mov     %ecx, -4(%rdi,%rdx)
        xor     %eax, %eax
        ret
.Llt4:
        test    %rdx, %rdx
        jz      2f
        /* n = 1..3: bytes 0, n/2 and n-1 cover every case. */
        mov     %rdx, %r10
        shr     $1, %r10
        movzbl  (%rsi), %eax
        movzbl  (%rsi,%r10), %ecx
        movzbl  -1(%rsi,%rdx), %r11d
        mov     %al, (%rdi)
        mov     %cl, (%rdi,%r10)
        mov     %r11b, -1(%rdi,%rdx)
2:      xor     %eax, %eax
        ret
        .size mmk__x86_store, .-mmk__x86_store

/* int mmk__x86_load32(const void *src, uint32_t *out) */
        .globl mmk__x86_load32
        .hidden mmk__x86_load32
        .type mmk__x86_load32, @function
        .p2align 4
mmk__x86_load32:
        mov     %rdi, %r8
        lea     4(%rdi), %r9
        mov     (%rdi), %eax
        mov     %eax, (%rsi)
        xor     %eax, %eax
        ret
        .size mmk__x86_load32, .-mmk__x86_load32

/* int mmk__x86_load64(const void *src, uint64_t *out) */
        .globl mmk__x86_load64
        .hidden mmk__x86_load64
        .type mmk__x86_load64, @function
        .p2align 4
mmk__x86_load64:
        mov     %rdi, %r8
        lea     8(%rdi), %r9
        mov     (%rdi), %rax
        mov     %rax, (%rsi)
        xor     %eax, %eax
        ret
        .size mmk__x86_load64, .-mmk__x86_load64

/* int mmk__x86_store32(void *dst, uint32_t v) */
        .globl mmk__x86_store32
        .hidden mmk__x86_store32
        .type mmk__x86_store32, @function
        .p2align 4
mmk__x86_store32:
        mov     %rdi, %r8
        lea     4(%rdi), %r9
        mov     %esi, (%rdi)
        xor     %eax, %eax
        ret
        .size mmk__x86_store32, .-mmk__x86_store32

/* int mmk__x86_store64(void *dst, uint64_t v) */
        .globl mmk__x86_store64
        .hidden mmk__x86_store64
        .type mmk__x86_store64, @function
        .p2align 4
mmk__x86_store64:
        mov     %rdi, %r8
        lea     8(%rdi), %r9
        mov     %rsi, (%rdi)
        xor     %eax, %eax
        ret
        .size mmk__x86_store64, .-mmk__x86_store64

/* int mmk__x86_diff(const void *a, const void *b, size_t n, size_t *range):
 * b may fault; n a multiple of 16. range[0] = offset of the first 8-byte
 * word that differs, range[1] = the end of the last one (both n when the
 * two are equal). 16 bytes a step from each end. */
        .globl mmk__x86_diff
        .hidden mmk__x86_diff
        .type mmk__x86_diff, @function
        .p2align 4
mmk__x86_diff:
        mov     %rsi, %r8
        lea     (%rsi,%rdx), %r9
        xor     %eax, %eax
1:      cmp     %rdx, %rax
        jae     6f
        movdqu  (%rdi,%rax), %xmm0
        movdqu  (%rsi,%rax), %xmm1
        pcmpeqb %xmm1, %xmm0
        pmovmskb %xmm0, %r10d
        cmp     $0xffff, %r10d
        jne     2f
        add     $16, %rax
        jmp     1b
2:      and     $0xff, %r10d            /* the lower word equal: the upper one differs */
        cmp     $0xff, %r10d
        jne     3f
        add     $8, %rax
3:      mov     %rax, (%rcx)
        mov     %rdx, %r11
4:      movdqu  -16(%rdi,%r11), %xmm0   /* ends: a word differs at or after range[0] */
        movdqu  -16(%rsi,%r11), %xmm1
        pcmpeqb %xmm1, %xmm0
        pmovmskb %xmm0, %r10d
        cmp     $0xffff, %r10d
        jne     5f
        sub     $16, %r11
        jmp     4b
5:      shr     $8, %r10d               /* the upper word equal: the lower one differs */
        cmp     $0xff, %r10d
        jne     7f
        sub     $8, %r11
7:      mov     %r11, 8(%rcx)
        xor     %eax, %eax
        ret
6:      mov     %rdx, (%rcx)
        mov     %rdx, 8(%rcx)
        xor     %eax, %eax
        ret
        .size mmk__x86_diff, .-mmk__x86_diff

        .globl mmk__fault_text_end
        .hidden mmk__fault_text_end
mmk__fault_text_end:

/* The error exits: the handler has put -EFAULT or -EIO in rax. The AVX one
 * (chosen by the handler on AVX2 CPUs) clears the upper ymm halves, as a
 * normal return from the AVX loop does. */
        .globl mmk__fault_fixup
        .hidden mmk__fault_fixup
        .type mmk__fault_fixup, @function
        .p2align 4
mmk__fault_fixup:
        ret
        .size mmk__fault_fixup, .-mmk__fault_fixup

        .globl mmk__fault_fixup_avx
        .hidden mmk__fault_fixup_avx
        .type mmk__fault_fixup_avx, @function
        .p2align 4
mmk__fault_fixup_avx:
        vzeroupper
        ret
        .size mmk__fault_fixup_avx, .-mmk__fault_fixup_avx

#endif

#if defined(__linux__) && defined(__ELF__)
        .section .note.GNU-stack,"",%progbits
#endif
