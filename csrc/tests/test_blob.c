/*
 * test_blob.c - the blob file (it_blob.h): rows round-trip, commits survive
 * a reopen, a killed writer leaves the last committed length with its rows
 * intact, damaged headers and commit records are caught, one writer at a
 * time, a forked child cannot write, views outlive the handle.
 *
 * Expected values come from the row numbers themselves: row i of every test
 * blob holds float(i * 1000 + k) in element k, checked element by element.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "it_blob.h"

#define ROW 5

static char dir[] = "/tmp/it_test_blob_XXXXXX";
static char path[256];

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(dir))
        return -1;
    snprintf(path, sizeof path, "%s/rows.blob", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    rmdir(dir);
    return 0;
}

static int fresh(void **state)
{
    (void)state;
    unlink(path);
    return 0;
}

static it_blob_info row_info(void)
{
    it_blob_info in;
    memset(&in, 0, sizeof in);
    in.dtype = IT_F32;
    strcpy(in.dtype_name, "float32");
    in.ndim = 1;
    in.shape[0] = ROW;
    in.block_size = 8192;
    return in;
}

/* Write rows [first, first + n) holding their own numbers at `at`. */
static int put_rows(it_blob *b, int64_t at, int64_t first, int64_t n, int64_t *len)
{
    float *data = malloc(sizeof(float) * (size_t)(n * ROW) + 1);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < ROW; k++)
            data[i * ROW + k] = (float)((first + i) * 1000 + k);
    it_view v;
    int64_t shape[2] = {n, ROW}, strides[2] = {ROW * 4, 4};
    it_view_make(&v, &it_host_device, data, IT_F32, 2, shape, strides);
    int rc = it_blob_write(b, at, &v, len);
    free(data);
    return rc;
}

/* Every row [0, n) of b holds the number given by want(i). */
static void check_rows(it_blob *b, int64_t n, int64_t (*want)(int64_t))
{
    int64_t len;
    assert_int_equal(it_blob_length(b, &len), IT_OK);
    assert_int_equal(len, n);
    if (!n)
        return;
    it_buffer *buf;
    assert_int_equal(it_blob_read(b, 0, 1, n, &buf), IT_OK);
    const float *got = buf->data;
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < ROW; k++)
            assert_true(got[i * ROW + k] == (float)(want(i) * 1000 + k));
    it_buffer_free(buf);
}

static int64_t same(int64_t i) { return i; }

static void test_rows_round_trip_and_reopen(void **state)
{
    (void)state;
    it_blob_info in = row_info();
    it_blob *b;
    int64_t len;
    assert_int_equal(it_blob_create(path, &in, IT_BLOB_PROCESS, &b), IT_OK);
    for (int64_t i = 0; i < 300; i += 30) /* many small appends: growth ahead */
        assert_int_equal(put_rows(b, i, i, 30, &len), IT_OK);
    assert_int_equal(len, 300);
    check_rows(b, 300, same);
    /* strided reads, both directions, and a gather with negatives */
    it_buffer *buf;
    assert_int_equal(it_blob_read(b, 299, -7, 10, &buf), IT_OK);
    for (int i = 0; i < 10; i++)
        assert_true(((float *)buf->data)[i * ROW] == (float)((299 - 7 * i) * 1000));
    it_buffer_free(buf);
    int64_t idx[4] = {5, -1, 5, 0};
    assert_int_equal(it_blob_gather(b, idx, 4, &buf), IT_OK);
    assert_true(((float *)buf->data)[1 * ROW] == 299000.0f);
    assert_true(((float *)buf->data)[2 * ROW + 3] == 5003.0f);
    it_buffer_free(buf);
    int64_t bad = 300;
    assert_int_equal(it_blob_gather(b, &bad, 1, &buf), IT_ERANGE);
    assert_int_equal(it_blob_read(b, 295, 1, 10, &buf), IT_ERANGE);
    it_blob_close(b);

    /* the file is trimmed to its rows at close, and the rows come back */
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, IT_BLOB_DATA_OFFSET + 300 * ROW * 4);
    assert_int_equal(it_blob_open(path, 0, IT_BLOB_PROCESS, &b), IT_OK);
    assert_int_equal(it_blob_info_of(b)->shape[0], ROW);
    assert_string_equal(it_blob_info_of(b)->dtype_name, "float32");
    check_rows(b, 300, same);
    it_blob_close(b);
}

