/* test_atomic_file.c — src/util/atomic_file.c, the one temp + fsync + rename
 * writer every saved file goes through: the content lands (buffer and
 * streaming forms, mode 0644, an old file replaced), no temp file is left
 * after a success; a write that failed midway, an aborted write and a failed
 * rename leave the old file byte for byte and no temp file; a directory that
 * cannot take the file gives AC_ERR_IO naming the path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "util/atomic_file.h"
#include "util/common.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[512]; /* a fresh directory per test */

static int setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "%s/test_atomic_file_%d_XXXXXX", AC_BINARY_DIR, (int)getpid());
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
                if (unlink(p) != 0) rmdir(p);
            }
        closedir(d);
    }
    rmdir(g_dir);
    return 0;
}

static void path_in(char *out, size_t cap, const char *name) { snprintf(out, cap, "%s/%s", g_dir, name); }

/* files in the test directory, besides . and .. */
static int n_files(void) {
    DIR *d = opendir(g_dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void write_plain(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* the whole file as a string (at most 4 KiB) */
static void read_all(const char *path, char *out, size_t cap) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    const size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
}

static void test_buffer_write_replaces(void **state) {
    (void)state;
    char path[1024], got[4096];
    path_in(path, sizeof path, "a.bin");
    write_plain(path, "old contents that are longer than the new ones");
    const char text[] = "new\n";
    assert_int_equal(ac_write_file_atomic(path, text, strlen(text)), AC_OK);
    read_all(path, got, sizeof got);
    assert_string_equal(got, text);
    assert_int_equal(n_files(), 1); /* no temp file beside it */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    /* a new file, and an empty one */
    path_in(path, sizeof path, "b.bin");
    assert_int_equal(ac_write_file_atomic(path, "", 0), AC_OK);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 0);
    assert_int_equal(n_files(), 2);
}

static void test_stream_write(void **state) {
    (void)state;
    char path[1024], got[4096];
    path_in(path, sizeof path, "s.txt");
    ac_atomic_file af;
    assert_int_equal(ac_atomic_open(&af, path), AC_OK);
    assert_non_null(af.f);
    assert_non_null(strstr(af.tmp, path)); /* the temp file lies beside path */
    assert_int_equal(access(path, F_OK), -1); /* nothing at path until the commit */
    for (int i = 0; i < 100; i++) fprintf(af.f, "%d,", i);
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", af.tmp);
    assert_int_equal(access(tmp, F_OK), 0);
    assert_int_equal(ac_atomic_commit(&af), AC_OK);
    assert_null(af.f);
    assert_int_equal(access(tmp, F_OK), -1);
    read_all(path, got, sizeof got);
    assert_int_equal(strncmp(got, "0,1,2,", 6), 0);
    assert_non_null(strstr(got, ",99,"));
    assert_int_equal(n_files(), 1);
    /* a large stream (past stdio's buffer): every byte lands */
    const size_t big = 3u << 20;
    uint8_t *buf = malloc(big);
    assert_non_null(buf);
    for (size_t i = 0; i < big; i++) buf[i] = (uint8_t)(i * 131u >> 3);
    assert_int_equal(ac_atomic_open(&af, path), AC_OK);
    for (size_t off = 0; off < big; off += 1000) fwrite(buf + off, 1, big - off < 1000 ? big - off : 1000, af.f);
    assert_int_equal(ac_atomic_commit(&af), AC_OK);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *back = malloc(big + 1);
    assert_non_null(back);
    assert_int_equal(fread(back, 1, big + 1, f), big);
    fclose(f);
    assert_memory_equal(back, buf, big);
    free(back);
    free(buf);
    assert_int_equal(n_files(), 1);
}

/* The caller's own failure midway (abort) and a write error caught at commit
 * both leave the old file as it was and no temp file. */
static void test_failure_keeps_old(void **state) {
    (void)state;
    char path[1024], got[4096];
    path_in(path, sizeof path, "keep.txt");
    write_plain(path, "committed\n");
    ac_atomic_file af;
    assert_int_equal(ac_atomic_open(&af, path), AC_OK);
    fputs("half of a new fi", af.f);
    ac_atomic_abort(&af);
    assert_null(af.f);
    read_all(path, got, sizeof got);
    assert_string_equal(got, "committed\n");
    assert_int_equal(n_files(), 1);
    ac_atomic_abort(&af); /* released: a second abort is a no-op */

    /* a stream whose error flag is set (reading a write-only stream sets it,
     * as a failed write does) must not be committed */
    assert_int_equal(ac_atomic_open(&af, path), AC_OK);
    fputs("new contents\n", af.f);
    (void)fgetc(af.f);
    assert_true(ferror(af.f));
    assert_int_equal(ac_atomic_commit(&af), AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), path));
    read_all(path, got, sizeof got);
    assert_string_equal(got, "committed\n");
    assert_int_equal(n_files(), 1);
}

