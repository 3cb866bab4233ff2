/*
 * test_h5journal.c - the crash-safe HDF5 driver (it_h5journal.h).
 *
 * A deterministic workload drives most tests: iteration i rewrites, partly
 * rewrites, deletes or (re)creates each of NSLOT chunked gzip datasets, with
 * values and shapes derived from i, then stores i in the root attribute
 * "committed" and flushes.  A model replays the same iterations in memory,
 * so after a crash the file must equal the model at the iteration its
 * "committed" attribute names - every dataset, value and attribute.
 *
 * Crashes are real: a forked child runs the workload and is SIGKILLed at a
 * random moment, or _exit()s from the driver's test hook at a named point
 * of a commit.  Children never touch cmocka; they report through exit codes.
 */
#define _GNU_SOURCE /* fork, kill, mkdtemp, nanosleep */

#include "it_test_util.h"
#include "it_h5journal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NSLOT 6
#define MAXR 40
#define MAXC 36
#define CHUNK 12
#define HOOK_EXIT 42 /* a child left through the hook */
#define CHILD_FAIL 3 /* a child's HDF5 call failed */

static char tmpdir[256];

/* ------------------------------------------------------------------ */
/* files and property lists                                             */

static const char *tpath(const char *name)
{
    static char buf[4][sizeof tmpdir + 260];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static const char *jpath_of(const char *path)
{
    static char buf[400];
    snprintf(buf, sizeof buf, "%s-journal", path);
    return buf;
}

/* Size of a file, -1 when it does not exist. */
static long long fsize(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

/* The whole file in a malloc'ed buffer (*n bytes); NULL if missing. */
static unsigned char *slurp(const char *path, size_t *n)
{
    long long sz = fsize(path);
    if (sz < 0)
        return NULL;
    unsigned char *b = malloc((size_t)sz + 1);
    assert_non_null(b);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    assert_int_equal(fread(b, 1, (size_t)sz, fp), (size_t)sz);
    fclose(fp);
    *n = (size_t)sz;
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static hid_t jfapl(void)
{
    hid_t p = H5Pcreate(H5P_FILE_ACCESS);
    assert_true(p >= 0);
    EXPECT_OK(it_h5j_set_fapl(p));
    return p;
}

static hid_t sec2fapl(void)
{
    hid_t p = H5Pcreate(H5P_FILE_ACCESS);
    assert_true(p >= 0);
    assert_true(H5Pset_fapl_sec2(p) >= 0);
    return p;
}

static hid_t open_with(const char *path, unsigned flags, int journal)
{
    hid_t p = journal ? jfapl() : sec2fapl();
    hid_t f = H5Fopen(path, flags, p);
    H5Pclose(p);
    return f;
}

static hid_t open_ok(const char *path, unsigned flags, int journal)
{
    hid_t f = open_with(path, flags, journal);
    if (f < 0)
        fail_msg("H5Fopen(%s, %s, %s) failed", path, flags & H5F_ACC_RDWR ? "rw" : "ro",
                 journal ? "journal" : "sec2");
    return f;
}

/* ------------------------------------------------------------------ */
/* the workload and its model                                           */

typedef struct slot {
    int exists, rows, cols;
    int64_t version; /* the last iteration that wrote it */
    int32_t v[MAXR * MAXC];
} slot;

typedef struct model {
    int64_t k; /* iterations applied */
    slot s[NSLOT];
} model;

typedef enum { OP_NONE, OP_WRITE, OP_PARTIAL, OP_DELETE, OP_CREATE } op_kind;

static uint64_t mix(uint64_t a, uint64_t b)
{
    rng_t r = {a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull)};
    return rng_next(&r);
}

/* Compressibility changes with i, so rewritten chunks change size and
 * HDF5 moves them (freeing and reusing space below the committed EOA). */
static int32_t cell(int64_t i, int s, int r, int c)
{
    uint64_t h = mix((uint64_t)i * 8 + (uint64_t)s, (uint64_t)(r * 1000 + c));
    switch (i % 3) {
    case 0: return (int32_t)(r * 100 + c + i);
    case 1: return (int32_t)(h & 0xff);
    default: return (int32_t)h;
    }
}

/* Every tenth iteration rewrites or creates every slot (a big commit);
 * five later every slot goes, which shrinks the file. */
static op_kind op_for(int64_t i, int s, const slot *sl)
{
    if (i % 10 == 0)
        return sl->exists ? OP_WRITE : OP_CREATE;
    if (i % 10 == 5)
        return sl->exists ? OP_DELETE : OP_NONE;
    uint64_t h = mix((uint64_t)i, (uint64_t)s + 77) % 10;
    if (h < 3)
        return OP_NONE;
    if (h < 6)
        return sl->exists ? OP_WRITE : OP_CREATE;
    if (h < 8)
        return sl->exists ? OP_PARTIAL : OP_NONE;
    return h < 9 ? (sl->exists ? OP_DELETE : OP_NONE) : OP_CREATE;
}

/* Rows [*r0, *r1) that op touches in the slot (all for WRITE/CREATE). */
static void op_rows(int64_t i, int s, op_kind op, const slot *sl, int *r0, int *r1)
{
    *r0 = 0;
    *r1 = sl->rows;
    if (op == OP_PARTIAL) {
        *r0 = (int)(mix((uint64_t)i, (uint64_t)s + 500) % (uint64_t)sl->rows);
        *r1 = *r0 + 1 + (int)(mix((uint64_t)i, (uint64_t)s + 900) % (uint64_t)(sl->rows - *r0));
    }
}

/* Apply op to the model slot (values of rows r0..r1 from iteration i). */
static void model_op(int64_t i, int s, op_kind op, slot *sl, int *r0, int *r1)
{
    if (op == OP_DELETE) {
        sl->exists = 0;
        return;
    }
    if (op == OP_CREATE) {
        sl->exists = 1;
        sl->rows = 4 + (int)(mix((uint64_t)i, (uint64_t)s + 100) % (MAXR - 3));
        sl->cols = 4 + (int)(mix((uint64_t)i, (uint64_t)s + 200) % (MAXC - 3));
    }
    op_rows(i, s, op, sl, r0, r1);
    for (int r = *r0; r < *r1; r++)
        for (int c = 0; c < sl->cols; c++)
            sl->v[r * sl->cols + c] = cell(i, s, r, c);
    sl->version = i;
}

static int write_attr_i64(hid_t obj, const char *name, int64_t v)
{
    hid_t a = H5Aexists(obj, name) > 0 ? H5Aopen(obj, name, H5P_DEFAULT) : -1;
    if (a < 0) {
        hid_t sp = H5Screate(H5S_SCALAR);
        a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        H5Sclose(sp);
    }
    if (a < 0)
        return -1;
    int rc = H5Awrite(a, H5T_NATIVE_INT64, &v) < 0 ? -1 : 0;
    return H5Aclose(a) < 0 ? -1 : rc;
}

static int read_attr_i64(hid_t obj, const char *name, int64_t *v)
{
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0)
        return -1;
    int rc = H5Aread(a, H5T_NATIVE_INT64, v) < 0 ? -1 : 0;
    H5Aclose(a);
    return rc;
}

static hid_t create_slot(hid_t f, const char *name, const slot *sl)
{
    hsize_t dims[2] = {(hsize_t)sl->rows, (hsize_t)sl->cols};
    hsize_t ch[2] = {IT_MIN(dims[0], CHUNK), IT_MIN(dims[1], CHUNK)}; /* HDF5 1.10: chunk <= dims */
    hid_t sp = H5Screate_simple(2, dims, NULL), pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, 2, ch);
    H5Pset_deflate(pl, 1);
    hid_t d = H5Dcreate2(f, name, H5T_STD_I32LE, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Sclose(sp);
    H5Pclose(pl);
    return d;
}

/* Mirror one model op into the file (the model slot already updated). */
static int file_op(hid_t f, int s, op_kind op, const slot *sl, int r0, int r1)
{
    char name[16];
    snprintf(name, sizeof name, "d%d", s);
    if (op == OP_DELETE || (op == OP_CREATE && H5Lexists(f, name, H5P_DEFAULT) > 0))
        if (H5Ldelete(f, name, H5P_DEFAULT) < 0)
            return -1;
    if (op == OP_DELETE)
        return 0;
    hid_t d = op == OP_CREATE ? create_slot(f, name, sl) : H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0)
        return -1;
    hsize_t start[2] = {(hsize_t)r0, 0}, count[2] = {(hsize_t)(r1 - r0), (hsize_t)sl->cols};
    hid_t fs = H5Dget_space(d), ms = H5Screate_simple(2, count, NULL);
    int rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0 ||
                     H5Dwrite(d, H5T_NATIVE_INT32, ms, fs, H5P_DEFAULT, sl->v + r0 * sl->cols) < 0 ||
                     write_attr_i64(d, "version", sl->version) < 0
                 ? -1
                 : 0;
    H5Sclose(ms);
    H5Sclose(fs);
    return H5Dclose(d) < 0 ? -1 : rc;
}

