/* Command lines as sonde exports them: the values of options whose name
 * says pass, secret, token, key, auth or credential (`--api-token X`,
 * `--password=X`) replaced by "REDACTED". */
#ifndef SONDE_ARGV_H
#define SONDE_ARGV_H

#include <stdbool.h>
#include <stddef.h>

/* Whether an option's name looks like it takes a secret. */
bool argv_secret_option(const char *option);
/* argv[0..argc) joined by spaces into out (cut to size), secrets redacted. */
void argv_join_redacted(char *const *argv, int argc, char *out, size_t size);

#endif
