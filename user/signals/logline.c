#include "logline.h"

#include "semconv.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A level word is looked for this far into a line. */
#define LEVEL_SCAN 96
#define REDACTIONS_MAX 16
#define REDACTED "[REDACTED]"

static const struct {
	const char *word;
	enum log_severity severity;
} levels[] = {
	{ "TRACE", SEVERITY_TRACE },   { "DEBUG", SEVERITY_DEBUG },  { "INFO", SEVERITY_INFO },
	{ "NOTICE", SEVERITY_INFO },   { "WARN", SEVERITY_WARN },    { "WARNING", SEVERITY_WARN },
	{ "ERROR", SEVERITY_ERROR },   { "ERR", SEVERITY_ERROR },    { "CRITICAL", SEVERITY_FATAL },
	{ "CRIT", SEVERITY_FATAL },    { "FATAL", SEVERITY_FATAL },  { "PANIC", SEVERITY_FATAL },
	{ "ALERT", SEVERITY_FATAL },   { "EMERG", SEVERITY_FATAL },
};

/* A level word, any case when `any_case` (a field's value), else upper
 * case only (a word in free text: "error" in a sentence says nothing). */
static enum log_severity level_of(const char *word, size_t len, bool any_case)
{
	for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
		if (strlen(levels[i].word) != len)
			continue;
		if (any_case ? strncasecmp(word, levels[i].word, len) == 0
			     : strncmp(word, levels[i].word, len) == 0)
			return levels[i].severity;
	}
	return SEVERITY_UNSET;
}

static void set_severity(struct logline *l, const char *word, size_t len, enum log_severity s)
{
	l->severity = s;
	if (len >= sizeof(l->severity_text))
		len = sizeof(l->severity_text) - 1;
	memcpy(l->severity_text, word, len);
	l->severity_text[len] = '\0';
}

/* ---- free text -------------------------------------------------------------- */

/* "<N>" at the start: a syslog priority, its severity in the low 3 bits.
 * Returns the bytes it takes, 0 if there is none. */
static size_t syslog_prefix(const char *line, size_t len, struct logline *l)
{
	static const enum log_severity by_code[8] = {
		SEVERITY_FATAL, SEVERITY_FATAL, SEVERITY_FATAL, SEVERITY_ERROR,
		SEVERITY_WARN,  SEVERITY_INFO,  SEVERITY_INFO,  SEVERITY_DEBUG,
	};
	static const char *const names[8] = { "EMERG", "ALERT", "CRIT", "ERR",
					      "WARNING", "NOTICE", "INFO", "DEBUG" };
	size_t i = 1;
	unsigned code = 0;

	if (len < 3 || line[0] != '<')
		return 0;
	while (i < len && i < 4 && isdigit((unsigned char)line[i]))
		code = code * 10 + (unsigned)(line[i++] - '0');
	if (i == 1 || i >= len || line[i] != '>' || code > 191)
		return 0;
	set_severity(l, names[code % 8], strlen(names[code % 8]), by_code[code % 8]);
	return i + 1;
}

/* The first level word among the line's first words, as Python logging
 * ("WARNING:root:..."), uvicorn ("INFO:     ..."), "[ERROR]", or after a
 * timestamp ("2026-12-05 10:00:00,123 - api - ERROR - ...") writes it. */
static void free_text_level(const char *line, size_t len, struct logline *l)
{
	size_t end = len < LEVEL_SCAN ? len : LEVEL_SCAN;

	for (size_t i = 0; i < end;) {
		size_t start;
		enum log_severity s;

		while (i < end && !isalpha((unsigned char)line[i]))
			i++;
		start = i;
		while (i < end && isalpha((unsigned char)line[i]))
			i++;
		s = level_of(line + start, i - start, false);
		if (s != SEVERITY_UNSET) {
			set_severity(l, line + start, i - start, s);
			return;
		}
	}
}

/* ---- fields ------------------------------------------------------------------ */

/* Copies text into l->text; NULL when there is no room. */
static const char *keep_text(struct logline *l, size_t *used, const char *text, size_t len)
{
	char *at = l->text + *used;

	if (*used + len + 1 > sizeof(l->text))
		return NULL;
	memcpy(at, text, len);
	at[len] = '\0';
	*used += len + 1;
	return at;
}

static void add_field(struct logline *l, size_t *used, const char *key, size_t key_len,
		      const char *value, size_t value_len, enum logline_value type)
{
	struct logline_field *f;

	if (l->nfields == LOGLINE_FIELDS_MAX) {
		l->fields_cut = true;
		return;
	}
	f = &l->field[l->nfields];
	f->key = keep_text(l, used, key, key_len);
	f->value = keep_text(l, used, value, value_len);
	f->type = type;
	if (f->key && f->value)
		l->nfields++;
	else
		l->fields_cut = true;
}

