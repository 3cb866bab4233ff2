/*
 * it_h5journal.h - a crash-safe virtual file driver (VFD) for HDF5.
 *
 * HDF5 writes its metadata in place.  A writer killed between or during
 * H5Fflush calls can leave a mix of old and new metadata on disk, and the
 * file may no longer open.  This driver makes every H5Fflush (and the flush
 * inside H5Fclose) an atomic commit: after a SIGKILL at any moment, the next
 * open sees exactly the state of the last completed commit.
 *
 * How: bytes that the committed state may refer to (addresses below the EOA
 * of the last commit) are never overwritten directly.  Writes there go to an
 * in-memory overlay of 4 KiB pages; reads see the overlay.  A commit first
 * writes the dirty page ranges to a redo journal "<file>-journal" next to the
 * file (a shortened name when that one would be longer than NAME_MAX: see
 * it_h5j_sibling), then copies them into the file, then empties the journal.  Writes at
 * or past the committed EOA (new space) go straight to the file: nothing
 * committed refers to them.  A commit also applies HDF5's truncate requests
 * (a shrink is deferred until then, so the committed state stays readable).
 *
 * Opening a file runs recovery first: a complete journal (its checksum
 * matches) is replayed into the file when the file is opened read-write, or,
 * when it is opened read-only, loaded into the overlay so reads see the
 * committed state while the file stays untouched.  An incomplete journal is
 * a commit that never finished: it is ignored (and emptied by a read-write
 * open).  Creating a file (H5F_ACC_TRUNC / H5F_ACC_EXCL) discards any journal
 * left under its name.  With no recovery pending the file is a plain HDF5
 * file: h5py and the sec2 driver read it.  A clean close removes the journal.
 *
 * Limits:
 *  - The guarantee is against process crashes.  Without fsync the order of
 *    writes reaching the disk after a power loss or kernel crash is up to the
 *    kernel.  IT_H5J_FSYNC (or the environment variable IT_H5J_FSYNC=1) adds
 *    fsync calls at the commit's ordering points so it also holds against
 *    power loss (where the file system honours fsync), at some cost per
 *    commit.
 *  - A file created with this driver has a committed state only from its
 *    first H5Fflush / H5Fclose on; a crash before that leaves no usable file.
 *  - Overwritten bytes are held in memory until the next flush (see
 *    it_h5j_pending_bytes); flush periodically when rewriting large amounts
 *    of existing data.
 *  - Space HDF5 allocated but never wrote may read back as old bytes rather
 *    than zeros (as with sec2 when freed space is reused); HDF5 never
 *    interprets such bytes.
 *  - A failed write (disk full, out of memory) is not reported to HDF5,
 *    whose caches do not recover from one; the handle stops committing
 *    instead (the file keeps its last commit) and the next flush fails.
 *  - No SWMR.  Like the rest of HDF5 use here, not thread-safe: serialise
 *    calls on one file.  Locking matches sec2: flock(), shared for read-only
 *    opens, exclusive for read-write, failing at once when taken (honouring
 *    HDF5_USE_FILE_LOCKING / H5Pset_file_locking).
 */
#ifndef IT_H5JOURNAL_H
#define IT_H5JOURNAL_H

#include <stdint.h>

#include <hdf5.h>

#include "it_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Flags for it_h5j_set_fapl_flags. */
#define IT_H5J_FSYNC 1u /* fsync at each commit's ordering points */

/* Select the journaling driver on a file access property list.  Registers
 * the driver class with HDF5 on first use (again after H5close).  Returns
 * IT_OK; IT_EINVAL with a message when HDF5 refuses fapl (or the flags are
 * unknown); IT_EIO when HDF5 refuses to register the driver. */
int it_h5j_set_fapl(hid_t fapl);
/* The same with flags (IT_H5J_FSYNC). */
int it_h5j_set_fapl_flags(hid_t fapl, unsigned flags);

/* Give up on the open file `file`: no further write or commit reaches the
 * disk (the file keeps its last commit), reads fail, and closing succeeds.
 * For owners that saw a write fail and cannot trust HDF5's caches since. */
void it_h5j_abandon(hid_t file);

/* Bytes of overlay pages the open file `file` (an HDF5 file id opened with
 * this driver) holds in memory: the pages overwritten since the last commit,
 * or, for a read-only open with a pending journal, the journal's pages.
 * 0 right after a commit; -1 if `file` is not a file of this driver. */
int64_t it_h5j_pending_bytes(hid_t file);

/* The name of a file next to `path`: path + suffix when that last name
 * component, with `reserve` more bytes, fits in NAME_MAX (255); otherwise
 * the component is cut and ends in "~" and 16 hex digits of a hash of the
 * whole component, so that it fits and stays distinct.  The same path always
 * gives the same name.  Allocated with it_malloc; NULL when out of memory. */
char *it_h5j_sibling(const char *path, const char *suffix, size_t reserve);
/* The journal of the file at path: it_h5j_sibling(path, "-journal", 0). */
char *it_h5j_journal_path(const char *path);

/* Test hook: called at named points of each commit that writes a journal:
 * "commit-start" (nothing written yet), "journal-written" (the journal is
 * complete - the commit point; nothing applied yet),
 * "page-applied" (after each page range is copied into the file) and
 * "applied" (every range applied and the file resized; the journal is
 * emptied next).  A test can _exit() a forked child there.  NULL (the
 * default) disables it.  Process-wide. */
typedef void (*it_h5j_hook_fn)(const char *point);
void it_h5j_set_test_hook(it_h5j_hook_fn fn);

#ifdef __cplusplus
}
#endif
#endif