/* Iteration i: on the model, and on the file when f >= 0 (not flushed). */
static int step(model *m, int64_t i, hid_t f)
{
    for (int s = 0; s < NSLOT; s++) {
        slot *sl = &m->s[s];
        op_kind op = op_for(i, s, sl);
        int r0 = 0, r1 = 0;
        if (op == OP_NONE)
            continue;
        model_op(i, s, op, sl, &r0, &r1);
        if (f >= 0 && file_op(f, s, op, sl, r0, r1) < 0)
            return -1;
    }
    m->k = i;
    return f >= 0 ? write_attr_i64(f, "committed", i) : 0;
}

static void model_advance(model *m, int64_t k)
{
    while (m->k < k)
        step(m, m->k + 1, -1);
}

/* A new file at iteration 0 (no datasets), model reset to match. */
static void make_base(const char *path, model *m, int journal)
{
    memset(m, 0, sizeof *m);
    hid_t p = journal ? jfapl() : sec2fapl();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, p);
    H5Pclose(p);
    assert_true(f >= 0);
    assert_int_equal(write_attr_i64(f, "committed", 0), 0);
    assert_true(H5Fclose(f) >= 0);
}

/* Run iterations m->k+1 .. k in this process, flushing each. */
static void run_steps(const char *path, model *m, int64_t k, int journal)
{
    hid_t f = open_ok(path, H5F_ACC_RDWR, journal);
    while (m->k < k) {
        assert_int_equal(step(m, m->k + 1, f), 0);
        assert_true(H5Fflush(f, H5F_SCOPE_LOCAL) >= 0);
    }
    assert_true(H5Fclose(f) >= 0);
}

static void check_slot(hid_t f, int s, const slot *sl)
{
    char name[16];
    snprintf(name, sizeof name, "d%d", s);
    if ((H5Lexists(f, name, H5P_DEFAULT) > 0) != sl->exists)
        fail_msg("%s %s, expected %s", name, sl->exists ? "missing" : "present",
                 sl->exists ? "present" : "absent");
    if (!sl->exists)
        return;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(d >= 0);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 0};
    assert_int_equal(H5Sget_simple_extent_dims(sp, dims, NULL), 2);
    H5Sclose(sp);
    assert_int_equal(dims[0], sl->rows);
    assert_int_equal(dims[1], sl->cols);
    int32_t *buf = calloc((size_t)(sl->rows * sl->cols), sizeof *buf);
    assert_non_null(buf);
    assert_true(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    for (int j = 0; j < sl->rows * sl->cols; j++)
        if (buf[j] != sl->v[j])
            fail_msg("%s[%d][%d] = %d, expected %d (version %lld)", name, j / sl->cols,
                     j % sl->cols, buf[j], sl->v[j], (long long)sl->version);
    free(buf);
    int64_t ver = -1;
    assert_int_equal(read_attr_i64(d, "version", &ver), 0);
    assert_int_equal(ver, sl->version);
    H5Dclose(d);
}

/* The open file equals the model: counter, links, every slot. */
static void check_model(hid_t f, const model *m)
{
    int64_t k = -1;
    assert_int_equal(read_attr_i64(f, "committed", &k), 0);
    assert_int_equal(k, m->k);
    H5G_info_t gi;
    assert_true(H5Gget_info(f, &gi) >= 0);
    hsize_t n = 0;
    for (int s = 0; s < NSLOT; s++) {
        n += (hsize_t)m->s[s].exists;
        check_slot(f, s, &m->s[s]);
    }
    assert_int_equal(gi.nlinks, n);
}

