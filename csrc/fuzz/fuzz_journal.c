/*
 * fuzz_journal.c - journal recovery (h5jrecover.c) on arbitrary journals.
 *
 * The data file is a fixed, valid store (csrc/fuzz/journal-base.h5, or
 * $FUZZ_JOURNAL_BASE): the file as it was on disk at the commit point of
 * a real commit.  The input is one flags byte and the bytes of
 * "<file>-journal".  With flags bit 0 set the harness first repairs the
 * journal's length field and checksum (when it is long enough to have a
 * header and a trailer), so that the fuzzer also reaches what happens
 * after validation: records at any address, any new size.
 *
 * The harness parses the journal itself, independently of the driver,
 * from the format in the comment at the top of h5jinternal.h, and checks:
 *  - a read-only open changes neither the file nor the journal;
 *  - after the recovery of a read-write open, the file is exactly the base
 *    with the journal's records written and cut to its new size when the
 *    journal is valid, and exactly the base when it is not (checked while
 *    HDF5 still has the file open: HDF5 writes only at commits); the
 *    journal is empty afterwards.  Opening read-write, HDF5 may commit
 *    at once a rewrite of what it read (a superblock whose cached root
 *    entry it does not trust): then only the empty journal is checked;
 *  - the store API on the recovered file (read-only, then read-write) only
 *    ever fails through the error API; nothing crashes or leaks.
 */
#include "fuzz_h5common.h"

#define JPAGE 4096u
#define MAXADDR ((uint64_t)INT64_MAX)

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)rd64((const uint8_t[8]){p[0], p[1], p[2], p[3]}); }

static void wr64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The checksum as the format defines it (whole buffer at once). */
static uint64_t mix(uint64_t h, uint64_t w)
{
    uint64_t x = h ^ (w * 0xc2b2ae3d27d4eb4full);
    x = (x << 29) | (x >> 35);
    return x * 0x9e3779b97f4a7c15ull + 0x27d4eb2f165667c5ull;
}

