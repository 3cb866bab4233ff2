/*
 * blob.c - the file of rows behind TensorBlob (see it_blob.h for the format,
 * the commit protocol, the mapping and the locks).
 */
#define _GNU_SOURCE /* F_OFD_SETLK, FALLOC_FL_*, MAP_NORESERVE */

#include "it_blob.h"
#include "it_pool.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const unsigned char magic[8] = {0x89, 'I', 'T', 'B', 'L', 'O', 'B', '\n'};
#define ENDIAN_TAG 0x01020304u
#define SUPER_BYTES 216 /* the superblock's bytes before its CRC */
#define SLOT_BYTES 16   /* seq, length; then the CRC */
/* Address space reserved per open: rows never move within it.  1 TiB, or
 * twice the file if bigger; less when the system refuses (RLIMIT_AS). */
#define RESERVE_MIN ((size_t)1 << 40)

struct it_blob_map {
    char *base;      /* the file's byte 0 */
    size_t reserved; /* bytes of address space from base */
    size_t mapped;   /* bytes of the file mapped from base (page multiple) */
    atomic_long refs;
};

struct it_blob {
    int fd;
    int writable;
    int durability;
    pid_t pid; /* the opener: only it writes */
    it_blob_info info;
    uint64_t seq;       /* the active slot's */
    int64_t length;     /* committed rows */
    int64_t file_bytes; /* the file's size */
    int64_t alloc_end;  /* bytes from 0 known to be allocated (no holes) */
    it_blob_map *map;
    size_t page;
};

static _Thread_local int last_errno;
static int crash_point;

int it_blob_errno(void) { return last_errno; }
void it_blob_crash_at(int point) { crash_point = point; }

static void maybe_crash(int point)
{
    if (crash_point == point)
        _exit(86);
}

/* IT_EIO with errno kept for the binding. */
static int io_error(const char *what, const char *path)
{
    int e = errno;
    last_errno = e;
    return it_error_set(IT_EIO, "%s %s: %s", what, path ? path : "blob", strerror(e));
}

/* ---- CRC-32 ---------------------------------------------------------- */

static uint32_t crc_table[256];
static atomic_int crc_ready;

uint32_t it_crc32(const void *data, size_t n)
{
    if (!atomic_load_explicit(&crc_ready, memory_order_acquire)) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            crc_table[i] = c; /* racing initialisers write the same values */
        }
        atomic_store_explicit(&crc_ready, 1, memory_order_release);
    }
    const unsigned char *p = data;
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---- little-endian fields --------------------------------------------- */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Superblock layout (offsets in bytes):
 *   0 magic[8]  8 version  12 data offset  16 endian tag  20 dtype code
 *   24 dtype name[32]  56 ndim  60 zero  64 shape[16] (int64)
 *   192 row bytes  200 block size  208 max cached blocks  216 CRC-32 of [0, 216) */
static void encode_super(const it_blob_info *in, unsigned char *h)
{
    memcpy(h, magic, 8);
    put32(h + 8, IT_BLOB_VERSION);
    put32(h + 12, IT_BLOB_DATA_OFFSET);
    put32(h + 16, ENDIAN_TAG);
    put32(h + 20, (uint32_t)in->dtype);
    memcpy(h + 24, in->dtype_name, strnlen(in->dtype_name, IT_BLOB_NAME_MAX));
    put32(h + 56, (uint32_t)in->ndim);
    for (int d = 0; d < in->ndim; d++)
        put64(h + 64 + 8 * d, (uint64_t)in->shape[d]);
    put64(h + 192, (uint64_t)in->row_bytes);
    put64(h + 200, (uint64_t)in->block_size);
    put64(h + 208, (uint64_t)in->max_cached_blocks);
    put32(h + SUPER_BYTES, it_crc32(h, SUPER_BYTES));
}

static int corrupt(const char *path, const char *why)
{
    return it_error_set(IT_ECORRUPT, "%s is not a readable blob file: %s", path, why);
}