static void check_path(const char *path, unsigned flags, int journal, const model *m)
{
    hid_t f = open_ok(path, flags, journal);
    check_model(f, m);
    assert_true(H5Fclose(f) >= 0);
}

/* ------------------------------------------------------------------ */
/* children                                                             */

static long hook_countdown; /* the hook exits when this reaches 0 */
static const char *hook_point;

static void exit_hook(const char *point)
{
    if (hook_point && strcmp(point, hook_point) == 0 && --hook_countdown == 0)
        _exit(HOOK_EXIT);
}

/* Widens the window inside commits so random kills land there too. */
static void dawdle_hook(const char *point)
{
    (void)point;
    struct timespec ts = {0, 300000};
    nanosleep(&ts, NULL);
}

/* In a child: open path, check it is at m->k, tell the parent (if fd >= 0),
 * then run iterations; stop after `last` (flushing each one).  The hook is
 * armed only after the open, which commits a superblock rewrite itself. */
static void child_workload(const char *path, model *m, int ready_fd, int64_t last)
{
    hid_t p = H5Pcreate(H5P_FILE_ACCESS);
    if (p < 0 || it_h5j_set_fapl(p) != IT_OK)
        _exit(CHILD_FAIL);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, p);
    int64_t k = -1;
    if (f < 0 || read_attr_i64(f, "committed", &k) < 0 || k != m->k)
        _exit(CHILD_FAIL + 1);
    if (ready_fd >= 0 && write(ready_fd, "r", 1) != 1)
        _exit(CHILD_FAIL + 2);
    if (hook_point)
        it_h5j_set_test_hook(exit_hook);
    for (int64_t i = m->k + 1; i <= last; i++)
        if (step(m, i, f) < 0 || H5Fflush(f, H5F_SCOPE_LOCAL) < 0)
            _exit(CHILD_FAIL);
    if (H5Fclose(f) < 0)
        _exit(CHILD_FAIL);
    _exit(0);
}

/* fork(); the child dies with the parent, so a failed assertion in the
 * parent never leaves a writer running. */
static pid_t fork_child(void)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    return pid;
}

static int wait_child(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0)
        assert_int_equal(errno, EINTR);
    return st;
}

static void expect_exit(int st, int code, const char *what)
{
    if (!WIFEXITED(st) || WEXITSTATUS(st) != code)
        fail_msg("%s: child ended with status 0x%x, expected exit %d", what, st, code);
}

/* Run iteration m->k+1 in a child that leaves at the n-th `point` of its
 * commit; returns the child's wait status. */
static int crash_at(const char *path, const model *m, const char *point, long n)
{
    pid_t pid = fork_child();
    if (pid == 0) {
        model cm = *m;
        hook_point = point;
        hook_countdown = n;
        child_workload(path, &cm, -1, m->k + 1);
    }
    return wait_child(pid);
}

/* ------------------------------------------------------------------ */
/* tests                                                                */

static void write_2d(hid_t f, const char *name, hid_t type, const void *buf, hsize_t r, hsize_t c)
{
    hsize_t dims[2] = {r, c}, ch[2] = {7, 5};
    hid_t sp = H5Screate_simple(2, dims, NULL), pl = H5Pcreate(H5P_DATASET_CREATE);
    assert_true(H5Pset_chunk(pl, 2, ch) >= 0);
    assert_true(H5Pset_deflate(pl, 6) >= 0);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    assert_true(d >= 0);
    assert_true(H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    assert_int_equal(write_attr_i64(d, "rows", (int64_t)r), 0);
    H5Dclose(d);
    H5Sclose(sp);
    H5Pclose(pl);
}

static void roundtrip_fill(int32_t *a, double *b, int salt)
{
    for (int j = 0; j < 50 * 30; j++)
        a[j] = (j * 7 + salt) % 113;
    for (int j = 0; j < 20 * 40; j++)
        b[j] = j * 0.25 - salt;
}

static void roundtrip_check(const char *path, int journal, int salt)
{
    int32_t a[50 * 30], ra[50 * 30];
    double b[20 * 40], rb[20 * 40];
    roundtrip_fill(a, b, salt);
    hid_t f = open_ok(path, H5F_ACC_RDONLY, journal);
    hid_t d = H5Dopen2(f, "ints", H5P_DEFAULT);
    assert_true(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, ra) >= 0);
    int64_t rows = 0;
    assert_int_equal(read_attr_i64(d, "rows", &rows), 0);
    assert_int_equal(rows, 50);
    H5Dclose(d);
    d = H5Dopen2(f, "grp/doubles", H5P_DEFAULT);
    assert_true(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, rb) >= 0);
    H5Dclose(d);
    assert_memory_equal(a, ra, sizeof a);
    assert_memory_equal(b, rb, sizeof b);
    int64_t tag = 0;
    assert_int_equal(read_attr_i64(f, "salt", &tag), 0);
    assert_int_equal(tag, salt);
    assert_true(H5Fclose(f) >= 0);
}

