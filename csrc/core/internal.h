/*
 * internal.h - tiles, the cache and the owners of work, shared by cache.c,
 * wait.c and the read engine (engine.h, which includes this).  Not installed.
 */
#ifndef IT_INTERNAL_H
#define IT_INTERNAL_H

#include "it_tensor.h"

#define TILE_ORPHAN 1u /* dropped from its tensor while pinned; freed at unpin */
#define TILE_LISTED 2u /* on its cache's LRU list */
#define TILE_DIRTY 4u  /* changed since loaded from / written to the backend */
#define TILE_LAZY 8u   /* only the pixels of contributed windows are written (tile.c) */

typedef struct it_tile it_tile;

/* A window's values on its overlap with a tile, kept until the tile is
 * completed (custom blends only; see contribute.c). */
typedef struct it_deferred {
    struct it_deferred *next; /* lexicographic order of coords */
    it_buffer *part;
    int64_t *start;  /* overlap start per dim, relative to the tile origin */
    int64_t coords[]; /* window index */
} it_deferred;

struct it_tile {
    it_tensor *owner;
    it_tile *hnext;            /* hash chain in owner's table */
    it_tile *prev, *next;      /* LRU links; only while cached and unpinned */
    it_buffer *buf;            /* the tile's values, tile_shape of owner */
    uint64_t hash;
    int64_t ncontrib;          /* bits set */
    int64_t ntotal;            /* windows that can contribute */
    int64_t weight;
    int32_t pins;
    uint32_t flags;
    uint64_t pin_serial;       /* last read context that pinned it */
    uint64_t mark;             /* read context completing it (custom blend) */
    int64_t *coord;            /* owner->ninf tile coordinates */
    int64_t *dom_lo;           /* owner->ncoords: first window index per coord */
    int64_t *dom_n;            /* owner->ncoords: windows per coord */
    uint64_t *bits;            /* ntotal bits, row-major over the domain */
    it_deferred *deferred;     /* custom blends: parts waiting for completion */
    int64_t extra_bytes;       /* bytes of the deferred parts */
};

struct it_cache {
    int refs;
    int64_t byte_limit, weight_limit; /* < 0: none */
    int64_t tile_limit;               /* < 0: none */
    int64_t bytes, tiles, weight, pinned; /* bytes: host memory */
    int64_t dev_bytes, dev_byte_limit;    /* memory of device-ops tables; limit < 0: none */
    it_tile *lru_head, *lru_tail; /* head: least recently used */
};

/* wait.c: owners of work in progress and waiting for progress */
typedef struct it_owner {
    const void *thread; /* a thread-local address; NULL: nobody */
    uint64_t gen;       /* fork generation at the time */
} it_owner;
it_owner it__owner_self(void);
int it__owner_live(it_owner o);    /* a thread of this process (not a forked parent's) */
int it__owner_is_self(it_owner o);
uint64_t it__wait_epoch(void);
void it__wait_progress(void);      /* some work ended: wake the waiters */
void it__wait_until_moved(uint64_t seen); /* sleep (caller's lock released) until the epoch != seen */

/* cache.c */
/* The byte counter a tile counts in: host memory or device memory. */
static inline int64_t *it__cache_counter(it_cache *c, const it_tile *tile)
{
    return tile->buf->device.ops ? &c->dev_bytes : &c->bytes;
}
void it__cache_account(it_cache *c, it_tile *tile, int sign);
void it__lru_remove(it_cache *c, it_tile *tile);
void it__lru_push(it_cache *c, it_tile *tile);
void it__tile_pin(it_tile *tile);
void it__tile_unpin(it_tile *tile);

/* tile.c */
it_cache *it__tensor_cache(const it_tensor *t);
/* Unlink an unpinned, cached tile from its tensor and free it. */
void it__tile_evict(it_tile *tile);
/* Write a dirty tile to its tensor's backend (pinned meanwhile); with
 * evict, evict it afterwards if it is clean and unpinned. */
int it__tile_writeback(it_tile *tile, int evict);
/* Free a tile's memory (already unlinked). */
void it__tile_free(it_tile *tile);

#endif
