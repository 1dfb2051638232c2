/* The capabilities sonde runs with: checked before start-up, and cut,
 * once its programs are loaded and attached, to the ones it still uses. */
#ifndef SONDE_PRIVILEGES_H
#define SONDE_PRIVILEGES_H

#include <stddef.h>

/* 0 when the process holds every capability start-up needs; else -1 and
 * why, naming what is missing. */
int privileges_check(char *why, size_t size);
/* Keeps only what running needs (reading other users' /proc entries and
 * their programs' files) in the effective and permitted sets, and clears
 * the ambient set; -1 and why on failure. */
int privileges_drop(char *why, size_t size);

#endif
