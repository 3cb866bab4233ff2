/*
 * cache.h - the cache's private side: the entry every cached tile embeds,
 * and the callback table through which the cache asks a tile's owner to
 * let it go.  Not installed; included by cache.c and by engine.h.
 *
 * The cache sits below the tiles.  It knows entries, not tiles: each entry
 * carries the bytes and weight it is counted with, its pins and its LRU
 * links, and a class (it_cache_class) naming what its owner does when the
 * cache wants it gone.  So cache.c calls nothing of the engine directly:
 * the engine (tile.c) adds, resizes, pins, unpins and removes entries, and
 * the cache calls back through the class to evict one (writing it back
 * first when it is dirty) or to free an orphan at its last unpin.
 *
 * Every entry counted by a cache is in exactly one of two states:
 *   pinned   (pins > 0): some read is using it; it is not on the LRU list and
 *            cannot be evicted;
 *   unpinned (pins == 0): on the LRU list, most recently released at the
 *            tail, first to be evicted at the head.
 * An orphan (IT_CE_ORPHAN) has left the counts while pinned (its owner
 * dropped it); its last unpin frees it through the class.
 */
#ifndef IT_CACHE_PRIVATE_H
#define IT_CACHE_PRIVATE_H

#include "it_cache.h"

#define IT_CE_LISTED 1u /* on the LRU list */
#define IT_CE_ORPHAN 2u /* out of the counts; freed by its last unpin */

typedef struct it_cache_entry it_cache_entry;

typedef struct it_cache_class {
    /* Make room: the entry is unpinned and on the LRU list.  Write it back
     * first if the owner keeps it dirty, then drop it (it__cache_remove and
     * free).  An error stops the trim; the entry may stay. */
    int (*evict)(it_cache_entry *e);
    /* Free an orphan at its last unpin (already out of the counts). */
    void (*free)(it_cache_entry *e);
    /* Optional: the owner's own invariants of the entry, for it_cache_check
     * (IT_OK or IT_ESTATE with a message). */
    int (*check)(const it_cache_entry *e);
} it_cache_class;

struct it_cache_entry {
    it_cache_entry *prev, *next; /* LRU links; only while listed */
    const it_cache_class *cls;
    const void *owner;           /* whose entry (it__cache_trim_owner) */
    it_cache *cache;             /* the cache counting it; NULL: none */
    int64_t bytes;               /* counted bytes (set before adding; resize after) */
    int64_t weight;              /* counted weight */
    int32_t pins;
    uint8_t flags;               /* IT_CE_* */
    uint8_t device;              /* bytes live in device memory, counted apart */
};

struct it_cache {
    int refs;
    int64_t byte_limit, weight_limit;     /* < 0: none */
    int64_t tile_limit;                   /* < 0: none */
    int64_t bytes, tiles, weight, pinned; /* bytes: host memory */
    int64_t dev_bytes, dev_byte_limit;    /* device memory; limit < 0: none */
    it_cache_entry *lru_head, *lru_tail;  /* head: least recently used */
    int64_t holds;                        /* > 0: limits are not enforced (it_cache_hold) */
};

/* Count an entry (bytes, weight, device set by the caller); it starts
 * unpinned and off the list: the caller pins it or lists it. */
void it__cache_add(it_cache *c, it_cache_entry *e);
/* Take an entry out of the counts and off the list.  A pinned one becomes
 * an orphan, freed by its last unpin; an unpinned one is the caller's. */
void it__cache_remove(it_cache_entry *e);
/* The entry's bytes change by delta (counted if it is counted). */
void it__cache_resize(it_cache_entry *e, int64_t delta);
void it__cache_pin(it_cache_entry *e);
/* The last unpin lists the entry, or frees an orphan. */
void it__cache_unpin(it_cache_entry *e);
/* List an unpinned entry (most recently used). */
void it__cache_list(it_cache_entry *e);
/* Evict the owner's unpinned entries, least recently used first, while
 * *owner_bytes > limit. */
void it__cache_trim_owner(it_cache *c, const void *owner, const int64_t *owner_bytes, int64_t limit);

#endif
