#include "config_file.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

static int file_error(const struct config_file *f, int line, char *err, size_t size,
		      const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, size, "%s:%d: ", f->path, line);

	if (n < 0 || (size_t)n >= size)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err + n, size - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

static int line_of(const yaml_node_t *node)
{
	return (int)node->start_mark.line + 1;
}

static const char *scalar_of(const yaml_node_t *node)
{
	return (const char *)node->data.scalar.value;
}

/* A sequence of scalars, joined. */
static char *join(const struct config_file *f, yaml_document_t *doc, const yaml_node_t *seq,
		  const char *key, const char *separator, char *err, size_t size)
{
	size_t len = 1, sep_len = strlen(separator);
	char *out;

	for (yaml_node_item_t *i = seq->data.sequence.items.start;
	     i < seq->data.sequence.items.top; i++) {
		const yaml_node_t *item = yaml_document_get_node(doc, *i);

		if (!item || item->type != YAML_SCALAR_NODE) {
			file_error(f, item ? line_of(item) : line_of(seq), err, size,
				   "%s: a list of plain values is wanted", key);
			return NULL;
		}
		len += strlen(scalar_of(item)) + sep_len;
	}
	out = calloc(1, len);
	if (!out) {
		file_error(f, line_of(seq), err, size, "%s", strerror(ENOMEM));
		return NULL;
	}
	for (yaml_node_item_t *i = seq->data.sequence.items.start;
	     i < seq->data.sequence.items.top; i++) {
		if (i != seq->data.sequence.items.start)
			strcat(out, separator);
		strcat(out, scalar_of(yaml_document_get_node(doc, *i)));
	}
	return out;
}

static char *value_of(const struct config_file *f, yaml_document_t *doc, const yaml_node_t *node,
		      const char *key, config_list_separator_fn separator, char *err, size_t size)
{
	const char *sep;
	char *copy;

	if (node->type == YAML_SCALAR_NODE) {
		copy = strdup(scalar_of(node));
		if (!copy)
			file_error(f, line_of(node), err, size, "%s", strerror(ENOMEM));
		return copy;
	}
	if (node->type == YAML_SEQUENCE_NODE) {
		sep = separator(key);
		if (sep)
			return join(f, doc, node, key, sep, err, size);
		file_error(f, line_of(node), err, size, "%s takes one value, not a list", key);
		return NULL;
	}
	file_error(f, line_of(node), err, size, "%s takes a value, not a mapping", key);
	return NULL;
}

static int add_entry(struct config_file *f, yaml_document_t *doc, const yaml_node_pair_t *pair,
		     config_list_separator_fn separator, char *err, size_t size)
{
	const yaml_node_t *k = yaml_document_get_node(doc, pair->key);
	const yaml_node_t *v = yaml_document_get_node(doc, pair->value);
	struct config_entry *e = &f->entries[f->count];

	if (!k || !v || k->type != YAML_SCALAR_NODE)
		return file_error(f, k ? line_of(k) : 0, err, size, "a key must be a plain word");
	if (config_file_find(f, scalar_of(k)))
		return file_error(f, line_of(k), err, size, "%s is given twice", scalar_of(k));
	e->line = line_of(k);
	e->key = strdup(scalar_of(k));
	if (!e->key)
		return file_error(f, e->line, err, size, "%s", strerror(ENOMEM));
	f->count++;
	e->value = value_of(f, doc, v, e->key, separator, err, size);
	return e->value ? 0 : -1;
}

static int load_document(struct config_file *f, yaml_document_t *doc,
			 config_list_separator_fn separator, char *err, size_t size)
{
	const yaml_node_t *root = yaml_document_get_root_node(doc);
	size_t pairs;

	if (!root)
		return 0; /* an empty file: no settings */
	if (root->type != YAML_MAPPING_NODE)
		return file_error(f, line_of(root), err, size,
				  "the file must be a mapping of settings to values");
	pairs = (size_t)(root->data.mapping.pairs.top - root->data.mapping.pairs.start);
	f->entries = calloc(pairs ? pairs : 1, sizeof(*f->entries));
	if (!f->entries)
		return file_error(f, line_of(root), err, size, "%s", strerror(ENOMEM));
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top;
	     p++)
		if (add_entry(f, doc, p, separator, err, size))
			return -1;
	return 0;
}

int config_file_load(struct config_file *f, const char *path, config_list_separator_fn separator,
		     char *err, size_t size)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	FILE *in;
	int ret = -1;

	memset(f, 0, sizeof(*f));
	snprintf(f->path, sizeof(f->path), "%s", path);
	in = fopen(path, "re");
	if (!in) {
		snprintf(err, size, "configuration file %s: %s", path, strerror(errno));
		return -1;
	}
	if (!yaml_parser_initialize(&parser)) {
		snprintf(err, size, "configuration file %s: cannot start the YAML parser", path);
		goto close;
	}
	yaml_parser_set_input_file(&parser, in);
	if (!yaml_parser_load(&parser, &doc)) {
		file_error(f, (int)parser.problem_mark.line + 1, err, size, "%s",
			   parser.problem ? parser.problem : "not YAML");
		goto parser;
	}
	ret = load_document(f, &doc, separator, err, size);
	yaml_document_delete(&doc);
parser:
	yaml_parser_delete(&parser);
close:
	fclose(in);
	if (ret)
		config_file_free(f);
	return ret;
}

struct config_entry *config_file_find(const struct config_file *f, const char *key)
{
	for (size_t i = 0; i < f->count; i++)
		if (strcmp(f->entries[i].key, key) == 0)
			return &f->entries[i];
	return NULL;
}

void config_file_free(struct config_file *f)
{
	for (size_t i = 0; i < f->count; i++) {
		free(f->entries[i].key);
		free(f->entries[i].value);
	}
	free(f->entries);
	f->entries = NULL;
	f->count = 0;
}