/* Write with the driver, read with it and with sec2; then the other way. */
static void test_roundtrip(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("roundtrip.h5");
    int32_t a[50 * 30];
    double b[20 * 40];
    roundtrip_fill(a, b, 3);
    hid_t p = jfapl();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, p);
    H5Pclose(p);
    assert_true(f >= 0);
    write_2d(f, "ints", H5T_NATIVE_INT32, a, 50, 30);
    hid_t g = H5Gcreate2(f, "grp", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    write_2d(g, "doubles", H5T_NATIVE_DOUBLE, b, 20, 40);
    H5Gclose(g);
    assert_int_equal(write_attr_i64(f, "salt", 3), 0);
    assert_true(H5Fclose(f) >= 0);
    assert_int_equal(fsize(jpath_of(path)), -1); /* a clean close leaves no journal */
    roundtrip_check(path, 1, 3);
    roundtrip_check(path, 0, 3);

    /* sec2 rewrites it in place; the driver reads the result. */
    roundtrip_fill(a, b, 5);
    f = open_ok(path, H5F_ACC_RDWR, 0);
    hid_t d = H5Dopen2(f, "ints", H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, a) >= 0);
    H5Dclose(d);
    d = H5Dopen2(f, "grp/doubles", H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0);
    H5Dclose(d);
    assert_int_equal(write_attr_i64(f, "salt", 5), 0);
    assert_true(H5Fclose(f) >= 0);
    roundtrip_check(path, 1, 5);

    /* The workload through the driver, checked with both drivers.  HDF5
     * allocates the same space whatever the driver, so the file must end
     * where sec2's does: the close committed its last EOA and truncate. */
    static model m, ms;
    for (int64_t k = 4; k <= 26; k += 11) {
        make_base(tpath("roundtrip2.h5"), &m, 1);
        run_steps(tpath("roundtrip2.h5"), &m, k, 1);
        check_path(tpath("roundtrip2.h5"), H5F_ACC_RDONLY, 1, &m);
        check_path(tpath("roundtrip2.h5"), H5F_ACC_RDONLY, 0, &m);
        make_base(tpath("roundtrip3.h5"), &ms, 0);
        run_steps(tpath("roundtrip3.h5"), &ms, k, 0);
        assert_int_equal(fsize(tpath("roundtrip2.h5")), fsize(tpath("roundtrip3.h5")));
        assert_int_equal(fsize(jpath_of(tpath("roundtrip2.h5"))), -1);
    }
    LEAK_END;
}

