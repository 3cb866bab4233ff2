/*
 * cache.c - budgets and the LRU list of unpinned tiles.
 *
 * Every cached tile is in exactly one of two states:
 *   pinned   (pins > 0): some read is using it; it is not on the LRU list and
 *            cannot be evicted;
 *   unpinned (pins == 0): on the LRU list, most recently released at the
 *            tail, first to be evicted at the head.
 * Pinning is a read's way of saying "I hold a pointer into this tile".  A
 * read pins each tile once, the first time it touches it, and unpins them all
 * when it ends, which is when the cache trims back to its budgets.  Reads
 * therefore never see a tile freed under them, and a single read may exceed
 * the budget by its own working set, as the 0.3 library documented.
 *
 * Eviction pops the LRU head: O(1) per tile.  A tile dropped by
 * it_tensor_clear while pinned becomes an orphan: it leaves the accounting
 * at once and is freed by its last unpin.
 */
#include "internal.h"

int it_cache_create(int64_t byte_limit, int64_t weight_limit, it_cache **out)
{
    it_cache *c = it_calloc(1, sizeof *c);
    *out = NULL;
    if (!c)
        return it_error_set(IT_ENOMEM, "out of memory creating a cache");
    c->refs = 1;
    c->byte_limit = byte_limit;
    c->weight_limit = weight_limit;
    c->tile_limit = -1;
    c->dev_byte_limit = -1;
    *out = c;
    return IT_OK;
}

void it_cache_ref(it_cache *c) { c->refs++; }

void it_cache_unref(it_cache *c)
{
    if (c && --c->refs == 0)
        it_free(c);
}

void it_cache_set_limits(it_cache *c, int64_t byte_limit, int64_t weight_limit)
{
    c->byte_limit = byte_limit;
    c->weight_limit = weight_limit;
    it_cache_trim(c);
}

void it_cache_set_tile_limit(it_cache *c, int64_t tile_limit)
{
    c->tile_limit = tile_limit;
    it_cache_trim(c);
}

void it_cache_set_device_limit(it_cache *c, int64_t byte_limit)
{
    c->dev_byte_limit = byte_limit;
    it_cache_trim(c);
}

void it_cache_limits(const it_cache *c, int64_t *byte_limit, int64_t *weight_limit)
{
    *byte_limit = c->byte_limit;
    *weight_limit = c->weight_limit;
}

static int host_over(const it_cache *c) { return c->byte_limit >= 0 && c->bytes > c->byte_limit; }
static int device_over(const it_cache *c) { return c->dev_byte_limit >= 0 && c->dev_bytes > c->dev_byte_limit; }
static int count_over(const it_cache *c)
{
    return (c->weight_limit >= 0 && c->weight > c->weight_limit) ||
           (c->tile_limit >= 0 && c->tiles > c->tile_limit);
}

/* The least recently used tile whose eviction brings the cache nearer its
 * budgets: any tile when a count is over, else one in a memory space over its
 * byte limit.  NULL when within budgets. */
static it_tile *victim(const it_cache *c)
{
    int host = host_over(c), dev = device_over(c);
    if (count_over(c))
        return c->lru_head;
    if (!host && !dev)
        return NULL;
    for (it_tile *t = c->lru_head; t; t = t->next)
        if (t->buf->device.ops ? dev : host)
            return t;
    return NULL;
}

/* A dirty tile (persistent tensors) is written back before it goes.  If
 * that fails the trim stops there: the tile stays cached and dirty, so no
 * data is lost, and the next flush reports the error.  The guard bounds the
 * work when the write-back callback itself dirties tiles. */
void it_cache_trim(it_cache *c)
{
    int64_t guard = 2 * c->tiles + 2;
    it_tile *tile;
    while ((tile = victim(c)) && guard-- > 0) {
        if (!(tile->flags & TILE_DIRTY))
            it__tile_evict(tile);
        else if (it__tile_writeback(tile, 1) != IT_OK)
            return;
    }
}

int64_t it_cache_bytes(const it_cache *c) { return c->bytes; }
int64_t it_cache_device_bytes(const it_cache *c) { return c->dev_bytes; }
int64_t it_cache_tiles(const it_cache *c) { return c->tiles; }
int64_t it_cache_weight(const it_cache *c) { return c->weight; }
int64_t it_cache_pinned(const it_cache *c) { return c->pinned; }

void it__cache_account(it_cache *c, it_tile *tile, int sign)
{
    *it__cache_counter(c, tile) += sign * ((int64_t)tile->buf->nbytes + tile->extra_bytes);
    c->weight += sign * tile->weight;
    c->tiles += sign;
}

void it__lru_remove(it_cache *c, it_tile *tile)
{
    if (!(tile->flags & TILE_LISTED))
        return;
    tile->flags &= ~TILE_LISTED;
    if (tile->prev)
        tile->prev->next = tile->next;
    else
        c->lru_head = tile->next;
    if (tile->next)
        tile->next->prev = tile->prev;
    else
        c->lru_tail = tile->prev;
    tile->prev = tile->next = NULL;
}

void it__lru_push(it_cache *c, it_tile *tile)
{
    tile->flags |= TILE_LISTED;
    tile->next = NULL;
    tile->prev = c->lru_tail;
    if (c->lru_tail)
        c->lru_tail->next = tile;
    else
        c->lru_head = tile;
    c->lru_tail = tile;
}

void it__tile_pin(it_tile *tile)
{
    it_cache *c = it__tensor_cache(tile->owner);
    if (tile->pins++ == 0) {
        c->pinned++;
        it__lru_remove(c, tile);
    }
}

void it__tile_unpin(it_tile *tile)
{
    it_cache *c = it__tensor_cache(tile->owner);
    if (--tile->pins > 0)
        return;
    c->pinned--;
    if (tile->flags & TILE_ORPHAN)
        it__tile_free(tile);
    else
        it__lru_push(c, tile);
}

int it_cache_check(const it_cache *c)
{
    int64_t n = 0;
    const it_tile *prev = NULL;
    for (const it_tile *t = c->lru_head; t; prev = t, t = t->next) {
        if (t->prev != prev)
            return it_error_set(IT_ESTATE, "LRU back link broken");
        if (t->pins != 0)
            return it_error_set(IT_ESTATE, "a pinned tile is on the LRU list");
        if (t->flags & TILE_ORPHAN)
            return it_error_set(IT_ESTATE, "an orphan tile is on the LRU list");
        if (!(t->flags & TILE_LISTED))
            return it_error_set(IT_ESTATE, "a listed tile lacks its LRU flag");
        if (it__tensor_cache(t->owner) != c)
            return it_error_set(IT_ESTATE, "a tile of another cache is on the LRU list");
        if (t->ncontrib < 0 || t->ncontrib > t->ntotal)
            return it_error_set(IT_ESTATE, "a tile's contribution count is out of range");
        n++;
    }
    if (prev != c->lru_tail)
        return it_error_set(IT_ESTATE, "LRU tail is wrong");
    if (c->pinned < 0 || n + c->pinned < c->tiles || n > c->tiles)
        return it_error_set(IT_ESTATE, "tile count %lld exceeds listed %lld + pinned %lld",
                            (long long)c->tiles, (long long)n, (long long)c->pinned);
    if (c->bytes < 0 || c->dev_bytes < 0 || c->weight < 0)
        return it_error_set(IT_ESTATE, "negative byte or weight total");
    return IT_OK;
}
