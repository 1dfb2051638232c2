/* What sonde reads of a process in /proc: a whole file, NUL-separated
 * lists (cmdline, environ) and their entries. */
#ifndef SONDE_PROCFS_H
#define SONDE_PROCFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* <root>/<pid>/<name> into buf (NUL-terminated, cut at size - 1); its
 * length, 0 when it cannot be read. */
size_t procfs_read(const char *root, uint32_t pid, const char *name, char *buf, size_t size);
/* Points argv at the NUL-separated strings of text[0..len), at most max;
 * returns how many. */
int procfs_split(char *text, size_t len, char **argv, int max);
/* Value of NAME in a NUL-separated environment block, or NULL. */
const char *procfs_env(const char *block, size_t len, const char *name);
/* The parent of a process, 0 when it cannot be read. */
uint32_t procfs_ppid(const char *root, uint32_t pid);
/* The last component of a path. */
const char *procfs_basename(const char *path);
/* The first live process of root other than skip whose comm (its
 * executable's name, cut at 15 bytes) is comm and for which accept(root,
 * pid, arg) holds (NULL: any); 0 when there is none. A zombie holds
 * nothing and is passed over. */
uint32_t procfs_find_named(const char *root, const char *comm, uint32_t skip,
			   bool (*accept)(const char *root, uint32_t pid, void *arg), void *arg);

#endif
