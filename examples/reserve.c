/* Reserve a terabyte, use a little of it, give it back: vm.h in one page. */
#include <mmkit/mmkit.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    size_t tib = (size_t)1 << 40, used = (size_t)64 << 20, res = 0;
    void *p;
    int rc = mmk_reserve(tib, &p);
    if (rc) {
        fprintf(stderr, "reserve: %s\n", mmk_strerror(rc));
        return 1;
    }
    if ((rc = mmk_commit(p, used)) == 0) {
        memset(p, 1, used);
        mmk_resident(p, used, &res);
        printf("resident after touching 64 MiB: %zu MiB\n", res >> 20);
        mmk_decommit(p, used);
        mmk_resident(p, used, &res);
        printf("resident after decommit:        %zu MiB\n", res >> 20);
    }
    mmk_release(p, tib);
    return rc ? 1 : 0;
}
