/* An outside program: uses only the installed headers and library. */
#include <mmkit/mmkit.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    void *p;
    if (mmk_reserve((size_t)1 << 30, &p) || mmk_commit(p, 4096))
        return 1;
    memset(p, 1, 4096);
    if (mmk_release(p, (size_t)1 << 30))
        return 1;
    printf("consumer linked against mmkit %s: %s\n", mmk_version(), mmk_strerror(MMK_ECORRUPT));
    return 0;
}