/* Row bytes of a row shape, or -1 past int64. */
static int64_t row_bytes_of(it_dtype dt, int ndim, const int64_t *shape)
{
    int64_t n = (int64_t)it_dtype_size(dt);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return -1;
        if (shape[d] && n > INT64_MAX / shape[d])
            return -1;
        n *= shape[d];
    }
    return n;
}

static int decode_super(const unsigned char *h, const char *path, it_blob_info *out)
{
    if (memcmp(h, magic, 8) != 0)
        return corrupt(path, "no blob signature at its start");
    if (it_crc32(h, SUPER_BYTES) != get32(h + SUPER_BYTES))
        return corrupt(path, "its header fails its checksum");
    uint32_t version = get32(h + 8);
    if (version != IT_BLOB_VERSION)
        return it_error_set(IT_ECORRUPT,
                            "%s is blob format version %u; this infinite_tensor reads version %d",
                            path, version, IT_BLOB_VERSION);
    if (get32(h + 12) != IT_BLOB_DATA_OFFSET || get32(h + 16) != ENDIAN_TAG)
        return corrupt(path, "unexpected data offset or byte order");
    memset(out, 0, sizeof *out);
    uint32_t code = get32(h + 20), ndim = get32(h + 56);
    if (code >= IT_DTYPE_COUNT || ndim > IT_MAX_DIMS - 1)
        return corrupt(path, "unknown dtype or too many dimensions");
    out->dtype = (it_dtype)code;
    memcpy(out->dtype_name, h + 24, IT_BLOB_NAME_MAX);
    out->ndim = (int)ndim;
    for (uint32_t d = 0; d < ndim; d++)
        out->shape[d] = (int64_t)get64(h + 64 + 8 * d);
    out->row_bytes = (int64_t)get64(h + 192);
    out->block_size = (int64_t)get64(h + 200);
    out->max_cached_blocks = (int64_t)get64(h + 208);
    if (row_bytes_of(out->dtype, out->ndim, out->shape) != out->row_bytes)
        return corrupt(path, "its row size does not match its row shape");
    return IT_OK;
}

static void encode_slot(uint64_t seq, int64_t length, unsigned char *s)
{
    put64(s, seq);
    put64(s + 8, (uint64_t)length);
    put32(s + SLOT_BYTES, it_crc32(s, SLOT_BYTES));
    put32(s + SLOT_BYTES + 4, 0);
}

/* The valid slot with the higher seq from the two slots' bytes; -1 if none. */
static int pick_slot(const unsigned char *a, const unsigned char *b, uint64_t *seq, int64_t *len)
{
    const unsigned char *slots[2] = {a, b};
    int best = -1;
    for (int i = 0; i < 2; i++) {
        const unsigned char *s = slots[i];
        if (it_crc32(s, SLOT_BYTES) != get32(s + SLOT_BYTES) || (int64_t)get64(s + 8) < 0)
            continue;
        if (best < 0 || get64(s) > *seq) {
            best = i;
            *seq = get64(s);
            *len = (int64_t)get64(s + 8);
        }
    }
    return best;
}

/* ---- copies ---------------------------------------------------------------- */

typedef struct copy_job {
    char *dst;
    const char *src;
    size_t bytes, chunk;
} copy_job;

static void copy_chunk(void *ctx, int64_t job)
{
    const copy_job *c = ctx;
    size_t at = (size_t)job * c->chunk;
    memcpy(c->dst + at, c->src + at, IT_MIN(c->chunk, c->bytes - at));
}

/* memcpy, spread over the core's thread pool when large: a copy into fresh
 * memory (a read's result) is bound by page faults, which the threads take
 * in parallel. */
static void copy_bytes(void *dst, const void *src, size_t n)
{
    int threads = it_pool_threads();
    if (threads < 2 || (int64_t)n < IT_MAX(it_pool_min_bytes(), (int64_t)4 << 20)) {
        memcpy(dst, src, n);
        return;
    }
    size_t chunk = IT_MAX((size_t)1 << 20, n / ((size_t)threads * 4));
    chunk = (chunk + 4095) / 4096 * 4096;
    copy_job c = {dst, src, n, chunk};
    it_parallel_for((int64_t)((n + chunk - 1) / chunk), copy_chunk, &c);
}

/* ---- mapping ------------------------------------------------------------ */