/* Kill the writer at random moments; the file is always at some commit. */
static void test_crash_atomicity(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("crash.h5");
    static model m; /* large: keep it off the stack */
    make_base(path, &m, 1);
    const char *env = getenv("IT_H5J_KILLS");
    int kills = env && atoi(env) > 0 ? atoi(env) : 40;
    rng_t rng = {2024};
    int pending = 0;
    int64_t first_k = -1;
    for (int run = 0; run < kills; run++) {
        int pfd[2];
        assert_int_equal(pipe(pfd), 0);
        pid_t pid = fork_child();
        if (pid == 0) {
            close(pfd[0]);
            if (run % 2)
                it_h5j_set_test_hook(dawdle_hook);
            child_workload(path, &m, pfd[1], INT64_MAX);
        }
        close(pfd[1]);
        char c;
        if (read(pfd[0], &c, 1) != 1) {
            close(pfd[0]);
            fail_msg("run %d: the child failed before starting (status 0x%x)", run,
                     wait_child(pid));
        }
        close(pfd[0]);
        struct timespec ts = {0, (long)rng_range(&rng, 0, 30) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int st = wait_child(pid);
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
            fail_msg("run %d: the child ended on its own (status 0x%x)", run, st);
        pending += fsize(jpath_of(path)) > 0;

        /* Read-only first (a pending journal is served from memory), then
         * read-write (replayed), then plain sec2. */
        hid_t f = open_ok(path, H5F_ACC_RDONLY, 1);
        int64_t k = -1;
        assert_int_equal(read_attr_i64(f, "committed", &k), 0);
        if (k < m.k)
            fail_msg("run %d: committed went back from %lld to %lld", run, (long long)m.k,
                     (long long)k);
        model_advance(&m, k);
        check_model(f, &m);
        assert_true(H5Fclose(f) >= 0);
        check_path(path, H5F_ACC_RDWR, 1, &m);
        assert_int_equal(fsize(jpath_of(path)), -1);
        check_path(path, H5F_ACC_RDONLY, 0, &m);
        if (first_k < 0)
            first_k = k;
    }
    print_message("    %d kills: commits %lld..%lld, %d left a non-empty journal\n", kills,
                  (long long)first_k, (long long)m.k, pending);
    assert_true(m.k > first_k); /* the workload did make progress */
    LEAK_END;
}

/* State k0 on disk and its model, m1 = the model after iteration k0 + 1. */
static void base_at(const char *path, int64_t k0, model *m0, model *m1)
{
    make_base(path, m0, 1);
    run_steps(path, m0, k0, 1);
    *m1 = *m0;
    model_advance(m1, k0 + 1);
}

/* After a crash inside a commit with a complete journal: read-only opens
 * see the new state and change nothing; a read-write open replays. */
static void check_recovery(const char *path, const model *m0, const model *m1, int untouched)
{
    size_t n0, j0, n1, j1;
    unsigned char *file0 = slurp(path, &n0), *jour0 = slurp(jpath_of(path), &j0);
    assert_non_null(jour0);
    assert_true(j0 > 0);
    check_path(path, H5F_ACC_RDONLY, 1, m1);
    if (untouched) /* nothing applied yet: the old state is intact for sec2 */
        check_path(path, H5F_ACC_RDONLY, 0, m0);
    unsigned char *file1 = slurp(path, &n1), *jour1 = slurp(jpath_of(path), &j1);
    assert_true(n1 == n0 && memcmp(file0, file1, n0) == 0);
    assert_true(j1 == j0 && memcmp(jour0, jour1, j0) == 0);
    free(file0);
    free(file1);
    free(jour0);
    free(jour1);
    check_path(path, H5F_ACC_RDWR, 1, m1);
    assert_int_equal(fsize(jpath_of(path)), -1);
    check_path(path, H5F_ACC_RDONLY, 0, m1);
    check_path(path, H5F_ACC_RDONLY, 1, m1);
}

/* Leave the commit of iteration k0 + 1 at each hook point; recovery gives
 * the new state. */
static uint64_t le64_at(const unsigned char *p)
{
    uint64_t v = 0;
    for (int b = 7; b >= 0; b--)
        v = (v << 8) | p[b];
    return v;
}

static void kill_inside_commit(int64_t k0, int shrinks)
{
    const char *path = tpath("hook.h5");
    static model m0, m1;
    base_at(path, k0, &m0, &m1);
    size_t nbase;
    unsigned char *base = slurp(path, &nbase);

    /* Count the page ranges of this commit: leave at "applied". */
    int st = crash_at(path, &m0, "applied", 1);
    expect_exit(st, HOOK_EXIT, "count run");
    check_recovery(path, &m0, &m1, 0);
    spit(path, base, nbase);
    st = crash_at(path, &m0, "journal-written", 1);
    expect_exit(st, HOOK_EXIT, "journal-written");
    /* Records of the journal: count them from its header. */
    size_t jn;
    unsigned char *j = slurp(jpath_of(path), &jn);
    assert_non_null(j);
    long pages = (long)le64_at(j + 16);
    uint64_t new_size = le64_at(j + 32);
    free(j);
    print_message("    the commit of iteration %lld: %ld page ranges, size %zu -> %llu\n",
                  (long long)m1.k, pages, nbase, (unsigned long long)new_size);
    assert_true(pages >= 1);
    if (shrinks) /* the shrink may only reach the disk with the commit */
        assert_true(new_size < nbase);
    else
        assert_true(pages >= 2); /* a "middle" page exists */
    check_recovery(path, &m0, &m1, 1);

    long at[3] = {1, (pages + 1) / 2, pages};
    for (int t = 0; t < 3; t++) {
        spit(path, base, nbase);
        st = crash_at(path, &m0, "page-applied", at[t]);
        expect_exit(st, HOOK_EXIT, "page-applied");
        check_recovery(path, &m0, &m1, 0);
    }
    /* The whole commit without a crash, for comparison. */
    spit(path, base, nbase);
    st = crash_at(path, &m0, "no-such-point", 1);
    expect_exit(st, 0, "full run");
    assert_int_equal(fsize(jpath_of(path)), -1);
    check_path(path, H5F_ACC_RDONLY, 0, &m1);
    free(base);
}

static void test_kill_inside_commit(void **state)
{
    (void)state;
    LEAK_BEGIN;
    kill_inside_commit(9, 0);  /* iteration 10 rewrites every dataset */
    kill_inside_commit(14, 1); /* iteration 15 deletes them all: the file shrinks */
    LEAK_END;
}

/* A damaged or partial journal is ignored: the previous state stays. */
static void test_torn_journal(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("torn.h5");
    static model m0, m1;
    base_at(path, 9, &m0, &m1);
    expect_exit(crash_at(path, &m0, "journal-written", 1), HOOK_EXIT, "journal-written");
    size_t nmain, nj;
    unsigned char *main0 = slurp(path, &nmain), *jour = slurp(jpath_of(path), &nj);
    assert_non_null(jour);
    assert_true(nj > 200);

    size_t cuts[] = {1, 7, 47, 48, 60, 64, nj / 2, nj - 17, nj - 16, nj - 9, nj - 1, nj + 1};
    size_t flips[] = {0, 9, 13, 17, 25, 33, 41, 48, 56, 60, 64, nj / 2, nj - 20, nj - 16, nj - 9,
                      nj - 1};
    size_t ncut = sizeof cuts / sizeof *cuts, nflip = sizeof flips / sizeof *flips;
    unsigned char *bad = malloc(nj + 1);
    assert_non_null(bad);
    for (size_t v = 0; v < ncut + nflip; v++) {
        size_t len = v < ncut ? cuts[v] : nj;
        memcpy(bad, jour, IT_MIN(len, nj));
        if (len > nj)
            bad[nj] = 0; /* a stray byte after a complete journal */
        if (v >= ncut)
            bad[flips[v - ncut]] ^= 0x10;
        spit(path, main0, nmain);
        spit(jpath_of(path), bad, len);
        check_path(path, H5F_ACC_RDONLY, 1, &m0);
        assert_int_equal(fsize(jpath_of(path)), (long long)len); /* read-only: untouched */
        check_path(path, H5F_ACC_RDWR, 1, &m0);
        assert_int_equal(fsize(jpath_of(path)), -1);
        check_path(path, H5F_ACC_RDONLY, 0, &m0);
    }
    free(bad);
    /* The intact journal is replayed (the variants above were live ones). */
    spit(path, main0, nmain);
    spit(jpath_of(path), jour, nj);
    check_path(path, H5F_ACC_RDWR, 1, &m1);
    free(main0);
    free(jour);
    LEAK_END;
}

static long commits_seen;
static void count_hook(const char *point)
{
    if (strcmp(point, "journal-written") == 0)
        commits_seen++;
}

/* Overwrites below the committed EOA wait in memory until the flush. */
static void test_pending_bytes(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("pending.h5");
    enum { N = 65536 };
    int32_t *buf = malloc(N * sizeof *buf);
    assert_non_null(buf);
    for (int j = 0; j < N; j++)
        buf[j] = j;
    hid_t p = jfapl();
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, p);
    H5Pclose(p);
    hsize_t dims[1] = {N};
    hid_t sp = H5Screate_simple(1, dims, NULL);
    hid_t d = H5Dcreate2(f, "x", H5T_NATIVE_INT32, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    assert_true(H5Fclose(f) >= 0);

    f = open_ok(path, H5F_ACC_RDWR, 1);
    assert_int_equal(it_h5j_pending_bytes(f), 0);
    commits_seen = 0;
    it_h5j_set_test_hook(count_hook);
    assert_true(H5Fflush(f, H5F_SCOPE_LOCAL) >= 0); /* nothing changed: no commit */
    assert_int_equal(commits_seen, 0);
    for (int j = 0; j < N; j++)
        buf[j] = -j;
    d = H5Dopen2(f, "x", H5P_DEFAULT);
    assert_true(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    assert_true(it_h5j_pending_bytes(f) >= (int64_t)(N * sizeof *buf));
    assert_true(H5Fflush(f, H5F_SCOPE_LOCAL) >= 0);
    assert_int_equal(commits_seen, 1);
    it_h5j_set_test_hook(NULL);
    assert_int_equal(it_h5j_pending_bytes(f), 0);
    assert_true(H5Fclose(f) >= 0);

    /* Not a file of this driver: -1. */
    f = open_ok(path, H5F_ACC_RDONLY, 0);
    assert_int_equal(it_h5j_pending_bytes(f), -1);
    d = H5Dopen2(f, "x", H5P_DEFAULT);
    int32_t *back = malloc(N * sizeof *back);
    assert_non_null(back);
    assert_true(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, back) >= 0);
    assert_memory_equal(buf, back, N * sizeof *buf);
    H5Dclose(d);
    assert_true(H5Fclose(f) >= 0);
    assert_int_equal(it_h5j_pending_bytes(H5I_INVALID_HID), -1);
    f = open_ok(path, H5F_ACC_RDONLY, 1);
    assert_int_equal(it_h5j_pending_bytes(f), 0);
    assert_true(H5Fclose(f) >= 0);
    free(buf);
    free(back);
    LEAK_END;
}

/* In a child: writes past `limit` bytes of any file fail (EFBIG). */
static void limit_file_size(rlim_t limit)
{
    struct rlimit rl;
    signal(SIGXFSZ, SIG_IGN);
    if (getrlimit(RLIMIT_FSIZE, &rl) < 0)
        _exit(CHILD_FAIL + 5);
    rl.rlim_cur = limit;
    if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
        _exit(CHILD_FAIL + 5);
}

static const char *fail_point;
static void fail_hook(const char *point)
{
    if (strcmp(point, fail_point) == 0)
        limit_file_size(1);
}

/* A child runs iteration m->k+1 with writes failing from fail_point on.
 * retry: the flush must fail, then (limit lifted) a second one succeed;
 * otherwise every later flush must fail too and the close report it. */
static void failing_child(const char *path, const model *m, const char *point, int retry)
{
    model cm = *m;
    hid_t p = H5Pcreate(H5P_FILE_ACCESS);
    if (it_h5j_set_fapl(p) != IT_OK)
        _exit(CHILD_FAIL);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, p);
    if (f < 0 || step(&cm, m->k + 1, f) < 0)
        _exit(CHILD_FAIL);
    fail_point = point;
    it_h5j_set_test_hook(fail_hook);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Fflush(f, H5F_SCOPE_LOCAL) >= 0)
        _exit(CHILD_FAIL + 6); /* the failure went unnoticed */
    it_h5j_set_test_hook(NULL);
    limit_file_size(RLIM_INFINITY);
    herr_t again = H5Fflush(f, H5F_SCOPE_LOCAL);
    if (retry ? again < 0 : again >= 0)
        _exit(CHILD_FAIL + 7);
    herr_t closed = H5Fclose(f);
    if (retry ? closed < 0 : closed >= 0)
        _exit(CHILD_FAIL + 8);
    _exit(0);
}