static uint64_t jsum(const uint8_t *p, size_t n)
{
    uint64_t h = 0x6a09e667f3bcc908ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        h = mix(h, rd64(p + i));
    uint8_t tail[8] = {0};
    memcpy(tail, p + i, n - i);
    h = mix(h, rd64(tail) ^ ((uint64_t)(n - i) << 56));
    h ^= (uint64_t)n;
    h ^= h >> 31;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* 1 if j (n bytes) is a complete, intact journal; *size = its new file size. */
static int journal_ok(const uint8_t *j, size_t n, uint64_t *size)
{
    if (n < 64 || memcmp(j, "ITH5JNL1", 8) != 0 || rd32(j + 8) != 1 || rd32(j + 12) != JPAGE)
        return 0;
    uint64_t nrec = rd64(j + 16), eoa = rd64(j + 24);
    *size = rd64(j + 32);
    if (rd64(j + 40) != n || *size > MAXADDR || eoa > MAXADDR)
        return 0;
    size_t pos = 48;
    for (uint64_t i = 0; i < nrec; i++) {
        if (pos + 16 > n - 16)
            return 0;
        uint64_t addr = rd64(j + pos);
        uint32_t len = rd32(j + pos + 8);
        if (len == 0 || len > JPAGE || rd32(j + pos + 12) != 0 || addr > MAXADDR - JPAGE ||
            addr / JPAGE != (addr + len - 1) / JPAGE || pos + 16 + len > n - 16)
            return 0;
        pos += 16 + len;
    }
    return pos == n - 16 && memcmp(j + pos, "ITH5JEND", 8) == 0 && rd64(j + pos + 8) == jsum(j, pos);
}

static unsigned char *base;
static size_t base_n;

/* The file a valid journal makes of the base (NULL if too big to build). */
static unsigned char *replayed(const uint8_t *j, size_t n, uint64_t size)
{
    if (size > ((uint64_t)64 << 20))
        return NULL;
    uint64_t nrec = rd64(j + 16), cap = size;
    size_t pos = 48;
    for (uint64_t i = 0; i < nrec; i++) { /* the file grows to the last record first */
        uint64_t end = rd64(j + pos) + rd32(j + pos + 8);
        if (end > ((uint64_t)64 << 20))
            return NULL;
        cap = end > cap ? end : cap;
        pos += 16 + rd32(j + pos + 8);
    }
    unsigned char *f = calloc(1, cap > base_n ? cap : base_n);
    FZ_CHECK(f != NULL, "out of memory");
    memcpy(f, base, base_n);
    pos = 48;
    for (uint64_t i = 0; i < nrec; i++) {
        uint64_t addr = rd64(j + pos);
        uint32_t len = rd32(j + pos + 8);
        memcpy(f + addr, j + pos + 16, len);
        pos += 16 + len;
    }
    return f; /* bytes past the old end that no record wrote are zeros */
}

static void load_base(void)
{
    if (base)
        return;
    const char *p = getenv("FUZZ_JOURNAL_BASE");
    if (!p)
        p = "csrc/fuzz/journal-base.h5";
    base = fz_read_file(p, &base_n);
    FZ_CHECK(base != NULL && base_n > 0, "cannot read the base store %s (run from the repository root "
             "or set FUZZ_JOURNAL_BASE)", p);
}

static void expect_file(const char *path, const unsigned char *want, size_t n, const char *when)
{
    size_t got_n = 0;
    unsigned char *got = fz_read_file(path, &got_n);
    FZ_CHECK(got != NULL, "%s: the file is gone", when);
    FZ_CHECK(got_n == n, "%s: the file has %zu bytes, expected %zu", when, got_n, n);
    FZ_CHECK(n == 0 || memcmp(got, want, n) == 0, "%s: the file's bytes differ", when);
    free(got);
}

/* Journaled commits made while HDF5 opens a file: opening read-write, HDF5
 * may rewrite what it read (a superblock whose cached root-group entry it
 * does not trust, say) and flush it at once, through a commit of its own. */
static int open_commits;
static void count_commits(const char *point)
{
    if (strcmp(point, "commit-start") == 0)
        open_commits++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    load_base();
    char path[512], jpath[600];
    snprintf(path, sizeof path, "%s/store.h5", fz_scratch());
    snprintf(jpath, sizeof jpath, "%s-journal", path);
    size_t n = size - 1;
    uint8_t *j = malloc(n + 1);
    FZ_CHECK(j != NULL, "out of memory");
    memcpy(j, data + 1, n);
    if ((data[0] & 1) && n >= 64) { /* repair length and checksum */
        wr64(j + 40, n);
        memcpy(j + n - 16, "ITH5JEND", 8);
        wr64(j + n - 8, jsum(j, n - 16));
    }
    uint64_t new_size = 0;
    int valid = journal_ok(j, n, &new_size);
    fz_write_file(path, base, base_n);
    fz_write_file(jpath, j, n);
    long live = it_alloc_live_blocks();
    fz_h5_write_failed = 0;

    /* read-only: nothing on disk changes */
    exercise_store(path, IT_H5_READ, -1, data[0] >> 1);
    expect_file(path, base, base_n, "after a read-only open");
    expect_file(jpath, j, n, "the journal after a read-only open");

    /* read-write recovery, checked before HDF5 can write */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    FZ_CHECK(it_h5j_set_fapl(fapl) == IT_OK, "set_fapl");
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    open_commits = 0;
    it_h5j_set_test_hook(count_commits);
    hid_t fid = H5Fopen(path, H5F_ACC_RDWR, fapl);
    it_h5j_set_test_hook(NULL);
    H5Pclose(fapl);
    long long jsize = fz_file_size(jpath);
    if (valid && open_commits > 0) {
        /* the replay was followed by HDF5's own commit: the bytes are no
         * longer the replay's alone (the file is still checked by reopening
         * it below).  A commit leaves the journal empty, and HDF5 may still
         * fail the open afterwards, closing the file, which removes it */
        FZ_CHECK(fid >= 0 ? jsize == 0 : jsize <= 0, "HDF5 committed while opening, yet left a journal of "
                 "%lld bytes", jsize);
    } else if (valid) {
        unsigned char *want = replayed(j, n, new_size);
        if (want) {
            expect_file(path, want, new_size, "after replaying a valid journal");
            free(want);
        } else if (fz_file_size(path) >= 0) {
            /* too big to compare (a sparse file): the size at least, when
             * the file system let recovery make it */
            FZ_CHECK(fid < 0 || fz_file_size(path) == (long long)new_size,
                     "after replaying a valid journal the file has %lld bytes, expected %llu",
                     fz_file_size(path), (unsigned long long)new_size);
        }
        FZ_CHECK(fid < 0 || jsize == 0, "a replayed journal was not emptied (%lld bytes)", jsize);
    } else {
        expect_file(path, base, base_n, "after recovery with an invalid journal");
        FZ_CHECK(jsize == 0 || jsize == (long long)n, "an invalid journal has %lld bytes", jsize);
    }
    if (fid >= 0)
        H5Fclose(fid);
    H5Eclear2(H5E_DEFAULT);

    exercise_store(path, IT_H5_READ, -1, data[0] >> 1);
    exercise_store(path, IT_H5_RDWR, -1, data[0] >> 2);
    unlink(jpath);
    free(j);
    FZ_CHECK(fz_h5_write_failed || it_alloc_live_blocks() == live, "%ld core blocks leaked", it_alloc_live_blocks() - live);
    it_error_clear();
    return 0;
}
