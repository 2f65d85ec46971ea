/* The event log: append, group commit, replay, reopen, torn and corrupt tails, segment
 * rolling and removal, a failing disk and its recovery. */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>

#include "log.h"

static char dir[64];

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/jd-log-test-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
    return 0;
}

typedef struct seen {
    uint64_t first, last, count;
    char last_rec[64];
} seen;

static int visit(uint64_t lsn, const void *rec, size_t len, void *ud)
{
    seen *s = ud;
    if (!s->count)
        s->first = lsn;
    s->last = lsn;
    s->count++;
    snprintf(s->last_rec, sizeof s->last_rec, "%.*s", (int)len, (const char *)rec);
    return 0;
}

static jd_log *open_log(jd_log_info *info, size_t seg)
{
    char err[256];
    jd_log_opts o = {.segment_bytes = seg, .no_sync = 1};
    jd_log *l = jd_log_open(dir, &o, info, err, sizeof err);
    if (!l)
        fail_msg("open: %s", err);
    return l;
}

static void append_n(jd_log *l, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char rec[32];
        int len = snprintf(rec, sizeof rec, "record-%d", i);
        uint64_t lsn;
        assert_int_equal(jd_log_append(l, rec, (size_t)len, &lsn), 0);
        assert_int_equal(lsn, (uint64_t)i);
    }
}

static void test_append_replay_reopen(void **state)
{
    (void)state;
    jd_log_info info;
    jd_log *l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 0);
    append_n(l, 1, 100);
    assert_int_equal(jd_log_durable(l), 0); /* queued, not durable */
    assert_int_equal(jd_log_sync(l), 0);
    assert_int_equal(jd_log_durable(l), 100);
    seen s = {0};
    assert_int_equal(jd_log_replay(l, 40, visit, &s), 0);
    assert_int_equal(s.first, 40);
    assert_int_equal(s.count, 61);
    assert_string_equal(s.last_rec, "record-100");
    jd_log_close(l);
    l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 100);
    assert_int_equal(info.cut_bytes, 0);
    append_n(l, 101, 5); /* numbering continues */
    jd_log_sync(l);
    memset(&s, 0, sizeof s);
    jd_log_replay(l, 1, visit, &s);
    assert_int_equal(s.count, 105);
    jd_log_close(l);
}

static char *only_segment(char *out, size_t n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    out[0] = '\0';
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".log"))
            snprintf(out, n, "%s/%s", dir, e->d_name);
    closedir(d);
    return out;
}

/* A batch takes consecutive LSNs under one lock; its records' CRCs, computed apart from
 * their LSNs, must give what a reader checks; a bad one is caught at open. */
static void test_batch(void **state)
{
    (void)state;
    jd_log_info info;
    jd_log *l = open_log(&info, 0);
    append_n(l, 1, 3);
    static char big[100000];
    memset(big, 'b', sizeof big);
    jd_log_rec recs[3] = {
        {"", 0, jd_log_payload_crc("", 0)},
        {big, sizeof big, jd_log_payload_crc(big, sizeof big)},
        {"tail", 4, jd_log_payload_crc("tail", 4)},
    };
    uint64_t first = 0;
    assert_int_equal(jd_log_append_batch(l, recs, 3, &first), 0);
    assert_int_equal(first, 4);
    jd_log_rec huge = {big, (size_t)65 << 20, 0}; /* over the record limit: nothing queued */
    assert_int_equal(jd_log_append_batch(l, &huge, 1, &first), -1);
    assert_int_equal(jd_log_sync(l), 0);
    assert_int_equal(jd_log_durable(l), 6);
    seen s = {0};
    assert_int_equal(jd_log_replay(l, 1, visit, &s), 0);
    assert_int_equal(s.count, 6);
    assert_string_equal(s.last_rec, "tail");
    recs[0] = (jd_log_rec){"bad", 3, jd_log_payload_crc("bax", 3)};
    assert_int_equal(jd_log_append_batch(l, recs, 1, &first), 0);
    assert_int_equal(first, 7);
    jd_log_sync(l);
    jd_log_close(l);
    l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 6); /* the record with the wrong CRC is cut */
    assert_true(strstr(info.cut_reason, "checksum") != NULL);
    jd_log_close(l);
}

static void test_torn_tail(void **state)
{
    (void)state;
    jd_log *l = open_log(NULL, 0);
    append_n(l, 1, 10);
    jd_log_sync(l);
    jd_log_close(l);
    char p[512];
    only_segment(p, sizeof p);
    struct stat st;
    stat(p, &st);
    /* cut the last record in half, as a crash mid-write would */
    assert_int_equal(truncate(p, st.st_size - 5), 0);
    jd_log_info info;
    l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 9);
    assert_true(info.cut_bytes > 0);
    assert_non_null(strstr(info.cut_reason, "torn record"));
    seen s = {0};
    jd_log_replay(l, 1, visit, &s);
    assert_int_equal(s.count, 9);
    append_n(l, 10, 1); /* lsn 10 again, now whole */
    jd_log_sync(l);
    jd_log_close(l);
    l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 10);
    assert_int_equal(info.cut_bytes, 0);
    jd_log_close(l);
}