static size_t round_up(size_t n, size_t page) { return (n + page - 1) / page * page; }

static it_blob_map *map_new(size_t want)
{
    it_blob_map *m = it_calloc(1, sizeof *m);
    if (!m) {
        it_error_set(IT_ENOMEM, "out of memory opening a blob");
        return NULL;
    }
    for (size_t size = want;; size /= 2) {
        void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) {
            m->base = p;
            m->reserved = size;
            break;
        }
        if (size <= ((size_t)1 << 30)) {
            it_free(m);
            io_error("reserving address space for", NULL);
            return NULL;
        }
    }
    atomic_init(&m->refs, 1);
    return m;
}

void it_blob_map_unref(it_blob_map *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
        munmap(m->base, m->reserved);
        it_free(m);
    }
}

/* Map the file up to `bytes` (rounded to pages), in place when the
 * reservation has room, else into a fresh, larger one (views keep the old). */
static int map_to(it_blob *b, const char *path, int64_t bytes)
{
    size_t want = round_up((size_t)bytes, b->page);
    it_blob_map *m = b->map;
    if (m && want <= m->mapped)
        return IT_OK;
    if (!m || want > m->reserved) {
        size_t reserve = IT_MAX(RESERVE_MIN, 2 * want);
        it_blob_map *fresh = map_new(reserve);
        if (!fresh)
            return it_error_code();
        if (fresh->reserved < want) {
            it_blob_map_unref(fresh);
            errno = ENOMEM;
            return io_error("reserving address space for", path);
        }
        it_blob_map_unref(b->map);
        b->map = m = fresh;
    }
    /* readers map privately: writing into a view of a read-only blob then
     * changes this process's copy, never the file (and never faults) */
    int prot = PROT_READ | PROT_WRITE;
    int flags = (b->writable ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED;
    void *p = mmap(m->base + m->mapped, want - m->mapped, prot, flags, b->fd, (off_t)m->mapped);
    if (p == MAP_FAILED)
        return io_error("mapping", path);
    m->mapped = want;
    return IT_OK;
}

/* ---- locks --------------------------------------------------------------- */

/* Take (type F_WRLCK / F_RDLCK) or drop (F_UNLCK) the lock on byte `at`;
 * 0, or -1 with errno (EAGAIN when another holder conflicts).  Filesystems
 * without OFD locks count as unlocked: 0. */
static int ofd_lock(int fd, short type, off_t at)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = 1, .l_pid = 0};
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
        return 0;
    if (errno == EINVAL || errno == ENOLCK || errno == EOPNOTSUPP)
        return 0;
    if (errno == EACCES)
        errno = EAGAIN;
    return -1;
}

/* ---- open / create / close ---------------------------------------------- */

static int blob_new(int fd, int writable, int durability, it_blob **out)
{
    it_blob *b = it_calloc(1, sizeof *b);
    if (!b)
        return it_error_set(IT_ENOMEM, "out of memory opening a blob");
    b->fd = fd;
    b->writable = writable;
    b->durability = durability;
    b->pid = getpid();
    long page = sysconf(_SC_PAGESIZE);
    b->page = page > 0 ? (size_t)page : 4096;
    *out = b;
    return IT_OK;
}

