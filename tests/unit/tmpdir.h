/* Temporary folders the unit tests build (fake /proc and cgroup trees),
 * removed when a test ends so that repeated runs leave nothing in /tmp. */
#ifndef SONDE_TEST_TMPDIR_H
#define SONDE_TEST_TMPDIR_H

/* Removes `dir` and everything under it, symbolic links as links. */
void tmpdir_remove(const char *dir);

#endif