static int64_t halves(int64_t i) { return i < 10 ? i : i + 1000; }

static void test_overwrite_truncate_regrow(void **state)
{
    (void)state;
    it_blob_info in = row_info();
    it_blob *b;
    int64_t len;
    assert_int_equal(it_blob_create(path, &in, IT_BLOB_FULL, &b), IT_OK);
    assert_int_equal(put_rows(b, 0, 0, 100000, &len), IT_OK);
    assert_int_equal(it_blob_truncate(b, 10), IT_OK);
    check_rows(b, 10, same);
    /* regrowing writes into the punched-out space again */
    assert_int_equal(put_rows(b, 10, 1010, 20, &len), IT_OK);
    check_rows(b, 30, halves);
    assert_int_equal(it_blob_truncate(b, 31), IT_ERANGE);
    assert_int_equal(put_rows(b, 31, 0, 1, &len), IT_ERANGE); /* a gap */
    assert_int_equal(it_blob_sync(b), IT_OK);
    it_blob_close(b);
    assert_int_equal(it_blob_open(path, 1, IT_BLOB_PROCESS, &b), IT_OK);
    check_rows(b, 30, halves);
    it_blob_close(b);
}

static void test_one_writer_many_readers(void **state)
{
    (void)state;
    it_blob_info in = row_info();
    it_blob *w, *w2, *r;
    int64_t len;
    assert_int_equal(it_blob_create(path, &in, IT_BLOB_PROCESS, &w), IT_OK);
    assert_int_equal(it_blob_open(path, 1, IT_BLOB_PROCESS, &w2), IT_EIO);
    assert_int_equal(it_blob_errno(), EWOULDBLOCK);
    assert_int_equal(it_blob_open(path, 0, IT_BLOB_PROCESS, &r), IT_OK);
    check_rows(r, 0, same);
    /* the reader sees each commit, including growth past its mapping */
    for (int64_t i = 0; i < 50000; i += 10000) {
        assert_int_equal(put_rows(w, i, i, 10000, &len), IT_OK);
        check_rows(r, i + 10000, same);
    }
    /* a view held past close stays readable */
    it_blob_map *ref;
    const float *rows = (const float *)it_blob_rows(r, &ref);
    it_blob_close(r);
    assert_true(rows[49999 * ROW + 4] == 49999004.0f);
    it_blob_map_unref(ref);
    /* a view of the writer's mapping held past its close does not keep the
     * writer's lock (the mapping keeps the open file, so close unlocks) */
    rows = (const float *)it_blob_rows(w, &ref);
    it_blob_close(w);
    assert_int_equal(it_blob_open(path, 1, IT_BLOB_PROCESS, &w2), IT_OK);
    assert_int_equal(put_rows(w2, 0, 7, 1, &len), IT_OK);
    assert_true(rows[4] == 7004.0f); /* the old view sees the new writer's row */
    it_blob_map_unref(ref);
    it_blob_close(w2);
}