/* I/O errors in a commit: before its journal is complete the flush fails
 * and can be retried; after, the journal is left for recovery. */
static void test_commit_failures(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("fail.h5");
    static model m0, m1;
    base_at(path, 9, &m0, &m1);
    size_t nbase;
    unsigned char *base = slurp(path, &nbase);

    pid_t pid = fork_child();
    if (pid == 0)
        failing_child(path, &m0, "commit-start", 1); /* the journal write fails */
    expect_exit(wait_child(pid), 0, "journal write failure");
    assert_int_equal(fsize(jpath_of(path)), -1);
    check_path(path, H5F_ACC_RDONLY, 0, &m1);

    spit(path, base, nbase);
    pid = fork_child();
    if (pid == 0)
        failing_child(path, &m0, "journal-written", 0); /* applying fails */
    expect_exit(wait_child(pid), 0, "apply failure");
    check_recovery(path, &m0, &m1, 0);
    free(base);
    LEAK_END;
}

/* Opening an open file again makes HDF5 open and close a second driver
 * handle; that must not remove the journal the first handle writes to. */
static void second_open(int file_locking)
{
    const char *path = tpath("twice.h5");
    static model m0, m1;
    base_at(path, 9, &m0, &m1);
    pid_t pid = fork_child();
    if (pid == 0) {
        model cm = m0;
        hid_t p = H5Pcreate(H5P_FILE_ACCESS);
        if (it_h5j_set_fapl(p) != IT_OK || H5Pset_file_locking(p, file_locking, 1) < 0)
            _exit(CHILD_FAIL);
        hid_t f = H5Fopen(path, H5F_ACC_RDWR, p);
        hid_t f2 = H5Fopen(path, H5F_ACC_RDWR, p); /* the tentative handle */
        if (f < 0 || f2 < 0 || H5Fclose(f2) < 0)
            _exit(CHILD_FAIL);
        hook_point = "journal-written";
        hook_countdown = 1;
        it_h5j_set_test_hook(exit_hook);
        if (step(&cm, 10, f) < 0 || H5Fflush(f, H5F_SCOPE_LOCAL) < 0)
            _exit(CHILD_FAIL);
        _exit(0);
    }
    expect_exit(wait_child(pid), HOOK_EXIT, "second open");
    check_recovery(path, &m0, &m1, 1);
}

/* With file locking on, the lock keeps the second handle off the journal;
 * with it off, only the registry of open handles does. */
static void test_second_open_keeps_journal(void **state)
{
    (void)state;
    LEAK_BEGIN;
    second_open(1);
    second_open(0);
    LEAK_END;
}

/* A new file never inherits a journal left under its name. */
/* A file name near NAME_MAX: "<file>-journal" would be too long, so the
 * journal gets a cut name ending in a hash; a crash inside a commit must
 * still be recovered from it. */
static void test_long_names(void **state)
{
    (void)state;
    LEAK_BEGIN;
    char name[256];
    memset(name, 'n', 252);
    memcpy(name + 252, ".h5", 4); /* 255 bytes */
    const char *path = tpath(name);
    char *j = it_h5j_journal_path(path), *again = it_h5j_journal_path(path);
    const char *jbase = strrchr(j, '/') + 1;
    assert_true(strlen(jbase) <= 255);
    assert_string_equal(j, again);
    assert_memory_equal(j, path, strlen(path) - 255 + 200); /* the directory and a prefix stay */
    assert_string_equal(j + strlen(j) - 8, "-journal");
    name[0] = 'm'; /* another long name gets another journal */
    char *other = it_h5j_journal_path(tpath(name));
    assert_string_not_equal(strrchr(other, '/') + 1, jbase);
    char *shortj = it_h5j_journal_path("dir/short.h5"); /* short names are unchanged */
    assert_string_equal(shortj, "dir/short.h5-journal");
    static model m0, m1;
    base_at(path, 9, &m0, &m1);
    expect_exit(crash_at(path, &m0, "journal-written", 1), HOOK_EXIT, "journal-written");
    assert_true(fsize(j) > 200); /* the complete journal, under the cut name */
    check_path(path, H5F_ACC_RDWR, 1, &m1);
    assert_int_equal(fsize(j), -1);
    check_path(path, H5F_ACC_RDONLY, 0, &m1);
    assert_int_equal(unlink(path), 0);
    it_free(j);
    it_free(again);
    it_free(other);
    it_free(shortj);
    LEAK_END;
}

