/*
 * it_cache.h - the tile cache shared by every tensor of a store.
 *
 * The cache owns the byte and weight budgets and one LRU list of the tiles
 * that nobody pins.  Tiles themselves belong to their tensor (it_tensor.h);
 * the cache only decides which unpinned tile goes first when a budget is
 * exceeded.  A tile's weight is the number of windows' worth of data it
 * holds (its bytes over its tensor's window bytes, rounded up), which is how
 * MemoryTileStore's cache_size_windows is enforced.
 *
 * Locking: none inside.  The caller serialises every call on one cache and
 * on the tensors that use it (the binding holds the GIL).
 */
#ifndef IT_CACHE_H
#define IT_CACHE_H

#include "it_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct it_cache it_cache;

/* A limit < 0 means "no limit".  The caller owns one reference. */
int it_cache_create(int64_t byte_limit, int64_t weight_limit, it_cache **out);
void it_cache_ref(it_cache *c);
/* Drop a reference; the last one frees the cache (tensors hold references,
 * so the cache outlives its tensors).  NULL is fine. */
void it_cache_unref(it_cache *c);

void it_cache_set_limits(it_cache *c, int64_t byte_limit, int64_t weight_limit);
void it_cache_limits(const it_cache *c, int64_t *byte_limit, int64_t *weight_limit);
/* Limit the bytes of tiles in device memory (memory of a device-ops table,
 * it_device.h), counted apart from host bytes; < 0: none (the default). */
void it_cache_set_device_limit(it_cache *c, int64_t byte_limit);
/* Limit the number of tiles held (persistent stores count tiles); < 0: none. */
void it_cache_set_tile_limit(it_cache *c, int64_t tile_limit);
/* Evict unpinned tiles, least recently used first, until within limits.
 * Dirty tiles of persistent tensors are written back first; a failed write
 * ends the trim early (the tile stays cached). */
void it_cache_trim(it_cache *c);
/* Hold (on != 0) or release the cache's limits: while one hold or more is
 * taken, it_cache_trim evicts nothing, so tiles a user operation spanning
 * several reads computed stay cached until it ends (0.4's begin_access);
 * the last release trims. */
void it_cache_hold(it_cache *c, int on);

int64_t it_cache_bytes(const it_cache *c);  /* bytes of tile data held in host memory (deferred custom-blend parts included) */
int64_t it_cache_device_bytes(const it_cache *c); /* the same in device memory */
int64_t it_cache_tiles(const it_cache *c);  /* tiles held, pinned or not */
int64_t it_cache_weight(const it_cache *c); /* total weight held */
int64_t it_cache_pinned(const it_cache *c); /* tiles pinned right now */

/* Consistency check of every invariant (counts, LRU links, pins).  Returns
 * IT_OK or IT_ESTATE with a message naming the broken invariant. */
int it_cache_check(const it_cache *c);

#ifdef __cplusplus
}
#endif
#endif