static void test_bit_flip(void **state)
{
    (void)state;
    jd_log *l = open_log(NULL, 0);
    append_n(l, 1, 20);
    jd_log_sync(l);
    jd_log_close(l);
    char p[512];
    only_segment(p, sizeof p);
    struct stat st;
    stat(p, &st);
    int fd = open(p, O_RDWR);
    unsigned char c;
    off_t at = st.st_size - 3; /* inside the payload of the last record */
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 0x10;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    close(fd);
    jd_log_info info;
    l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 19);
    assert_non_null(strstr(info.cut_reason, "checksum mismatch"));
    seen s = {0};
    assert_int_equal(jd_log_replay(l, 1, visit, &s), 0);
    assert_int_equal(s.last, 19);
    jd_log_close(l);
}

/* A segment an older journeyd wrote, its CRCs over (lsn, payload), still reads in full. */
static void test_older_checksums(void **state)
{
    (void)state;
    jd_log *l = open_log(NULL, 0);
    append_n(l, 1, 5);
    jd_log_sync(l);
    jd_log_close(l);
    char p[512];
    only_segment(p, sizeof p);
    int fd = open(p, O_RDWR);
    unsigned char b[4096];
    ssize_t n = pread(fd, b, sizeof b, 0);
    assert_true(n > 0);
    for (size_t off = 0; off + 16 <= (size_t)n;) { /* rewrite every CRC the old way */
        uint32_t len =
            (uint32_t)b[off] | (uint32_t)b[off + 1] << 8 | (uint32_t)b[off + 2] << 16 | (uint32_t)b[off + 3] << 24;
        uLong c = crc32(crc32(crc32(0L, Z_NULL, 0), b + off + 8, 8), b + off + 16, (uInt)len);
        for (int i = 0; i < 4; i++)
            b[off + 4 + i] = (unsigned char)(c >> (8 * i));
        off += 16 + len;
    }
    assert_int_equal(pwrite(fd, b, (size_t)n, 0), n);
    close(fd);
    jd_log_info info;
    l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 5);
    assert_int_equal(info.cut_bytes, 0);
    seen s = {0};
    assert_int_equal(jd_log_replay(l, 1, visit, &s), 0);
    assert_int_equal(s.count, 5);
    append_n(l, 6, 1); /* new records, the new way, after them */
    jd_log_sync(l);
    jd_log_close(l);
    l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 6);
    jd_log_close(l);
}

static void test_segments(void **state)
{
    (void)state;
    jd_log_info info;
    jd_log *l = open_log(&info, 1000); /* tiny segments */
    for (int g = 0; g < 20; g++) {
        append_n(l, g * 10 + 1, 10);
        jd_log_sync(l);
    }
    jd_log_close(l);
    l = open_log(&info, 1000);
    assert_true(info.segments > 3);
    assert_int_equal(info.last_lsn, 200);
    seen s = {0};
    jd_log_replay(l, 1, visit, &s);
    assert_int_equal(s.count, 200);
    assert_int_equal(jd_log_remove_before(l, 150), 0);
    jd_log_close(l);
    l = open_log(&info, 1000);
    assert_true(info.first_lsn <= 150);
    assert_true(info.first_lsn > 1);
    memset(&s, 0, sizeof s);
    jd_log_replay(l, 150, visit, &s);
    assert_int_equal(s.first, 150);
    assert_int_equal(s.last, 200);
    jd_log_close(l);
}

static void test_writer_thread(void **state)
{
    (void)state;
    jd_log *l = open_log(NULL, 0);
    int efd = eventfd(0, 0);
    assert_int_equal(jd_log_start(l, efd), 0);
    append_n(l, 1, 1000);
    while (jd_log_durable(l) < 1000) {
        uint64_t v;
        assert_int_equal(read(efd, &v, sizeof v), 8); /* one notification per group */
    }
    jd_log_close(l);
    close(efd);
    jd_log_info info;
    l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 1000);
    jd_log_close(l);
}

/* A disk that refuses writes (here: the file size limit, like a full disk): appends are
 * refused with a reason, nothing acknowledged is lost, and it recovers. */
static void test_failing_disk(void **state)
{
    (void)state;
    signal(SIGXFSZ, SIG_IGN);
    jd_log *l = open_log(NULL, 0);
    append_n(l, 1, 10);
    jd_log_sync(l);
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 300; /* the 10 records already take more */
    setrlimit(RLIMIT_FSIZE, &lim);
    append_n(l, 11, 5);
    assert_int_not_equal(jd_log_sync(l), 0);
    assert_int_equal(jd_log_durable(l), 10);
    char why[128];
    assert_true(strlen(jd_log_error(l, why, sizeof why)) > 0);
    uint64_t lsn;
    assert_int_equal(jd_log_append(l, "x", 1, &lsn), -1); /* refused while failing */
    setrlimit(RLIMIT_FSIZE, &old);
    assert_int_equal(jd_log_sync(l), 0); /* the kept group goes through */
    assert_int_equal(jd_log_durable(l), 15);
    assert_string_equal(jd_log_error(l, why, sizeof why), "");
    jd_log_close(l);
    jd_log_info info;
    l = open_log(&info, 0);
    assert_int_equal(info.last_lsn, 15);
    assert_int_equal(info.cut_bytes, 0);
    jd_log_close(l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_replay_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bit_flip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_older_checksums, setup, teardown),
        cmocka_unit_test_setup_teardown(test_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_disk, setup, teardown),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