/* Read the header, lock, map: the common tail of open and create. */
static int blob_load(it_blob *b, const char *path)
{
    if (b->writable && ofd_lock(b->fd, F_WRLCK, 0) != 0) {
        if (errno == EAGAIN)
            return (last_errno = EWOULDBLOCK),
                   it_error_set(IT_EIO, "%s is open for writing elsewhere (one writer at a time; "
                                        "readers may open it with mode \"r\")", path);
        return io_error("locking", path);
    }
    if (ofd_lock(b->fd, F_RDLCK, 1) != 0)
        return io_error("locking", path);
    struct stat st;
    if (fstat(b->fd, &st) != 0)
        return io_error("reading the size of", path);
    if (!S_ISREG(st.st_mode)) {
        errno = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        return io_error("opening", path);
    }
    b->file_bytes = st.st_size;
    if (st.st_size < IT_BLOB_DATA_OFFSET)
        return corrupt(path, st.st_size == 0 ? "it is empty" : "it is shorter than a blob's header");
    unsigned char h[IT_BLOB_DATA_OFFSET];
    ssize_t got = pread(b->fd, h, sizeof h, 0);
    if (got < 0)
        return io_error("reading", path);
    if (got < (ssize_t)sizeof h)
        return corrupt(path, "it is shorter than a blob's header");
    int rc = decode_super(h, path, &b->info);
    if (rc)
        return rc;
    if (pick_slot(h + IT_BLOB_SLOT_A, h + IT_BLOB_SLOT_B, &b->seq, &b->length) < 0)
        return corrupt(path, "both commit records fail their checksums");
    if (b->info.row_bytes && b->length > (INT64_MAX - IT_BLOB_DATA_OFFSET) / b->info.row_bytes)
        return corrupt(path, "its committed length is impossibly large");
    if (IT_BLOB_DATA_OFFSET + b->length * b->info.row_bytes > b->file_bytes)
        return corrupt(path, "the file is shorter than its committed rows (truncated?)");
    b->alloc_end = IT_BLOB_DATA_OFFSET + b->length * b->info.row_bytes;
    return map_to(b, path, b->file_bytes);
}

/* The blob of an open file: locks, header, mapping; closes fd on failure. */
static int blob_of_fd(int fd, const char *path, int writable, int durability, it_blob **out)
{
    it_blob *b = NULL;
    int rc = blob_new(fd, writable, durability, &b);
    if (rc) {
        close(fd);
        return rc;
    }
    rc = blob_load(b, path);
    if (rc) {
        int e = last_errno;
        it_blob_close(b);
        last_errno = e;
        return rc;
    }
    *out = b;
    return IT_OK;
}

int it_blob_open(const char *path, int writable, int durability, it_blob **out)
{
    *out = NULL;
    int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return io_error("opening", path);
    return blob_of_fd(fd, path, writable, durability, out);
}

static int fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        strcpy(dir, ".");
    else if ((size_t)(slash - path) >= sizeof dir)
        return 0;
    else if (slash == path)
        strcpy(dir, "/");
    else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

int it_blob_create(const char *path, const it_blob_info *info, int durability, it_blob **out)
{
    *out = NULL;
    if (info->ndim < 0 || info->ndim > IT_MAX_DIMS - 1 || (int)info->dtype < 0 ||
        info->dtype >= IT_DTYPE_COUNT)
        return it_error_set(IT_EINVAL, "a blob's rows have 0 to %d dimensions and a known dtype",
                            IT_MAX_DIMS - 1);
    it_blob_info in = *info;
    in.row_bytes = row_bytes_of(in.dtype, in.ndim, in.shape);
    if (in.row_bytes < 0)
        return it_error_set(IT_EINVAL, "a blob's row shape must be non-negative and fit in int64");
    unsigned char h[IT_BLOB_DATA_OFFSET] = {0};
    encode_super(&in, h);
    encode_slot(0, 0, h + IT_BLOB_SLOT_A);
    /* slot B stays zero: invalid, so A (seq 0) is the one */

    size_t n = strlen(path);
    char *tmp = it_malloc(n + 32);
    if (!tmp)
        return it_error_set(IT_ENOMEM, "out of memory creating a blob");
    snprintf(tmp, n + 32, "%s.%ld.tmp", path, (long)getpid());
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        int rc = io_error("creating", path);
        it_free(tmp);
        return rc;
    }
    int rc = IT_OK;
    if (pwrite(fd, h, sizeof h, 0) != (ssize_t)sizeof h)
        rc = io_error("writing the header of", path);
    else if (durability == IT_BLOB_FULL && fdatasync(fd) != 0)
        rc = io_error("syncing", path);
    else if (link(tmp, path) != 0)
        rc = io_error("creating", path);
    unlink(tmp);
    it_free(tmp);
    if (!rc && durability == IT_BLOB_FULL && fsync_dir_of(path) != 0)
        rc = io_error("syncing the directory of", path);
    if (rc) {
        close(fd);
        return rc;
    }
    return blob_of_fd(fd, path, 1, durability, out);
}

