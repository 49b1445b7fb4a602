/* atomic_file.c — temp file + fsync + rename + directory fsync (see atomic_file.h). */
#include "util/atomic_file.h"
#include "util/common.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ac_fsync_dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = NULL;
    const char *d = ".";
    if (slash == path) d = "/";
    else if (slash) {
        dir = strndup(path, (size_t)(slash - path));
        if (!dir) return -1; /* errno: ENOMEM */
        d = dir;
    }
    int r = -1;
    const int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        r = fsync(dfd);
        const int e = errno;
        close(dfd);
        errno = e;
    }
    const int e = errno;
    free(dir);
    errno = e;
    return r;
}

int ac_rename_durable(const char *tmp, const char *path, int *moved) {
    if (moved) *moved = 0;
    if (rename(tmp, path) != 0) {
        const int e = errno;
        unlink(tmp);
        return ac_err(AC_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(e));
    }
    if (moved) *moved = 1;
    /* the rename itself made durable; EINVAL: a file system without directory fsync */
    if (ac_fsync_dir_of(path) != 0 && errno != EINVAL)
        return ac_err(AC_ERR_IO, "'%s' is in place, but the fsync of its directory failed: %s", path, strerror(errno));
    return AC_OK;
}

static void release(ac_atomic_file *af) {
    free(af->path);
    free(af->tmp);
    af->f = NULL, af->path = af->tmp = NULL;
}

int ac_atomic_open(ac_atomic_file *af, const char *path) {
    af->f = NULL, af->path = af->tmp = NULL;
    if (!path || !*path) return ac_err(AC_ERR_ARG, "atomic write: empty path");
    const size_t n = strlen(path);
    af->path = strdup(path);
    af->tmp = AC_MALLOC(n + 16);
    if (!af->path || !af->tmp) {
        release(af);
        return ac_err(AC_ERR_NOMEM, "cannot write '%s': out of memory", path);
    }
    snprintf(af->tmp, n + 16, "%s.tmp.XXXXXX", path);
    const int fd = mkstemp(af->tmp);
    if (fd < 0) {
        const int e = errno;
        release(af);
        return ac_err(AC_ERR_IO, "cannot create a temp file beside '%s': %s", path, strerror(e));
    }
    /* mkstemp makes 0600; the files we replace are 0644 */
    if (fchmod(fd, 0644) != 0 || !(af->f = fdopen(fd, "wb"))) {
        const int e = errno;
        close(fd);
        unlink(af->tmp);
        const int rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", af->tmp, strerror(e));
        release(af);
        return rc;
    }
    return AC_OK;
}

void ac_atomic_abort(ac_atomic_file *af) {
    if (!af || !af->f) return;
    fclose(af->f);
    unlink(af->tmp);
    release(af);
}

int ac_atomic_commit(ac_atomic_file *af) {
    if (!af || !af->f) return ac_err(AC_ERR_ARG, "atomic write: commit without an open file");
    int rc = AC_OK;
    /* ferror: a write that failed earlier (the buffer flushed mid-stream) leaves nothing for fflush to report */
    errno = 0;
    if (fflush(af->f) != 0 || ferror(af->f) || fsync(fileno(af->f)) != 0) {
        const int e = errno ? errno : EIO;
        fclose(af->f);
        unlink(af->tmp);
        rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", af->tmp, strerror(e));
    } else if (fclose(af->f) != 0) {
        const int e = errno;
        unlink(af->tmp);
        rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", af->tmp, strerror(e));
    } else {
        rc = ac_rename_durable(af->tmp, af->path, NULL);
    }
    release(af);
    return rc;
}

int ac_write_file_atomic(const char *path, const void *buf, size_t n) {
    ac_atomic_file af;
    int rc = ac_atomic_open(&af, path);
    if (rc) return rc;
    if (n && fwrite(buf, 1, n, af.f) != n) {
        const int e = errno;
        rc = ac_err(AC_ERR_IO, "cannot write '%s': %s", af.tmp, strerror(e));
        ac_atomic_abort(&af);
        return rc;
    }
    return ac_atomic_commit(&af);
}
