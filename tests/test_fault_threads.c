// mmk-test: labels=concurrent timeout=120
/* fault.h under concurrency: eight threads fault at once (SIGBUS past end of
 * file, SIGSEGV on PROT_NONE) between correct copies, while another thread
 * installs and uninstalls the handler and claims and unclaims ranges. */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include <mmkit/mmkit.h>
#include "fault_internal.h"
#include "testutil.h"

MMK_TEST_FAULT_OPTIONS

#define THREADS 8

static size_t page;
static char *filemap;   /* page 0 backed (pattern), page 1 past end of file */
static char *noaccess;  /* PROT_NONE */
static long iters;
static atomic_long errors_seen;
static atomic_int stop_churn;

static void *worker(void *arg)
{
    uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(uintptr_t)arg + 1;
    char buf[4096];
    long errs = 0;
    for (long i = 0; i < iters; i++) {
        size_t n = 1 + test_rand(&seed) % 200;
        size_t off = test_rand(&seed) % (page - n);
        switch (i % 4) {
        case 0:
            CHECK_EQ(mmk_copy_guarded(buf, filemap + off, n), 0);
            for (size_t k = 0; k < n; k++)
                CHECK(buf[k] == (char)((off + k) * 7));
            break;
        case 1:
            CHECK_EQ(mmk_copy_guarded(buf, filemap + page + off, n), -EFAULT);
            errs++;
            break;
        case 2: {
            uint64_t v;
            CHECK_EQ(mmk_load_u64_guarded(noaccess + (off & ~7ul), &v), -EFAULT);
            errs++;
            break;
        }
        default:
            CHECK_EQ(mmk_store_guarded(noaccess + off, buf, n), -EFAULT);
            errs++;
        }
    }
    atomic_fetch_add(&errors_seen, errs);
    return NULL;
}

static int decline(void *ctx, void *addr, int sig, int code, int is_write)
{
    (void)ctx, (void)addr, (void)sig, (void)code, (void)is_write;
    return 0;
}

/* Reference counting and the claim table under contention; the guarded
 * routines hold their own reference, so faults stay caught throughout. */
static void *churn(void *arg)
{
    (void)arg;
    long rounds = 0;
    while (!atomic_load(&stop_churn)) {
        CHECK_OK(mmk_fault_install());
        int id = mmk__fault_claim(noaccess, page, decline, NULL);
        CHECK(id >= 0);
        mmk__fault_unclaim(id);
        mmk_fault_uninstall();
        rounds++;
    }
    printf("churn: %ld install/claim/unclaim/uninstall rounds\n", rounds);
    return NULL;
}

int main(void)
{
    page = mmk_page_size();
    iters = test_scaled(40000);
    char path[600];
    snprintf(path, sizeof path, "%s/f", test_tmpdir());
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)page) == 0);
    filemap = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(filemap != MAP_FAILED);
    for (size_t i = 0; i < page; i++)
        filemap[i] = (char)(i * 7);
    noaccess = mmap(NULL, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(noaccess != MAP_FAILED);

    uint64_t before = mmk_fault_count();
    pthread_t t[THREADS], c;
    double t0 = now_sec();
    CHECK(pthread_create(&c, NULL, churn, NULL) == 0);
    for (long i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, worker, (void *)i) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&stop_churn, 1);
    pthread_join(c, NULL);
    double dt = now_sec() - t0;
    uint64_t faults = mmk_fault_count() - before;
    CHECK_EQ((long)faults, atomic_load(&errors_seen));
    CHECK_EQ((long)faults, THREADS * (iters - (iters + 3) / 4));
    printf("fault_threads: %llu faults became errors on %d threads in %.2f s (%.2f us of wall time each)\n",
           (unsigned long long)faults, THREADS, dt, dt * 1e6 / (double)faults);
    munmap(filemap, 2 * page);
    munmap(noaccess, page);
    close(fd);
    rm_rf(test_tmpdir());
    return 0;
}