void it_blob_close(it_blob *b)
{
    if (!b)
        return;
    if (b->fd >= 0) {
        int mine = getpid() == b->pid;
        /* trim space allocated ahead of appends, or past a truncation, when
         * no other open (reader or view) can touch it: taking byte 1
         * exclusively succeeds only when no other open file shares it */
        if (mine && b->writable && b->map && atomic_load(&b->map->refs) == 1 &&
            ofd_lock(b->fd, F_WRLCK, 1) == 0) {
            int64_t end = IT_BLOB_DATA_OFFSET + b->length * b->info.row_bytes;
            if (end < b->file_bytes && ftruncate(b->fd, end) == 0)
                b->file_bytes = end;
            if (b->durability == IT_BLOB_FULL)
                (void)fdatasync(b->fd);
        }
        /* The writer's lock ends here, in the process that took it: a live
         * view maps the file, and a mapping holds the open file (and so its
         * OFD locks) after the descriptor closes.  The reader's byte stays
         * held while views live, so no other close trims rows under them.
         * Closing the descriptor drops the rest of our locks, unless a
         * forked child or parent still holds the same open file. */
        if (mine && b->writable)
            (void)ofd_lock(b->fd, F_UNLCK, 0);
        close(b->fd);
    }
    it_blob_map_unref(b->map);
    it_free(b);
}

/* ---- queries -------------------------------------------------------------- */

const it_blob_info *it_blob_info_of(const it_blob *b) { return &b->info; }
int it_blob_writable(const it_blob *b) { return b->writable; }

int it_blob_length(it_blob *b, int64_t *len)
{
    if (!b->writable) {
        const unsigned char *h = (const unsigned char *)b->map->base;
        uint64_t seq = 0;
        int64_t n = 0;
        if (pick_slot(h + IT_BLOB_SLOT_A, h + IT_BLOB_SLOT_B, &seq, &n) < 0) {
            /* both torn at once cannot happen (a writer writes one at a
             * time); both invalid means the file was damaged under us */
            return corrupt("the blob", "both commit records fail their checksums");
        }
        if (seq != b->seq) {
            int64_t end = IT_BLOB_DATA_OFFSET + n * b->info.row_bytes;
            if (end > b->file_bytes) {
                struct stat st;
                if (fstat(b->fd, &st) != 0)
                    return io_error("reading the size of", NULL);
                b->file_bytes = st.st_size;
                if (end > b->file_bytes)
                    return corrupt("the blob", "the file is shorter than its committed rows");
                int rc = map_to(b, NULL, b->file_bytes);
                if (rc)
                    return rc;
            }
            b->seq = seq;
            b->length = n;
        }
    }
    *len = b->length;
    return IT_OK;
}

char *it_blob_rows(it_blob *b, it_blob_map **ref)
{
    atomic_fetch_add(&b->map->refs, 1);
    *ref = b->map;
    return b->map->base + IT_BLOB_DATA_OFFSET;
}

/* ---- writing ---------------------------------------------------------------- */

static int check_writer(const it_blob *b)
{
    if (!b->writable)
        return it_error_set(IT_ESTATE, "the blob is not open for writing");
    if (getpid() != b->pid)
        return it_error_set(IT_ESTATE,
                            "this blob was opened by process %ld; a forked process may read it "
                            "but not write it (open it again there)",
                            (long)b->pid);
    return IT_OK;
}

/* Make bytes [0, end) of the file allocated and mapped.  Grows ahead by the
 * file's data size (at least 256 KiB, at most 1 GiB) so appends of a few
 * rows do not each extend the file. */
