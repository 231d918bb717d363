/* fileio.h — writing a file so that readers see the old content or the new,
 * never half of it (keys, certificates, credentials, configs). */
#ifndef STRATA_FILEIO_H
#define STRATA_FILEIO_H

#include <stddef.h>
#include <sys/types.h>

/* Writes data to a temp file beside path (mode 0600 from its creation, so
 * a key is never readable by others, not even briefly), sets mode, fsyncs,
 * renames it over path and fsyncs the directory. 0 or -errno; on failure
 * path is untouched and the temp file removed. */
int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* The same, owned by uid:gid ((uid_t)-1 / (gid_t)-1: unchanged). */
int file_write_atomic_as(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid);

/* "dir/name" in a new malloc'd string, or NULL. */
char *file_path_join(const char *dir, const char *name);

#endif
