/*
 * cache.c - budgets and the LRU list of unpinned entries (cache.h).
 *
 * Pinning is a read's way of saying "I hold a pointer into this tile".  A
 * read pins each tile once, the first time it touches it, and unpins them all
 * when it ends, which is when the cache trims back to its budgets.  Reads
 * therefore never see a tile freed under them, and a single read may exceed
 * the budget by its own working set, as the 0.3 library documented.
 *
 * Eviction pops the LRU head: O(1) per entry, through the entry's class
 * (cache.h), which writes a dirty tile back before it goes.  This file calls
 * nothing above it: the tiles reach the cache, never the other way round.
 */
#include "cache.h"

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

/* The least recently used entry whose eviction brings the cache nearer its
 * budgets: any entry when a count is over, else one in a memory space over
 * its byte limit.  NULL when within budgets. */
static it_cache_entry *victim(const it_cache *c)
{
    int host = host_over(c), dev = device_over(c);
    if (count_over(c))
        return c->lru_head;
    if (!host && !dev)
        return NULL;
    for (it_cache_entry *e = c->lru_head; e; e = e->next)
        if (e->device ? dev : host)
            return e;
    return NULL;
}

/* The least recently used entry of owner while its bytes exceed limit. */
static it_cache_entry *owner_victim(const it_cache *c, const void *owner, const int64_t *bytes, int64_t limit)
{
    if (*bytes <= limit)
        return NULL;
    for (it_cache_entry *e = c->lru_head; e; e = e->next)
        if (e->owner == owner)
            return e;
    return NULL;
}

/* One loop for both trims.  The victim is looked for afresh after each
 * step: an eviction may run callbacks (a write-back) that reorder the list
 * or free entries.  If a write-back fails the trim stops there: the tile
 * stays cached and dirty, so no data is lost, and the next flush reports the
 * error.  The guard bounds the work when a write-back dirties tiles. */
static void trim(it_cache *c, const void *owner, const int64_t *owner_bytes, int64_t limit)
{
    int64_t guard = 2 * c->tiles + 2;
    it_cache_entry *e;
    while ((e = owner ? owner_victim(c, owner, owner_bytes, limit) : victim(c)) && guard-- > 0)
        if (e->cls->evict(e) != IT_OK)
            return;
}

void it_cache_trim(it_cache *c)
{
    if (c->holds == 0)
        trim(c, NULL, NULL, 0);
}

void it_cache_hold(it_cache *c, int on)
{
    if (on) {
        c->holds++;
    } else if (c->holds > 0 && --c->holds == 0) {
        trim(c, NULL, NULL, 0);
    }
}

void it__cache_trim_owner(it_cache *c, const void *owner, const int64_t *owner_bytes, int64_t limit)
{
    trim(c, owner, owner_bytes, limit);
}

int64_t it_cache_bytes(const it_cache *c) { return c->bytes; }
int64_t it_cache_device_bytes(const it_cache *c) { return c->dev_bytes; }
int64_t it_cache_tiles(const it_cache *c) { return c->tiles; }
int64_t it_cache_weight(const it_cache *c) { return c->weight; }
int64_t it_cache_pinned(const it_cache *c) { return c->pinned; }

static int64_t *counter(it_cache *c, const it_cache_entry *e) { return e->device ? &c->dev_bytes : &c->bytes; }

static void unlist(it_cache *c, it_cache_entry *e)
{
    if (!(e->flags & IT_CE_LISTED))
        return;
    e->flags &= ~IT_CE_LISTED;
    if (e->prev)
        e->prev->next = e->next;
    else
        c->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

void it__cache_add(it_cache *c, it_cache_entry *e)
{
    e->cache = c;
    e->flags &= ~IT_CE_ORPHAN;
    *counter(c, e) += e->bytes;
    c->weight += e->weight;
    c->tiles++;
    c->pinned += e->pins > 0;
}

void it__cache_remove(it_cache_entry *e)
{
    it_cache *c = e->cache;
    if (!c)
        return;
    unlist(c, e);
    *counter(c, e) -= e->bytes;
    c->weight -= e->weight;
    c->tiles--;
    if (e->pins > 0) {
        c->pinned--;
        e->flags |= IT_CE_ORPHAN;
    }
    e->cache = NULL;
}

void it__cache_resize(it_cache_entry *e, int64_t delta)
{
    e->bytes += delta;
    if (e->cache)
        *counter(e->cache, e) += delta;
}

void it__cache_list(it_cache_entry *e)
{
    it_cache *c = e->cache;
    e->flags |= IT_CE_LISTED;
    e->next = NULL;
    e->prev = c->lru_tail;
    if (c->lru_tail)
        c->lru_tail->next = e;
    else
        c->lru_head = e;
    c->lru_tail = e;
}

void it__cache_pin(it_cache_entry *e)
{
    if (e->pins++ == 0 && e->cache) {
        e->cache->pinned++;
        unlist(e->cache, e);
    }
}

void it__cache_unpin(it_cache_entry *e)
{
    if (--e->pins > 0)
        return;
    if (e->flags & IT_CE_ORPHAN) {
        e->cls->free(e);
        return;
    }
    e->cache->pinned--;
    it__cache_list(e);
}

int it_cache_check(const it_cache *c)
{
    int64_t n = 0;
    const it_cache_entry *prev = NULL;
    for (const it_cache_entry *e = c->lru_head; e; prev = e, e = e->next) {
        if (e->prev != prev)
            return it_error_set(IT_ESTATE, "LRU back link broken");
        if (e->pins != 0)
            return it_error_set(IT_ESTATE, "a pinned tile is on the LRU list");
        if (e->flags & IT_CE_ORPHAN)
            return it_error_set(IT_ESTATE, "an orphan tile is on the LRU list");
        if (!(e->flags & IT_CE_LISTED))
            return it_error_set(IT_ESTATE, "a listed tile lacks its LRU flag");
        if (e->cache != c)
            return it_error_set(IT_ESTATE, "a tile of another cache is on the LRU list");
        if (e->cls->check) {
            int rc = e->cls->check(e);
            if (rc)
                return rc;
        }
        n++;
    }
    if (prev != c->lru_tail)
        return it_error_set(IT_ESTATE, "LRU tail is wrong");
    if (c->pinned < 0 || n + c->pinned != c->tiles)
        return it_error_set(IT_ESTATE, "tile count %lld is not listed %lld + pinned %lld",
                            (long long)c->tiles, (long long)n, (long long)c->pinned);
    if (c->bytes < 0 || c->dev_bytes < 0 || c->weight < 0)
        return it_error_set(IT_ESTATE, "negative byte or weight total");
    return IT_OK;
}