static int ensure_capacity(it_blob *b, int64_t end)
{
    if (end <= b->alloc_end)
        return IT_OK;
    int64_t target = end;
    if (end > b->file_bytes) {
        int64_t data = b->file_bytes - IT_BLOB_DATA_OFFSET;
        int64_t ahead = IT_MIN(IT_MAX(data, (int64_t)256 << 10), (int64_t)1 << 30);
        target = end <= INT64_MAX - ahead ? end + ahead : end;
    } else {
        target = b->file_bytes;
    }
    /* posix_fallocate reserves the blocks now: a full disk is an error
     * here rather than a SIGBUS when a row is copied into a hole */
    int e = posix_fallocate(b->fd, b->alloc_end, target - b->alloc_end);
    if (e == EOPNOTSUPP || e == EINVAL) /* no fallocate here: plain growth */
        e = target > b->file_bytes && ftruncate(b->fd, target) != 0 ? errno : 0;
    if (e) {
        errno = e;
        return io_error("growing", NULL);
    }
    if (target > b->file_bytes)
        b->file_bytes = target;
    b->alloc_end = target;
    return map_to(b, NULL, b->file_bytes);
}

static int commit(it_blob *b, int64_t length)
{
    unsigned char s[SLOT_BYTES + 8];
    uint64_t seq = b->seq + 1;
    encode_slot(seq, length, s);
    off_t at = (seq & 1) ? IT_BLOB_SLOT_B : IT_BLOB_SLOT_A;
    if (crash_point == 3) { /* a torn slot: half of it, then death */
        if (pwrite(b->fd, s, sizeof s / 2, at) < 0)
            _exit(87);
        _exit(86);
    }
    if (pwrite(b->fd, s, sizeof s, at) != (ssize_t)sizeof s)
        return io_error("committing", NULL);
    if (b->durability == IT_BLOB_FULL && fdatasync(b->fd) != 0)
        return io_error("syncing", NULL);
    b->seq = seq;
    b->length = length;
    return IT_OK;
}

/* msync the rows [from, to) and fdatasync: before a commit at "full". */
static int sync_rows(it_blob *b, int64_t from, int64_t to)
{
    if (to <= from || !b->info.row_bytes)
        return fdatasync(b->fd) == 0 ? IT_OK : io_error("syncing", NULL);
    size_t lo = (size_t)(IT_BLOB_DATA_OFFSET + from * b->info.row_bytes) / b->page * b->page;
    size_t hi = (size_t)(IT_BLOB_DATA_OFFSET + to * b->info.row_bytes);
    if (msync(b->map->base + lo, hi - lo, MS_SYNC) != 0 || fdatasync(b->fd) != 0)
        return io_error("syncing", NULL);
    return IT_OK;
}

int it_blob_write(it_blob *b, int64_t at, const it_view *src, int64_t *new_len)
{
    int rc = check_writer(b);
    if (rc)
        return rc;
    const it_blob_info *in = &b->info;
    if (src->dtype != in->dtype || src->ndim != in->ndim + 1 ||
        memcmp(src->shape + 1, in->shape, sizeof(int64_t) * (size_t)in->ndim) != 0)
        return it_error_set(IT_ESHAPE, "rows to write must have the blob's dtype and row shape");
    if (at < 0 || at > b->length)
        return it_error_set(IT_ERANGE, "a write must start within the blob (at %lld of %lld rows)",
                            (long long)at, (long long)b->length);
    int64_t n = src->shape[0];
    if (n == 0) {
        *new_len = b->length;
        return IT_OK;
    }
    if (in->row_bytes && (n > (INT64_MAX - IT_BLOB_DATA_OFFSET) / in->row_bytes - at))
        return it_error_set(IT_ETOOBIG, "writing %lld rows would make the blob too large",
                            (long long)n);
    rc = ensure_capacity(b, IT_BLOB_DATA_OFFSET + (at + n) * in->row_bytes);
    if (rc)
        return rc;
    maybe_crash(1);
    if (in->row_bytes) {
        int64_t dst_strides[IT_MAX_DIMS];
        it_contiguous_strides(it_dtype_size(in->dtype), src->ndim, src->shape, dst_strides);
        int64_t off = IT_BLOB_DATA_OFFSET + at * in->row_bytes;
        char *dst = b->map->base + off;
        /* contiguous rows go in with pwrite: the page cache the mapping
         * shares, without faulting each fresh page of the mapping in */
        if (memcmp(dst_strides, src->strides, sizeof(int64_t) * (size_t)src->ndim) == 0) {
            if (it_pwrite_all(b->fd, src->data, (size_t)(n * in->row_bytes), off) != 0)
                return io_error("writing", NULL);
        } else {
            it_copy_nd(it_dtype_size(in->dtype), src->ndim, src->shape, dst, dst_strides, src->data,
                       src->strides);
        }
    }
    maybe_crash(2);
    if (b->durability == IT_BLOB_FULL && (rc = sync_rows(b, at, at + n)) != 0)
        return rc;
    int64_t len = IT_MAX(b->length, at + n);
    rc = commit(b, len);
    if (rc)
        return rc;
    *new_len = len;
    return IT_OK;
}

