/*
 * raw_h5write.c - the baseline for the HDF5 benchmark: write N tiles (raw
 * float32 bytes in a file) into one chunked dataset, a tile per chunk, with
 * the HDF5 C library infinite_tensor links (same library, same zlib), then
 * close.  Prints the seconds the HDF5 part took, and its minor page faults
 * and system CPU seconds (getrusage).
 *
 *   raw_h5write IN.bin OUT.h5 N TILE GZIP(-1 for none)
 */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void usage(long *faults, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *faults = ru.ru_minflt;
    *sys = (double)ru.ru_stime.tv_sec + 1e-6 * (double)ru.ru_stime.tv_usec;
}

int main(int argc, char **argv)
{
    if (argc != 6)
        return 2;
    hsize_t n = (hsize_t)atoll(argv[3]), tile = (hsize_t)atoll(argv[4]);
    int gzip = atoi(argv[5]);
    size_t tile_floats = (size_t)(tile * tile);
    float *data = malloc(sizeof(float) * tile_floats * n);
    FILE *in = fopen(argv[1], "rb");
    if (!data || !in || fread(data, sizeof(float), tile_floats * n, in) != tile_floats * n)
        return 3;
    fclose(in);
    long faults0, faults1;
    double sys0, sys1;
    usage(&faults0, &sys0);
    double t0 = now();
    hid_t f = H5Fcreate(argv[2], H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    hsize_t dims[3] = {n, tile, tile}, chunk[3] = {1, tile, tile}, start[3] = {0, 0, 0};
    hid_t sp = H5Screate_simple(3, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 3, chunk);
    if (gzip >= 0)
        H5Pset_deflate(dcpl, (unsigned)gzip);
    hid_t d = H5Dcreate2(f, "tiles", H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    hid_t ms = H5Screate_simple(3, chunk, NULL);
    for (hsize_t i = 0; i < n; i++) {
        start[0] = i;
        H5Sselect_hyperslab(sp, H5S_SELECT_SET, start, NULL, chunk, NULL);
        if (H5Dwrite(d, H5T_NATIVE_FLOAT, ms, sp, H5P_DEFAULT, data + i * tile_floats) < 0)
            return 4;
    }
    H5Sclose(ms);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    if (H5Fclose(f) < 0)
        return 5;
    double seconds = now() - t0;
    usage(&faults1, &sys1);
    printf("%.6f %ld %.6f\n", seconds, faults1 - faults0, sys1 - sys0);
    free(data);
    return 0;
}
