/* Typed refs: misuse fails to compile. Static assertions here check the
 * positive side; the negative side compiles small snippets with the C
 * compiler (needs MMK_SOURCE_DIR and a cc; skips without them). */
#include <mmkit/heap.h>
#include "testutil.h"

struct node { int v; };
struct leaf { double x; };
MMK_REF_TYPE(node_ref, struct node);
MMK_REF_TYPE(leaf_ref, struct leaf);

_Static_assert(sizeof(node_ref) == sizeof(mmk_ref), "a typed ref is one word");
_Static_assert(!__builtin_types_compatible_p(node_ref, leaf_ref), "distinct types");
_Static_assert(__builtin_types_compatible_p(__typeof__(MMK_PTR((mmk_heap *)0, (node_ref){0})),
                                            struct node *),
               "MMK_PTR yields the right pointer type");

static const char *prelude =
    "#include <mmkit/heap.h>\n"
    "struct node { int v; }; struct leaf { double x; };\n"
    "MMK_REF_TYPE(node_ref, struct node); MMK_REF_TYPE(leaf_ref, struct leaf);\n"
    "int f(mmk_heap *h, struct leaf *lp);\n"
    "int f(mmk_heap *h, struct leaf *lp) { node_ref n = {0}; leaf_ref l = {0};\n"
    "(void)h; (void)lp; (void)n; (void)l;\n";

static int compiles(const char *cc, const char *inc, const char *body)
{
    char src[600], cmd[2048];
    snprintf(src, sizeof src, "%s/snippet.c", test_tmpdir());
    FILE *f = fopen(src, "w");
    CHECK(f);
    fprintf(f, "%s%s\nreturn 0; }\n", prelude, body);
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s -std=gnu11 -fsyntax-only -Werror -Wall -I'%s' '%s' 2>/dev/null",
             cc, inc, src);
    return system(cmd) == 0;
}

int main(void)
{
    const char *srcdir = getenv("MMK_SOURCE_DIR");
    const char *cc = getenv("CC");
    if (!cc || !*cc)
        cc = "cc";
    if (!srcdir)
        skip("MMK_SOURCE_DIR not set (run under ctest)");
    char inc[600], probe[700];
    snprintf(inc, sizeof inc, "%s/include", srcdir);
    snprintf(probe, sizeof probe, "%s --version >/dev/null 2>&1", cc);
    if (system(probe) != 0)
        skip("no C compiler to try the snippets");
    /* the right uses compile */
    CHECK(compiles(cc, inc, "struct node *p = MMK_PTR(h, n); (void)p;"));
    CHECK(compiles(cc, inc, "int rc = MMK_ALLOC(h, n); (void)rc;"));
    CHECK(compiles(cc, inc, "node_ref m = n; (void)m;"));
    CHECK(compiles(cc, inc, "MMK_REF_OF(h, l, lp);"));
    /* the wrong ones do not */
    CHECK(!compiles(cc, inc, "n = l;"));
    CHECK(!compiles(cc, inc, "struct leaf *p = MMK_PTR(h, n); (void)p;"));
    CHECK(!compiles(cc, inc, "MMK_REF_OF(h, n, lp);"));
    CHECK(!compiles(cc, inc, "node_ref m = l; (void)m;"));
    rm_rf(test_tmpdir());
    printf("ok: 4 right uses compile, 4 misuses are rejected\n");
    return 0;
}