static bool is_message_key(const char *key)
{
	return strcmp(key, "message") == 0 || strcmp(key, "msg") == 0;
}

static bool is_level_key(const char *key)
{
	return strcmp(key, "level") == 0 || strcmp(key, "severity") == 0 ||
	       strcmp(key, "levelname") == 0 || strcmp(key, "lvl") == 0 ||
	       strcmp(key, "log.level") == 0;
}

/* ---- JSON --------------------------------------------------------------------- */

static void json_field(struct logline *l, size_t *used, const cJSON *item)
{
	char number[32];
	char *printed;

	if (cJSON_IsString(item)) {
		add_field(l, used, item->string, strlen(item->string), item->valuestring,
			  strlen(item->valuestring), LOGV_STR);
	} else if (cJSON_IsBool(item)) {
		add_field(l, used, item->string, strlen(item->string),
			  cJSON_IsTrue(item) ? "true" : "false", cJSON_IsTrue(item) ? 4 : 5, LOGV_BOOL);
	} else if (cJSON_IsNumber(item)) {
		bool whole = item->valuedouble == (double)(long long)item->valuedouble;

		snprintf(number, sizeof(number), whole ? "%.0f" : "%.17g", item->valuedouble);
		add_field(l, used, item->string, strlen(item->string), number, strlen(number),
			  whole ? LOGV_INT : LOGV_DOUBLE);
	} else if (cJSON_IsArray(item) || cJSON_IsObject(item)) {
		printed = cJSON_PrintUnformatted(item);
		if (printed)
			add_field(l, used, item->string, strlen(item->string), printed,
				  strlen(printed), LOGV_STR);
		free(printed);
	}
}

/* A JSON object line: its message is the body, its level the severity,
 * every other field an attribute. False when the line is not one. */
static bool parse_json(const char *line, size_t len, struct logline *l)
{
	cJSON *root = len && line[0] == '{' ? cJSON_ParseWithLength(line, len) : NULL;
	size_t used = 0;
	const cJSON *item;

	if (!root)
		return false;
	if (!cJSON_IsObject(root)) {
		cJSON_Delete(root);
		return false;
	}
	cJSON_ArrayForEach(item, root) {
		if (!item->string)
			continue;
		if (cJSON_IsString(item) && is_message_key(item->string) && !l->body) {
			const char *body = keep_text(l, &used, item->valuestring,
						     strlen(item->valuestring));

			if (body) {
				l->body = body;
				l->body_len = strlen(body);
			}
		} else if (cJSON_IsString(item) && is_level_key(item->string) &&
			   l->severity == SEVERITY_UNSET) {
			set_severity(l, item->valuestring, strlen(item->valuestring),
				     level_of(item->valuestring, strlen(item->valuestring), true));
		} else {
			json_field(l, &used, item);
		}
	}
	cJSON_Delete(root);
	return true;
}

/* ---- logfmt --------------------------------------------------------------------- */

/* One key=value or key="quoted value" at *pos; false when the text there
 * is not one. */
static bool logfmt_pair(const char *line, size_t len, size_t *pos, size_t *key, size_t *key_len,
			size_t *value, size_t *value_len, bool *quoted)
{
	size_t i = *pos;

	*key = i;
	while (i < len && (isalnum((unsigned char)line[i]) || strchr("_.-/", line[i])))
		i++;
	*key_len = i - *key;
	if (!*key_len || i >= len || line[i] != '=')
		return false;
	i++;
	*quoted = i < len && line[i] == '"';
	if (*quoted) {
		*value = ++i;
		while (i < len && line[i] != '"')
			i += line[i] == '\\' ? 2 : 1;
		if (i >= len)
			return false;
		*value_len = i - *value;
		i++;
	} else {
		*value = i;
		while (i < len && line[i] != ' ')
			i++;
		*value_len = i - *value;
	}
	if (i < len && line[i] != ' ')
		return false;
	while (i < len && line[i] == ' ')
		i++;
	*pos = i;
	return true;
}

/* A logfmt line: nothing but two or more key=value pairs. */
static bool parse_logfmt(const char *line, size_t len, struct logline *l)
{
	size_t pos = 0, used = 0, pairs = 0;
	size_t key, key_len, value, value_len;
	bool quoted;

	while (pos < len && logfmt_pair(line, len, &pos, &key, &key_len, &value, &value_len,
					&quoted))
		pairs++;
	if (pos < len || pairs < 2)
		return false;
	pos = 0;
	while (pos < len && logfmt_pair(line, len, &pos, &key, &key_len, &value, &value_len,
					&quoted)) {
		char name[64];

		snprintf(name, sizeof(name), "%.*s", (int)key_len, line + key);
		if (is_message_key(name) && !l->body) {
			l->body = keep_text(l, &used, line + value, value_len);
			l->body_len = l->body ? value_len : 0;
		} else if (is_level_key(name) && l->severity == SEVERITY_UNSET) {
			set_severity(l, line + value, value_len, level_of(line + value, value_len, true));
		} else {
			add_field(l, &used, line + key, key_len, line + value, value_len, LOGV_STR);
		}
	}
	return true;
}