/* A rename that fails (path is a directory): error naming the path, the
 * directory untouched, the temp file removed. */
static void test_rename_failure(void **state) {
    (void)state;
    char path[1024];
    path_in(path, sizeof path, "adir");
    assert_int_equal(mkdir(path, 0755), 0);
    assert_int_equal(ac_write_file_atomic(path, "x", 1), AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), path));
    assert_non_null(strstr(ac_last_error(), "rename"));
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(n_files(), 1);
    /* ac_rename_durable on its own: a missing source is refused, moved stays 0 */
    char src[1024];
    path_in(src, sizeof src, "missing");
    int moved = 7;
    assert_int_equal(ac_rename_durable(src, path, &moved), AC_ERR_IO);
    assert_int_equal(moved, 0);
    assert_non_null(strstr(ac_last_error(), src));
    /* and a good one moves it */
    char dst[1024], got[64];
    path_in(src, sizeof src, "src.tmp");
    path_in(dst, sizeof dst, "dst");
    write_plain(src, "moved\n");
    assert_int_equal(ac_rename_durable(src, dst, &moved), AC_OK);
    assert_int_equal(moved, 1);
    assert_int_equal(access(src, F_OK), -1);
    read_all(dst, got, sizeof got);
    assert_string_equal(got, "moved\n");
}

/* A directory that cannot take the file: missing, a regular file in its
 * place, or (when not root) one without write permission. */
static void test_unwritable_dir(void **state) {
    (void)state;
    char path[1100];
    path_in(path, sizeof path, "no/such/dir/f.txt");
    ac_atomic_file af;
    assert_int_equal(ac_atomic_open(&af, path), AC_ERR_IO);
    assert_null(af.f);
    ac_atomic_abort(&af); /* no-op on a failed open */
    assert_non_null(strstr(ac_last_error(), path));
    assert_int_equal(ac_write_file_atomic(path, "x", 1), AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), path));

    char file[1024];
    path_in(file, sizeof file, "plain");
    write_plain(file, "a file, not a directory");
    snprintf(path, sizeof path, "%s/f.txt", file);
    assert_int_equal(ac_write_file_atomic(path, "x", 1), AC_ERR_IO);
    assert_non_null(strstr(ac_last_error(), path));
    assert_non_null(strstr(ac_last_error(), strerror(ENOTDIR)));

    char ro[1024];
    path_in(ro, sizeof ro, "readonly");
    assert_int_equal(mkdir(ro, 0555), 0);
    snprintf(path, sizeof path, "%s/f.txt", ro);
    if (geteuid() == 0) {
        print_message("note: running as root: a 0555 directory is writable, that case is skipped\n");
    } else {
        assert_int_equal(ac_write_file_atomic(path, "x", 1), AC_ERR_IO);
        assert_non_null(strstr(ac_last_error(), path));
        assert_non_null(strstr(ac_last_error(), strerror(EACCES)));
    }
    chmod(ro, 0755);
    unlink(path);

    assert_int_equal(ac_write_file_atomic("", "x", 1), AC_ERR_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_buffer_write_replaces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_keeps_old, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rename_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_dir, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
