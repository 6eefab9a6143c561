/* mmk kv: a persistent key-value map kept at a heap's root. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <mmkit/mmkit.h>
#include "mmk.h"

static const char kv_usage[] =
    "usage: mmk kv put FILE KEY VALUE   insert or replace (creates FILE and the map)\n"
    "       mmk kv get FILE KEY         print the value and a newline; exit 1 when absent\n"
    "       mmk kv del FILE KEY         delete the key; exit 1 when absent\n"
    "       mmk kv list FILE            print every key, one a line (in no order)\n"
    "       mmk kv check FILE           verify heap and map: exit 0 intact, 1 damaged\n"
    "\n"
    "FILE is an mmkit heap (with its redo log FILE-log); the map lives at the heap's\n"
    "root. Each put or del is one durable transaction: when the command returns, the\n"
    "change survives a crash or a power cut; readers never see half of it.\n"
    "Exit status: 0 done, 1 key absent (get, del) or damage found (check),\n"
    "2 any other error (usage, missing or foreign file, damaged heap or map).\n";

static const struct {
    const char *name, *args, *help;
} kv_cmds[] = {
    {"put", "FILE KEY VALUE",
     "Store VALUE under KEY (insert or replace) in the map at FILE's heap root.\n"
     "Creates FILE and the map when missing. One durable transaction."},
    {"get", "FILE KEY", "Print the value of KEY followed by a newline. Exit 1 when KEY is absent."},
    {"del", "FILE KEY", "Delete KEY (one durable transaction). Exit 1 when KEY is absent."},
    {"list", "FILE", "Print every key, one a line, in no particular order."},
    {"check", "FILE",
     "Verify the heap (page checksums, allocator) and the map (every bucket and\n"
     "entry). Exit 0 when intact, 1 when damaged (with what and where), 2 otherwise."},
};

static int kv_fail(const char *file, const char *what, int rc)
{
    const char *why = mmk_strerror(rc);
    if (rc == MMK_EFORMAT)
        why = "not an mmkit heap, or a heap of an incompatible format";
    fprintf(stderr, "mmk kv: %s: %s%s%s\n", file, what ? what : "", what ? ": " : "", why);
    return 2;
}

/* The map at the root, or 0 (none yet). A root that is not a map shows up
 * as MMK_ECORRUPT from the first map call. */
static int open_read(const char *file, mmk_heap **h)
{
    int rc = mmk_heap_open(file, MMK_HEAP_RDONLY, h);
    if (rc == -EROFS) /* a crashed commit to recover first: needs write access */
        rc = mmk_heap_open(file, 0, h);
    if (rc)
        return rc;
    rc = mmk_heap_read_begin(*h);
    if (rc) {
        mmk_heap_close(*h);
        *h = NULL;
    }
    return rc;
}

static int map_fail(const char *file, int rc)
{
    if (rc == MMK_ECORRUPT) {
        fprintf(stderr,
                "mmk kv: %s: the heap's root is not a map, or the map is damaged "
                "(try: mmk kv check %s)\n",
                file, file);
        return 2;
    }
    return kv_fail(file, NULL, rc);
}

static int out_done(void)
{
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "mmk kv: cannot write to standard output: %s\n", strerror(errno));
        return 2;
    }
    return 0;
}

static int kv_get(const char *file, const char *key)
{
    mmk_heap *h;
    int rc = open_read(file, &h);
    if (rc)
        return kv_fail(file, "cannot open", rc);
    mmk_ref m = mmk_heap_root(h);
    const void *v = NULL;
    size_t vl = 0;
    rc = m ? mmk_map_get(h, m, key, strlen(key), &v, &vl) : -ENOENT;
    int ex;
    if (rc == -ENOENT) {
        fprintf(stderr, "mmk kv: %s: no key '%s'\n", file, key);
        ex = 1;
    } else if (rc) {
        ex = map_fail(file, rc);
    } else {
        fwrite(v, 1, vl, stdout);
        putchar('\n');
        ex = out_done();
    }
    mmk_heap_read_end(h);
    mmk_heap_close(h);
    return ex;
}

static int kv_list(const char *file)
{
    mmk_heap *h;
    int rc = open_read(file, &h);
    if (rc)
        return kv_fail(file, "cannot open", rc);
    mmk_ref m = mmk_heap_root(h);
    int ex = 0;
    if (m) {
        mmk_map_iter it;
        const void *k;
        size_t kl;
        rc = mmk_map_iter_init(h, m, &it);
        if (!rc)
            while ((rc = mmk_map_iter_next(&it, &k, &kl, NULL, NULL)) == 1) {
                fwrite(k, 1, kl, stdout);
                if (putchar('\n') == EOF)
                    break;
            }
        if (rc < 0)
            ex = map_fail(file, rc);
    }
    if (!ex)
        ex = out_done();
    mmk_heap_read_end(h);
    mmk_heap_close(h);
    return ex;
}