static void test_forked_child_cannot_write(void **state)
{
    (void)state;
    it_blob_info in = row_info();
    it_blob *b;
    int64_t len;
    assert_int_equal(it_blob_create(path, &in, IT_BLOB_PROCESS, &b), IT_OK);
    assert_int_equal(put_rows(b, 0, 0, 3, &len), IT_OK);
    pid_t pid = fork();
    if (pid == 0) {
        int64_t n;
        int ok = it_blob_length(b, &n) == IT_OK && n == 3 && put_rows(b, 3, 3, 1, &n) == IT_ESTATE &&
                 it_blob_truncate(b, 0) == IT_ESTATE;
        it_blob_close(b); /* must not unlock or trim the parent's file */
        _exit(ok ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    it_blob *w2;
    assert_int_equal(it_blob_open(path, 1, IT_BLOB_PROCESS, &w2), IT_EIO); /* still locked */
    check_rows(b, 3, same);
    it_blob_close(b);
}

/* A child writes 40 rows, then 10 more and dies at checkpoint `point`. */
static void crash_at(int point, int64_t want_len)
{
    unlink(path);
    it_blob_info in = row_info();
    pid_t pid = fork();
    if (pid == 0) {
        it_blob *b;
        int64_t len;
        if (it_blob_create(path, &in, IT_BLOB_PROCESS, &b) || put_rows(b, 0, 0, 40, &len))
            _exit(1);
        it_blob_crash_at(point);
        put_rows(b, 40, 40, 10, &len);
        _exit(2); /* not reached */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 86);
    it_blob *b;
    assert_int_equal(it_blob_open(path, 1, IT_BLOB_PROCESS, &b), IT_OK);
    check_rows(b, want_len, same);
    int64_t len;
    assert_int_equal(put_rows(b, want_len, want_len, 5, &len), IT_OK); /* still usable */
    check_rows(b, want_len + 5, same);
    it_blob_close(b);
}

static void test_killed_writer_keeps_committed_rows(void **state)
{
    (void)state;
    crash_at(1, 40); /* grown, nothing copied */
    crash_at(2, 40); /* copied, not committed */
    crash_at(3, 40); /* commit record torn: the older one wins */
}

static void flip(off_t at)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, at), 1);
    c ^= 0x10;
    assert_int_equal(pwrite(fd, &c, 1, at), 1);
    close(fd);
}

static void test_damage_is_caught(void **state)
{
    (void)state;
    it_blob_info in = row_info();
    it_blob *b;
    int64_t len;
    assert_int_equal(it_blob_create(path, &in, IT_BLOB_PROCESS, &b), IT_OK);
    assert_int_equal(put_rows(b, 0, 0, 7, &len), IT_OK); /* seq 1: slot B */
    assert_int_equal(put_rows(b, 7, 7, 3, &len), IT_OK); /* seq 2: slot A */
    it_blob_close(b);
    flip(IT_BLOB_SLOT_A + 9); /* the newer record's length: the older one wins */
    assert_int_equal(it_blob_open(path, 0, IT_BLOB_PROCESS, &b), IT_OK);
    check_rows(b, 7, same);
    it_blob_close(b);
    flip(IT_BLOB_SLOT_B + 2); /* both damaged */
    assert_int_equal(it_blob_open(path, 0, IT_BLOB_PROCESS, &b), IT_ECORRUPT);
    flip(IT_BLOB_SLOT_B + 2);
    flip(30); /* the dtype name: the superblock's checksum fails */
    assert_int_equal(it_blob_open(path, 0, IT_BLOB_PROCESS, &b), IT_ECORRUPT);
    flip(30);
    assert_int_equal(truncate(path, IT_BLOB_DATA_OFFSET + 3 * ROW * 4), 0); /* shorter than 7 rows */
    assert_int_equal(it_blob_open(path, 0, IT_BLOB_PROCESS, &b), IT_ECORRUPT);
    assert_int_equal(truncate(path, 100), 0);
    assert_int_equal(it_blob_open(path, 0, IT_BLOB_PROCESS, &b), IT_ECORRUPT);
    assert_int_equal(it_blob_create(path, &in, IT_BLOB_PROCESS, &b), IT_EIO); /* exists */
    assert_int_equal(it_blob_errno(), EEXIST);
    unlink(path);
    assert_int_equal(it_blob_open(path, 0, IT_BLOB_PROCESS, &b), IT_EIO);
    assert_int_equal(it_blob_errno(), ENOENT);
}

static void test_crc32_matches_zlib(void **state)
{
    (void)state;
    /* zlib.crc32(b"123456789") == 0xCBF43926, the check value of CRC-32 */
    assert_int_equal(it_crc32("123456789", 9), 0xCBF43926u);
    assert_int_equal(it_crc32("", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_rows_round_trip_and_reopen, fresh),
        cmocka_unit_test_setup(test_overwrite_truncate_regrow, fresh),
        cmocka_unit_test_setup(test_one_writer_many_readers, fresh),
        cmocka_unit_test_setup(test_forked_child_cannot_write, fresh),
        cmocka_unit_test_setup(test_killed_writer_keeps_committed_rows, fresh),
        cmocka_unit_test_setup(test_damage_is_caught, fresh),
        cmocka_unit_test(test_crc32_matches_zlib),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
