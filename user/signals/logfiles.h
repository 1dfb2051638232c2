/* Log files named in the configuration (SONDE_LOGS_FILES: paths or shell
 * patterns, ':' between): which of them each traced process has open, found
 * by reading its /proc/<pid>/fd links once a second. A file found open is
 * watched (its writes become log writes in the kernel) until it is closed
 * or its fd points elsewhere; lines written before it is found are not
 * seen. */
#ifndef SONDE_LOGFILES_H
#define SONDE_LOGFILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOGFILES_PATH_MAX 256

/* Watch (or stop watching) tgid's fd, which is (was) open on path. */
typedef void (*logfile_fn)(void *ctx, uint32_t tgid, int32_t fd, const char *path, bool watch);

struct logfiles;

/* NULL when out of memory or the list is longer than 16 patterns (err
 * says which). */
struct logfiles *logfiles_new(const char *patterns, const char *proc_root, char *err,
			      size_t err_size);
void logfiles_free(struct logfiles *f);
/* One process's open files against the patterns. */
void logfiles_scan(struct logfiles *f, uint32_t tgid, logfile_fn fn, void *ctx);
/* Files found in no scan since the last sweep are reported unwatched. */
void logfiles_sweep(struct logfiles *f, logfile_fn fn, void *ctx);
/* The process exited: its files are forgotten (the kernel's entries go
 * with its other ones). */
void logfiles_forget(struct logfiles *f, uint32_t tgid);

#endif