void logline_parse(const char *line, size_t len, struct logline *out)
{
	size_t skip;

	out->body = NULL;
	out->body_len = 0;
	out->severity = SEVERITY_UNSET;
	out->severity_text[0] = '\0';
	out->nfields = 0;
	out->fields_cut = false;
	if (parse_json(line, len, out) || parse_logfmt(line, len, out)) {
		if (!out->body) { /* no message field: the line is the message */
			out->body = line;
			out->body_len = len;
		}
		return;
	}
	out->body = line;
	out->body_len = len;
	skip = syslog_prefix(line, len, out);
	if (skip) {
		out->body = line + skip;
		out->body_len = len - skip;
		return;
	}
	free_text_level(line, len, out);
}

void logline_attributes(const struct logline *l, const struct attr_sink *sink)
{
	for (size_t i = 0; i < l->nfields; i++) {
		const struct logline_field *f = &l->field[i];

		switch (f->type) {
		case LOGV_INT:
			sink->i64(sink->ctx, f->key, strtoll(f->value, NULL, 10));
			break;
		case LOGV_BOOL:
			sink->boolean(sink->ctx, f->key, f->value[0] == 't');
			break;
		default: /* doubles go as their text: the sink has no double */
			sink->str(sink->ctx, f->key, f->value);
		}
	}
}

/* ---- redaction ------------------------------------------------------------------- */

struct log_redaction {
	regex_t re[REDACTIONS_MAX];
	size_t n;
};

static int add_pattern(struct log_redaction *r, const char *text, size_t len, char *err,
		       size_t err_size)
{
	char pattern[512];
	int rc;

	if (r->n == REDACTIONS_MAX || len >= sizeof(pattern)) {
		snprintf(err, err_size, "SONDE_LOGS_REDACT: more than %d patterns, or one longer "
			 "than %zu characters", REDACTIONS_MAX, sizeof(pattern) - 1);
		return -1;
	}
	memcpy(pattern, text, len);
	pattern[len] = '\0';
	rc = regcomp(&r->re[r->n], pattern, REG_EXTENDED);
	if (rc) {
		char why[128];

		regerror(rc, &r->re[r->n], why, sizeof(why));
		snprintf(err, err_size, "SONDE_LOGS_REDACT: \"%s\": %s", pattern, why);
		return -1;
	}
	r->n++;
	return 0;
}

struct log_redaction *log_redaction_new(const char *patterns, char *err, size_t err_size)
{
	struct log_redaction *r = calloc(1, sizeof(*r));
	const char *at = patterns;

	if (!r) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	while (at && *at) {
		const char *end = strstr(at, ";;");
		size_t len = end ? (size_t)(end - at) : strlen(at);

		if (len && add_pattern(r, at, len, err, err_size)) {
			log_redaction_free(r);
			return NULL;
		}
		at = end ? end + 2 : NULL;
	}
	return r;
}

void log_redaction_free(struct log_redaction *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		regfree(&r->re[i]);
	free(r);
}

/* One pattern over text, into out. */
static size_t redact_one(const regex_t *re, const char *text, char *out, size_t size)
{
	size_t used = 0;
	regmatch_t m;
	int flags = 0;

	while (*text && regexec(re, text, 1, &m, flags) == 0) {
		if (m.rm_eo == 0) { /* an empty match where we stand: keep a byte, move on */
			used += (size_t)snprintf(out + used, size - used, "%c", *text);
			text++;
		} else {
			used += (size_t)snprintf(out + used, size - used, "%.*s%s", (int)m.rm_so, text,
						 m.rm_eo > m.rm_so ? REDACTED : "");
			text += m.rm_eo;
		}
		flags = REG_NOTBOL;
		if (used >= size)
			return size - 1;
	}
	used += (size_t)snprintf(out + used, size - used, "%s", text);
	return used < size ? used : size - 1;
}

size_t log_redact(const struct log_redaction *r, const char *text, size_t len, char *out,
		  size_t size)
{
	char a[LOGLINE_TEXT_MAX], b[LOGLINE_TEXT_MAX];
	const char *from = a;
	size_t n;

	if (!size)
		return 0;
	n = len < sizeof(a) - 1 ? len : sizeof(a) - 1;
	memcpy(a, text, n);
	a[n] = '\0';
	for (size_t i = 0; r && i < r->n; i++) {
		char *to = from == a ? b : a;

		n = redact_one(&r->re[i], from, to, sizeof(a));
		from = to;
	}
	n = n < size - 1 ? n : size - 1;
	memcpy(out, from, n);
	out[n] = '\0';
	return n;
}
