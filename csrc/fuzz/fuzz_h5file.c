/*
 * fuzz_h5file.c - the HDF5 store reader on arbitrary files.
 *
 * The input is a whole store file.  It is written to a scratch directory
 * (no journal) and driven through exercise_store() read-only, then
 * read-write (which also computes, stores and flushes tiles, writes and
 * deletes metadata), then read-only again.  Checks: no crash, sanitizer
 * report or leak; every failure reported through the error API; and a
 * read-only open leaves the file byte for byte as it was.
 *
 * Seeds: real store files made by the core (csrc/fuzz/mkseeds.c).
 */
#include "fuzz_h5common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[512], jpath[600];
    snprintf(path, sizeof path, "%s/store.h5", fz_scratch());
    snprintf(jpath, sizeof jpath, "%s-journal", path);
    unlink(jpath);
    fz_write_file(path, data, size);
    long live = it_alloc_live_blocks();
    fz_h5_write_failed = 0;
    unsigned salt = size ? data[size / 2] : 0;

    exercise_store(path, IT_H5_READ, -1, salt);
    size_t n = 0;
    unsigned char *now = fz_read_file(path, &n);
    FZ_CHECK(now && n == size && (size == 0 || memcmp(now, data, size) == 0),
             "a read-only open changed the file");
    free(now);
    FZ_CHECK(fz_file_size(jpath) <= 0, "a read-only open left a journal");

    if (getenv("FUZZ_DEBUG"))
        fprintf(stderr, "after the read-only open: %ld blocks\n", it_alloc_live_blocks() - live);
    exercise_store(path, IT_H5_RDWR, (salt & 2) ? 1 : -1, salt);
    if (getenv("FUZZ_DEBUG"))
        fprintf(stderr, "after the read-write open: %ld blocks\n", it_alloc_live_blocks() - live);
    exercise_store(path, IT_H5_READ, -1, salt >> 1);

    FZ_CHECK(fz_h5_write_failed || it_alloc_live_blocks() == live, "%ld core blocks leaked", it_alloc_live_blocks() - live);
    it_error_clear();
    return 0;
}
