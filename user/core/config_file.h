/* sonde's configuration file (/etc/sonde/sonde.yaml): a YAML mapping
 * whose keys are the names of the environment variables sonde reads, each
 * with a value, or, for a setting that is a list, a sequence of values.
 * The file only reads and holds; config.c decides what the keys mean. */
#ifndef SONDE_CONFIG_FILE_H
#define SONDE_CONFIG_FILE_H

#include <stdbool.h>
#include <stddef.h>

struct config_entry {
	char *key;
	char *value; /* a sequence's values joined by the key's separator */
	int line;    /* 1-based, of the key */
	bool used;   /* a setting was taken from it */
};

struct config_file {
	char path[256];
	struct config_entry *entries;
	size_t count;
};

/* The separator a list setting's values are joined with, or NULL when the
 * key takes one value. */
typedef const char *(*config_list_separator_fn)(const char *key);

/* 0, or -1 with "path:line: what" in err (a syntax error, a key that is
 * not a plain word, a value that is a mapping, a list where one value is
 * wanted, a key given twice). */
int config_file_load(struct config_file *f, const char *path, config_list_separator_fn separator,
		     char *err, size_t size);
/* The entry of a key, or NULL. */
struct config_entry *config_file_find(const struct config_file *f, const char *key);
void config_file_free(struct config_file *f);

#endif