static void test_create_discards_journal(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *old = tpath("stale.h5"), *fresh = tpath("fresh.h5");
    static model m0, m1;
    base_at(old, 9, &m0, &m1);
    expect_exit(crash_at(old, &m0, "journal-written", 1), HOOK_EXIT, "journal-written");
    size_t nj;
    unsigned char *jour = slurp(jpath_of(old), &nj);
    assert_non_null(jour);

    /* H5F_ACC_EXCL on a new name with a stale journal beside it. */
    unlink(fresh);
    spit(jpath_of(fresh), jour, nj);
    hid_t p = jfapl();
    hid_t f = H5Fcreate(fresh, H5F_ACC_EXCL, H5P_DEFAULT, p);
    assert_true(f >= 0);
    assert_int_equal(fsize(jpath_of(fresh)), -1);
    assert_int_equal(write_attr_i64(f, "committed", 77), 0);
    assert_true(H5Fclose(f) >= 0);

    /* H5F_ACC_TRUNC over a file with a pending journal. */
    f = H5Fcreate(old, H5F_ACC_TRUNC, H5P_DEFAULT, p);
    H5Pclose(p);
    assert_true(f >= 0);
    assert_int_equal(fsize(jpath_of(old)), -1);
    assert_int_equal(write_attr_i64(f, "committed", 77), 0);
    assert_true(H5Fclose(f) >= 0);
    model empty;
    memset(&empty, 0, sizeof empty);
    empty.k = 77;
    check_path(fresh, H5F_ACC_RDONLY, 1, &empty);
    check_path(old, H5F_ACC_RDONLY, 1, &empty);
    free(jour);
    LEAK_END;
}

/* flock like sec2: a second process cannot open a file being written. */
static void test_lock(void **state)
{
    (void)state;
    if (getenv("HDF5_USE_FILE_LOCKING")) {
        print_message("    skipped: HDF5_USE_FILE_LOCKING is set\n");
        return;
    }
    LEAK_BEGIN;
    const char *path = tpath("lock.h5");
    static model m;
    make_base(path, &m, 1);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork_child();
    if (pid == 0) {
        close(pfd[0]);
        hid_t p = H5Pcreate(H5P_FILE_ACCESS);
        if (it_h5j_set_fapl(p) != IT_OK || H5Fopen(path, H5F_ACC_RDWR, p) < 0)
            _exit(CHILD_FAIL);
        if (write(pfd[1], "r", 1) != 1)
            _exit(CHILD_FAIL);
        for (;;)
            pause();
    }
    close(pfd[1]);
    char c;
    assert_int_equal(read(pfd[0], &c, 1), 1);
    close(pfd[0]);
    hid_t frw, fro;
    H5E_BEGIN_TRY
    {
        frw = open_with(path, H5F_ACC_RDWR, 1);
        fro = open_with(path, H5F_ACC_RDONLY, 1);
    }
    H5E_END_TRY;
    /* The failed opens must leave the writer's journal alone (its open
     * created it; it stays, empty, while the writer has the file). */
    long long jsize = fsize(jpath_of(path));
    kill(pid, SIGKILL);
    wait_child(pid);
    assert_true(frw < 0);
    assert_true(fro < 0);
    assert_int_equal(jsize, 0);
    check_path(path, H5F_ACC_RDWR, 1, &m);
    assert_int_equal(fsize(jpath_of(path)), -1);
    LEAK_END;
}

/* The driver at the H5FD level against a byte array: random writes (many
 * straddle the committed EOA, which is rarely page-aligned), EOA moves,
 * truncates, flushes, reads, close and reopen.  A shrink is flushed at once:
 * bytes past an unflushed shrink that are never rewritten may read stale
 * (documented), which a byte model cannot express. */
#define VMAX (256 * 1024)

typedef struct vstate {
    H5FD_t *fd;
    hid_t fapl;
    haddr_t eoa;
    size_t eof; /* logical size */
    unsigned char ref[VMAX];
} vstate;

static void v_check_read(vstate *v, rng_t *r)
{
    static unsigned char buf[VMAX];
    if (v->eoa == 0)
        return;
    haddr_t a = (haddr_t)rng_range(r, 0, (int64_t)v->eoa - 1);
    size_t n = (size_t)rng_range(r, 1, (int64_t)IT_MIN(v->eoa - a, 30000));
    assert_true(H5FDread(v->fd, H5FD_MEM_DRAW, H5P_DEFAULT, a, n, buf) >= 0);
    for (size_t j = 0; j < n; j++) {
        unsigned char want = a + j < v->eof ? v->ref[a + j] : 0;
        if (buf[j] != want)
            fail_msg("byte %llu reads %u, expected %u (eof %zu eoa %llu)",
                     (unsigned long long)(a + j), buf[j], want, v->eof, (unsigned long long)v->eoa);
    }
    assert_int_equal(H5FDget_eof(v->fd, H5FD_MEM_DEFAULT), v->eof);
}

static void v_write(vstate *v, rng_t *r)
{
    static unsigned char buf[VMAX];
    if (v->eoa == 0)
        return;
    haddr_t a = (haddr_t)rng_range(r, 0, (int64_t)v->eoa - 1);
    size_t n = (size_t)rng_range(r, 1, (int64_t)IT_MIN(v->eoa - a, 12000));
    for (size_t j = 0; j < n; j++)
        buf[j] = (unsigned char)rng_next(r);
    assert_true(H5FDwrite(v->fd, H5FD_MEM_DRAW, H5P_DEFAULT, a, n, buf) >= 0);
    memcpy(v->ref + a, buf, n);
    v->eof = IT_MAX(v->eof, (size_t)(a + n));
}

static void v_set_eoa(vstate *v, haddr_t eoa, int truncate)
{
    assert_true(H5FDset_eoa(v->fd, H5FD_MEM_DEFAULT, eoa) >= 0);
    v->eoa = eoa;
    if (!truncate)
        return;
    assert_true(H5FDtruncate(v->fd, H5P_DEFAULT, 0) >= 0);
    if (eoa < v->eof)
        memset(v->ref + eoa, 0, v->eof - (size_t)eoa);
    v->eof = (size_t)eoa;
}

