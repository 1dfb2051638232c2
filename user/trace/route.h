/* http.route from a raw path: identifiers become "{id}" so that span names
 * and metrics keep a bounded number of distinct values.
 *
 * A path segment is an identifier when it is
 *   - all decimal digits                        /orders/1234
 *   - a UUID (8-4-4-4-12 hex)                   /ops/0b6f...-...
 *   - at least 8 characters of hex with a digit /blobs/deadbeef01
 *   - at least 6 characters mixing letters and digits, with at least
 *     two digits, other than a version tag v<N>  /op_12345, /abc123def
 * Everything else is kept: "v1", "api", "AAPL", "1d". The query string
 * and fragment are never part of the route. */
#ifndef SONDE_ROUTE_H
#define SONDE_ROUTE_H

#include <stddef.h>

/* Writes the route of path[0..len) to out (NUL-terminated, truncated to
 * out_size). Returns the route's length. */
size_t route_template(const char *path, size_t len, char *out, size_t out_size);

/* Length of the path part of a request target (before '?' or '#'). */
size_t route_path_len(const char *target, size_t len);

#endif