static int kv_change(const char *file, const char *key, const char *val)
{
    mmk_heap *h;
    int rc = mmk_heap_open(file, val ? MMK_HEAP_CREATE : 0, &h);
    if (rc)
        return kv_fail(file, "cannot open", rc);
    if ((rc = mmk_heap_begin(h))) {
        mmk_heap_close(h);
        return kv_fail(file, "cannot start a transaction", rc);
    }
    mmk_ref m = mmk_heap_root(h);
    int ex = 0;
    if (!m && val) {
        if ((rc = mmk_map_create(h, &m)) || (rc = mmk_heap_set_root(h, m))) {
            mmk_heap_close(h);
            return kv_fail(file, "cannot create the map", rc);
        }
    }
    if (val)
        rc = mmk_map_put(h, m, key, strlen(key), val, strlen(val));
    else
        rc = m ? mmk_map_del(h, m, key, strlen(key)) : -ENOENT;
    if (rc == -ENOENT) {
        fprintf(stderr, "mmk kv: %s: no key '%s'\n", file, key);
        ex = 1;
    } else if (rc) {
        ex = map_fail(file, rc);
    }
    if (ex) {
        mmk_heap_abort(h);
        mmk_heap_close(h);
        return ex;
    }
    rc = mmk_heap_commit(h);
    mmk_heap_close(h);
    if (rc)
        return kv_fail(file, "commit failed, nothing changed", rc);
    return 0;
}

static int kv_check(const char *file)
{
    mmk_heap *h;
    int rc = open_read(file, &h);
    if (rc == MMK_ECORRUPT) {
        fprintf(stderr, "mmk kv: %s: heap damaged: %s\n", file, mmk_strerror(rc));
        return 1;
    }
    if (rc)
        return kv_fail(file, "cannot open", rc);
    char msg[512] = "";
    int ex = 0;
    mmk_heap_read_end(h);
    rc = mmk_heap_check_report(h, msg, sizeof msg);
    if (rc) {
        fprintf(stderr, "mmk kv: %s: heap damaged: %s\n", file, msg[0] ? msg : mmk_strerror(rc));
        ex = rc == MMK_ECORRUPT ? 1 : 2;
    } else if ((rc = mmk_heap_read_begin(h))) {
        ex = kv_fail(file, NULL, rc);
    } else {
        mmk_ref m = mmk_heap_root(h);
        struct mmk_map_stats st;
        if (!m) {
            printf("%s: heap intact, no map yet\n", file);
        } else if ((rc = mmk_map_check_report(h, m, msg, sizeof msg))) {
            fprintf(stderr, "mmk kv: %s: map damaged: %s\n", file, msg[0] ? msg : mmk_strerror(rc));
            ex = rc == MMK_ECORRUPT ? 1 : 2;
        } else if (mmk_map_stats(h, m, &st) == 0) {
            printf("%s: intact: %llu keys, %llu buckets, %llu overflow nodes\n", file,
                   (unsigned long long)st.count, (unsigned long long)st.buckets,
                   (unsigned long long)st.overflow);
        }
        mmk_heap_read_end(h);
        if (!ex)
            ex = out_done();
    }
    mmk_heap_close(h);
    return ex;
}

int mmk_cmd_kv(int argc, char **argv)
{
    if (argc < 2) {
        fputs(kv_usage, stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (!strcmp(sub, "--help") || !strcmp(sub, "-h") || !strcmp(sub, "help")) {
        fputs(kv_usage, stdout);
        return 0;
    }
    int idx = -1;
    for (int i = 0; i < (int)(sizeof kv_cmds / sizeof kv_cmds[0]); i++)
        if (!strcmp(sub, kv_cmds[i].name))
            idx = i;
    if (idx < 0) {
        fprintf(stderr, "mmk kv: unknown command '%s'\n\n%s", sub, kv_usage);
        return 2;
    }
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: mmk kv %s %s\n\n%s\n", kv_cmds[idx].name, kv_cmds[idx].args,
                   kv_cmds[idx].help);
            return 0;
        }
    int want = idx == 0 ? 5 : idx <= 2 ? 4 : 3;
    if (argc != want) {
        fprintf(stderr, "mmk kv %s: expected %s (try: mmk kv %s --help)\n", sub,
                kv_cmds[idx].args, sub);
        return 2;
    }
    const char *file = argv[2];
    if (!*file) {
        fprintf(stderr, "mmk kv %s: empty file name\n", sub);
        return 2;
    }
    switch (idx) {
    case 0: return kv_change(file, argv[3], argv[4]);
    case 1: return kv_get(file, argv[3]);
    case 2: return kv_change(file, argv[3], NULL);
    case 3: return kv_list(file);
    default: return kv_check(file);
    }
}
