/*
 * wait.h - owners of work in progress, and waiting for progress (wait.c).
 * Not installed; included by wait.c and engine.h.
 */
#ifndef IT_WAIT_H
#define IT_WAIT_H

#include "it_common.h"

typedef struct it_owner {
    const void *thread; /* a thread-local address; NULL: nobody */
    uint64_t gen;       /* fork generation at the time */
} it_owner;
it_owner it__owner_self(void);
int it__owner_live(it_owner o);    /* a thread of this process (not a forked parent's) */
int it__owner_is_self(it_owner o);
uint64_t it__wait_epoch(void);
void it__wait_progress(void);      /* some work ended: wake the waiters */
/* The epoch less this thread's own bumps: it moves only when another thread
 * ends a piece of work (a planner that gave the lock up compares it, so as
 * not to re-plan after its own loads). */
uint64_t it__wait_others_epoch(void);
void it__wait_until_moved(uint64_t seen); /* sleep (caller's lock released) until the epoch != seen */
/* Give the caller's lock up (through the lock hooks) around work that
 * touches nothing shared; returns the token it__relock takes.  Without
 * hooks both do nothing. */
void *it__unlock(void);
void it__relock(void *token);

#endif