int it_blob_truncate(it_blob *b, int64_t n)
{
    int rc = check_writer(b);
    if (rc)
        return rc;
    if (n < 0 || n > b->length)
        return it_error_set(IT_ERANGE, "cannot truncate a blob of %lld rows to %lld",
                            (long long)b->length, (long long)n);
    if (n == b->length)
        return IT_OK;
    maybe_crash(2);
    rc = commit(b, n);
    if (rc)
        return rc;
    /* free the dropped rows' whole pages; the file keeps its size while
     * open so nothing mapped past the new end faults (trimmed at close) */
    int64_t from = (int64_t)round_up((size_t)(IT_BLOB_DATA_OFFSET + n * b->info.row_bytes), b->page);
    if (from < b->file_bytes &&
        fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, from, b->file_bytes - from) == 0)
        b->alloc_end = IT_MIN(b->alloc_end, from);
    return IT_OK;
}

int it_blob_sync(it_blob *b)
{
    if (!b->writable)
        return IT_OK;
    return sync_rows(b, 0, b->length);
}

/* ---- reading ------------------------------------------------------------------ */

static int rows_buffer(const it_blob *b, int64_t n, it_buffer **out)
{
    int64_t shape[IT_MAX_DIMS];
    shape[0] = n;
    memcpy(shape + 1, b->info.shape, sizeof(int64_t) * (size_t)b->info.ndim);
    return it_buffer_create(b->info.dtype, b->info.ndim + 1, shape, out);
}

int it_blob_read(it_blob *b, int64_t start, int64_t step, int64_t n, it_buffer **out)
{
    *out = NULL;
    if (n < 0 || (n > 0 && (start < 0 || start >= b->length || start + (n - 1) * step < 0 ||
                            start + (n - 1) * step >= b->length)))
        return it_error_set(IT_ERANGE, "rows out of range of a blob of %lld rows",
                            (long long)b->length);
    it_buffer *buf;
    int rc = rows_buffer(b, n, &buf);
    if (rc)
        return rc;
    if (n && b->info.row_bytes) {
        const char *src = b->map->base + IT_BLOB_DATA_OFFSET + start * b->info.row_bytes;
        if (step == 1) {
            copy_bytes(buf->data, src, (size_t)(n * b->info.row_bytes));
        } else {
            int64_t shape[2] = {n, b->info.row_bytes};
            int64_t ds[2] = {b->info.row_bytes, 1};
            int64_t ss[2] = {step * b->info.row_bytes, 1};
            it_copy_nd(1, 2, shape, buf->data, ds, src, ss);
        }
    }
    *out = buf;
    return IT_OK;
}

int it_blob_gather(it_blob *b, const int64_t *idx, int64_t n, it_buffer **out)
{
    *out = NULL;
    int64_t len = b->length;
    for (int64_t k = 0; k < n; k++)
        if (idx[k] < -len || idx[k] >= len)
            return it_error_set(IT_ERANGE, "index %lld is out of range of a blob of %lld rows",
                                (long long)idx[k], (long long)len);
    it_buffer *buf;
    int rc = rows_buffer(b, n, &buf);
    if (rc)
        return rc;
    size_t rb = (size_t)b->info.row_bytes;
    const char *base = b->map->base + IT_BLOB_DATA_OFFSET;
    char *dst = buf->data;
    for (int64_t k = 0; k < n; k++) {
        int64_t i = idx[k] < 0 ? idx[k] + len : idx[k];
        memcpy(dst + (size_t)k * rb, base + (size_t)i * rb, rb);
    }
    *out = buf;
    return IT_OK;
}
