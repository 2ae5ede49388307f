/* alloc_hook.c — a counting allocator for the unit tests (model_predict must allocate nothing).
 *
 * The unit-test binary is linked with -Wl,--wrap=malloc,--wrap=calloc,... (Makefile), so every
 * call to these functions from the statically linked objects (tests and libintentd.a, which
 * holds model.o) lands here, is counted, and is forwarded to the real allocator — under ASan
 * and TSan the sanitizer's, so the sanitizers keep seeing every allocation.  Allocations made
 * inside shared libraries (libc itself, OpenBLAS) are not counted.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

unsigned long alloc_hook_count(void);

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t a, size_t n);
int __wrap_posix_memalign(void **p, size_t a, size_t n);

static atomic_ulong alloc_calls;

unsigned long alloc_hook_count(void)
{
    return atomic_load(&alloc_calls);
}

void *__wrap_malloc(size_t n)
{
    atomic_fetch_add(&alloc_calls, 1);
    return __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
    atomic_fetch_add(&alloc_calls, 1);
    return __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n)
{
    atomic_fetch_add(&alloc_calls, 1);
    return __real_realloc(p, n);
}

void *__wrap_aligned_alloc(size_t a, size_t n)
{
    atomic_fetch_add(&alloc_calls, 1);
    return __real_aligned_alloc(a, n);
}

int __wrap_posix_memalign(void **p, size_t a, size_t n)
{
    atomic_fetch_add(&alloc_calls, 1);
    return __real_posix_memalign(p, a, n);
}
