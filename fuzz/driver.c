/* Replay driver for fuzz targets in builds without libFuzzer: runs every file
 * of the corpus directories given, then pseudo-random inputs (fixed seed, so a
 * failure reproduces). MMK_FUZZ_ITERS overrides the count. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, n);
    return 0;
}

int main(int argc, char **argv)
{
    unsigned files = 0;
    for (int i = 1; i < argc; i++) {
        DIR *d = opendir(argv[i]);
        if (!d) {
            if (run_file(argv[i]) == 0)
                files++;
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            char p[4096];
            struct stat st;
            snprintf(p, sizeof p, "%s/%s", argv[i], e->d_name);
            if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && run_file(p) == 0)
                files++;
        }
        closedir(d);
    }
    const char *it = getenv("MMK_FUZZ_ITERS");
    unsigned iters = it ? (unsigned)strtoul(it, NULL, 10) : 3000;
    uint64_t s = 0x9e3779b97f4a7c15ull;
    static uint8_t buf[65536];
    for (unsigned k = 0; k < iters; k++) {
        size_t n = (size_t)(k * 2654435761u) % sizeof buf;
        if (k % 4 == 0)
            n %= 512;
        for (size_t j = 0; j < n; j++) {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            buf[j] = (uint8_t)s;
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    printf("replayed %u corpus files and %u random inputs\n", files, iters);
    return 0;
}