static void v_reopen(vstate *v, const char *path)
{
    assert_true(H5FDclose(v->fd) >= 0);
    assert_int_equal(fsize(path), (long long)v->eof); /* close committed and resized */
    assert_int_equal(fsize(jpath_of(path)), -1);
    size_t n;
    unsigned char *disk = slurp(path, &n);
    assert_true(n == 0 || memcmp(disk, v->ref, n) == 0);
    free(disk);
    v->fd = H5FDopen(path, H5F_ACC_RDWR, v->fapl, HADDR_UNDEF);
    assert_non_null(v->fd);
    assert_true(H5FDset_eoa(v->fd, H5FD_MEM_DEFAULT, v->eoa) >= 0);
}

/* A child forked while its parent has the file open for writing shares the
 * parent's descriptor, lock and journal: whatever it does with the handle,
 * nothing reaches the file, the lock stays and the journal stays. */
static void test_forked_child_never_writes(void **state)
{
    (void)state;
    if (getenv("HDF5_USE_FILE_LOCKING")) {
        print_message("    skipped: HDF5_USE_FILE_LOCKING is set\n");
        return;
    }
    LEAK_BEGIN;
    const char *path = tpath("forked.h5");
    static model m, mc;
    make_base(path, &m, 1);
    hid_t f = open_ok(path, H5F_ACC_RDWR, 1);
    mc = m;
    pid_t pid = fork_child();
    if (pid == 0) {
        int failed;
        H5E_BEGIN_TRY
        {
            /* the data writes or the flush must fail; closing must not commit */
            failed = step(&mc, mc.k + 1, f) != 0;
            failed |= H5Fflush(f, H5F_SCOPE_GLOBAL) < 0;
            H5Fclose(f);
        }
        H5E_END_TRY;
        _exit(failed ? 0 : 1);
    }
    expect_exit(wait_child(pid), 0, "the forked child's writes");
    /* the parent still holds its lock: a new open file description cannot
     * take it (a fork's HDF5 would reuse the open file, so ask flock) */
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX | LOCK_NB), -1);
    assert_int_equal(errno, EWOULDBLOCK);
    close(fd);
    assert_true(fsize(jpath_of(path)) >= 0); /* the parent's journal is still there */
    /* and the parent goes on: one more iteration, committed and checked */
    assert_int_equal(step(&m, m.k + 1, f), 0);
    assert_true(H5Fclose(f) >= 0);
    check_path(path, H5F_ACC_RDONLY, 1, &m);
    LEAK_END;
}

static void test_vfd_model(void **state)
{
    (void)state;
    LEAK_BEGIN;
    const char *path = tpath("vfd.bin");
    static vstate v;
    memset(&v, 0, sizeof v);
    v.fapl = jfapl();
    v.fd = H5FDopen(path, H5F_ACC_RDWR | H5F_ACC_CREAT | H5F_ACC_TRUNC, v.fapl, HADDR_UNDEF);
    assert_non_null(v.fd);
    rng_t r = {99};
    for (int op = 0; op < 1500; op++) {
        int64_t what = rng_range(&r, 0, 99);
        if (what < 35)
            v_write(&v, &r);
        else if (what < 65)
            v_check_read(&v, &r);
        else if (what < 75)
            v_set_eoa(&v, IT_MIN(v.eoa + (haddr_t)rng_range(&r, 1, 30000), VMAX), 0);
        else if (what < 80 && v.eoa >= v.eof)
            v_set_eoa(&v, v.eoa, 1); /* extend the file to the EOA */
        else if (what < 85) {
            /* shrink; the cut-off bytes read as zeros at once (the EOA
             * grows again without a write); commit before any write */
            v_set_eoa(&v, (haddr_t)rng_range(&r, 0, (int64_t)v.eoa), 1);
            v_set_eoa(&v, IT_MIN(v.eoa + 20000, VMAX), 0);
            v_check_read(&v, &r);
            v_check_read(&v, &r);
            assert_true(H5FDflush(v.fd, H5P_DEFAULT, 0) >= 0);
        } else if (what < 97)
            assert_true(H5FDflush(v.fd, H5P_DEFAULT, 0) >= 0);
        else
            v_reopen(&v, path);
    }
    v_reopen(&v, path);
    assert_true(H5FDclose(v.fd) >= 0);
    H5Pclose(v.fapl);
    LEAK_END;
}

static void test_api_errors(void **state)
{
    (void)state;
    LEAK_BEGIN;
    hid_t p = H5Pcreate(H5P_FILE_ACCESS);
    EXPECT_ERR(it_h5j_set_fapl_flags(p, 0x80), IT_EINVAL);
    EXPECT_OK(it_h5j_set_fapl_flags(p, IT_H5J_FSYNC));
    H5E_BEGIN_TRY
    {
        EXPECT_ERR(it_h5j_set_fapl(H5I_INVALID_HID), IT_EINVAL);
    }
    H5E_END_TRY;
    /* The fsync flavour works the same (and the flag survives in the fapl). */
    const char *path = tpath("fsync.h5");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, p);
    H5Pclose(p);
    assert_true(f >= 0);
    assert_int_equal(write_attr_i64(f, "committed", 5), 0);
    assert_true(H5Fclose(f) >= 0);
    model m;
    memset(&m, 0, sizeof m);
    m.k = 5;
    check_path(path, H5F_ACC_RDONLY, 0, &m);
    LEAK_END;
}

/* ------------------------------------------------------------------ */

static int setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/it_h5j_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_crash_atomicity),
        cmocka_unit_test(test_kill_inside_commit),
        cmocka_unit_test(test_torn_journal),
        cmocka_unit_test(test_pending_bytes),
        cmocka_unit_test(test_second_open_keeps_journal),
        cmocka_unit_test(test_create_discards_journal),
        cmocka_unit_test(test_long_names),
        cmocka_unit_test(test_lock),
        cmocka_unit_test(test_forked_child_never_writes),
        cmocka_unit_test(test_vfd_model),
        cmocka_unit_test(test_commit_failures),
        cmocka_unit_test(test_api_errors),
    };
    tu_filters_from_env();
    return cmocka_run_group_tests(tests, setup, teardown);
}
