/* SQL text as sonde exports it: every value an application put in a
 * statement is replaced by "?" before anything leaves the agent, and the
 * operation and the one table a statement names are read from what is
 * left.
 *
 * The sanitiser, by token:
 * - string constants ('...' with '' inside; E'...' with backslash escapes;
 *   B'...', X'...', N'...', U&'...'), dollar-quoted strings ($$...$$,
 *   $tag$...$tag$), numbers (12, 1.5e-3, .5, 0x1F) and the booleans TRUE
 *   and FALSE become "?";
 * - comments (-- to the end of the line, and nested block comments) are
 *   dropped, since they can hold anything;
 * - runs of white space become one space;
 * - identifiers, "quoted identifiers", keywords, operators and parameters
 *   ($1) are kept.
 * Text cut short (the capture ended inside it) is sanitised as far as it
 * goes: a literal still open at the end is a "?". */
#ifndef SONDE_SQL_H
#define SONDE_SQL_H

#include <stdbool.h>
#include <stddef.h>

/* Writes the sanitised text (NUL-terminated) into out; returns its length.
 * *cut is set when out had no room for all of it. */
size_t sql_sanitize(const char *text, size_t len, char *out, size_t size, bool *cut);

/* From sanitised text: the operation (its first keyword, upper-cased) and
 * the collection when the statement names exactly one table (after FROM,
 * JOIN, INTO, UPDATE, COPY, or in a FROM list); empty strings otherwise. */
void sql_summarize(const char *sanitized, char *operation, size_t op_size, char *collection,
		   size_t coll_size);

#endif
