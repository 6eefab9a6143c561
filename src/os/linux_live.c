/* Platform layer: liveness locks for the ring's peer-death check.
 *
 * An open file description (OFD) lock belongs to one open file description
 * and is dropped by the kernel when the last descriptor referring to it goes
 * away: close, exit, kill -9. Pids play no part, so it works between pid
 * namespaces. A descriptor inherited over fork or passed with SCM_RIGHTS
 * shares its description with the sender, so a holder first needs a
 * description of its own: reopening /proc/self/fd/N gives one. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "os.h"

int mmk__os_reopen_private(int fd)
{
    char path[40];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    /* Read-only is enough for a read lock and needs only read permission
     * on the object (a peer under another uid may lack write permission). */
    int n = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    return n >= 0 ? n : -errno;
}

#ifdef F_OFD_SETLK
static struct flock one_byte(short type, uint64_t off)
{
    struct flock f = {0};
    f.l_type = type;
    f.l_whence = SEEK_SET;
    f.l_start = (off_t)off;
    f.l_len = 1;
    return f;
}
#endif

int mmk__os_ofd_rdlock(int fd, uint64_t off)
{
#ifdef F_OFD_SETLK
    struct flock f = one_byte(F_RDLCK, off);
    if (fcntl(fd, F_OFD_SETLK, &f) == 0)
        return 0;
    return errno == EACCES ? -EAGAIN : -errno;
#else
    (void)fd;
    (void)off;
    return -ENOTSUP;
#endif
}

int mmk__os_ofd_held(int fd, uint64_t off)
{
#ifdef F_OFD_GETLK
    /* Asking about a write lock reports any lock another description holds
     * on the byte, read locks included; our own description's are ignored. */
    struct flock f = one_byte(F_WRLCK, off);
    if (fcntl(fd, F_OFD_GETLK, &f) != 0)
        return -errno;
    return f.l_type != F_UNLCK;
#else
    (void)fd;
    (void)off;
    return -ENOTSUP;
#endif
}

uint32_t mmk__os_pidns_id(void)
{
    /* Not cached: a child forked after unshare(CLONE_NEWPID) lives in
     * another namespace than the parent whose memory it copied. */
    struct stat st;
    if (stat("/proc/self/ns/pid", &st) != 0)
        return 0;
    return (uint32_t)st.st_ino;
}
