/* atomic_file.h — replace a file so that a crash leaves the old contents or the
 * new ones, whole, never a mix: the new contents go to a temp file beside it
 * (PATH.tmp.XXXXXX, mode 0644), which is fflush'd, checked for write errors,
 * fsync'd, closed, renamed over PATH, and the directory fsync'd so the rename
 * itself is durable. Every failure returns AC_ERR_IO through ac_err with a
 * message naming the file and errno, and removes the temp file.
 *
 * Streaming writers (any amount of data through a FILE*):
 *     ac_atomic_file af;
 *     int rc = ac_atomic_open(&af, path);          // af.f: the temp file
 *     if (rc) return rc;
 *     fprintf(af.f, ...); fwrite(..., af.f);       // errors are caught at commit (ferror)
 *     if (something failed) { ac_atomic_abort(&af); return rc; }
 *     return ac_atomic_commit(&af);
 * One buffer: ac_write_file_atomic(path, buf, n). Not part of the public API. */
#ifndef AC_UTIL_ATOMIC_FILE_H
#define AC_UTIL_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ac_atomic_file {
    FILE *f;    /* the temp file, open for writing (binary); owned until commit/abort */
    char *path; /* the file to replace (a copy, owned) */
    char *tmp;  /* the temp file's path (owned) */
} ac_atomic_file;

/* Create the temp file beside path. On success af->f is ready; the caller must
 * end with exactly one ac_atomic_commit or ac_atomic_abort. On failure af is
 * left empty (abort on it is a no-op). */
int ac_atomic_open(ac_atomic_file *af, const char *path);

/* Flush, check for write errors, fsync, close, rename over af->path, fsync the
 * directory. Releases af whatever happens; on failure the temp file is gone
 * and the old file (if any) is untouched, unless the failure was the
 * directory fsync after the rename (then the new file is in place, its
 * durability not guaranteed, and the message says so). */
int ac_atomic_commit(ac_atomic_file *af);

/* Close and remove the temp file, release af; the old file is untouched. */
void ac_atomic_abort(ac_atomic_file *af);

/* Write n bytes from buf to path atomically (open + fwrite + commit). */
int ac_write_file_atomic(const char *path, const void *buf, size_t n);

/* rename(tmp, path), then fsync of path's directory. On a failed rename tmp is
 * removed, *moved (may be NULL) is 0 and path untouched; on a failed
 * directory fsync *moved is 1: path already holds the new file. Returns
 * AC_OK or AC_ERR_IO with a message naming both files and errno. For callers
 * that write the temp file themselves (the map store's rewrites). */
int ac_rename_durable(const char *tmp, const char *path, int *moved);

/* fsync of the directory holding path ("." for a bare name): 0, or -1 with
 * errno set. A directory that cannot be opened for reading (no permission)
 * also gives -1. */
int ac_fsync_dir_of(const char *path);

#ifdef __cplusplus
}
#endif

#endif
