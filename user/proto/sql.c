#include "sql.h"

#include <string.h>
#include <strings.h>

/* ---- sanitising ------------------------------------------------------- */

struct sql_out {
	char *buf;
	size_t size, len;
	bool cut;
};

static void emit(struct sql_out *o, const char *s, size_t n)
{
	if (o->len + n >= o->size) {
		o->cut = true;
		return;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void emit_char(struct sql_out *o, char c)
{
	emit(o, &c, 1);
}

static bool is_ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static bool is_ident_char(unsigned char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* End of a quoted string starting at t[i] (the opening quote); with
 * `backslash`, a backslash escapes the next character (E'...'). */
static size_t skip_quoted(const char *t, size_t len, size_t i, char quote, bool backslash)
{
	for (i++; i < len; i++) {
		if (backslash && t[i] == '\\') {
			i++;
		} else if (t[i] == quote) {
			if (i + 1 < len && t[i + 1] == quote)
				i++;
			else
				return i + 1;
		}
	}
	return len;
}

/* The tag of a dollar quote at t[i] ("$$" or "$tag$"): its length with
 * both dollars, or 0 when t[i] does not start one. */
static size_t dollar_tag_len(const char *t, size_t len, size_t i)
{
	size_t j = i + 1;

	if (j < len && !is_ident_start((unsigned char)t[j]) && t[j] != '$')
		return 0;
	while (j < len && t[j] != '$' && is_ident_char((unsigned char)t[j]))
		j++;
	return j < len && t[j] == '$' ? j - i + 1 : 0;
}

static size_t skip_dollar_quoted(const char *t, size_t len, size_t i, size_t tag_len)
{
	for (size_t j = i + tag_len; j + tag_len <= len; j++)
		if (t[j] == '$' && memcmp(t + j, t + i, tag_len) == 0)
			return j + tag_len;
	return len;
}

static size_t skip_block_comment(const char *t, size_t len, size_t i)
{
	unsigned depth = 0;

	while (i + 1 < len) {
		if (t[i] == '/' && t[i + 1] == '*') {
			depth++;
			i += 2;
		} else if (t[i] == '*' && t[i + 1] == '/') {
			i += 2;
			if (--depth == 0)
				return i;
		} else {
			i++;
		}
	}
	return len;
}

/* A numeric constant: digits, a fraction, an exponent, or a 0x/0o/0b
 * prefix with its digits (and underscores between them). */
static size_t skip_number(const char *t, size_t len, size_t i)
{
	while (i < len) {
		unsigned char c = (unsigned char)t[i];

		if ((c == '+' || c == '-') && (t[i - 1] == 'e' || t[i - 1] == 'E'))
			i++;
		else if (is_ident_char(c) || c == '.')
			i++;
		else
			break;
	}
	return i;
}

/* A one-letter string prefix (E, B, X, N) or U& directly before a quote. */
static bool is_string_prefix(const char *word, size_t n, const char *t, size_t len, size_t end,
			     bool *backslash)
{
	*backslash = n == 1 && (word[0] == 'e' || word[0] == 'E');
	if (n == 1 && strchr("eEbBxXnN", word[0]) && end < len && t[end] == '\'')
		return true;
	return n == 1 && (word[0] == 'u' || word[0] == 'U') && end + 1 < len && t[end] == '&' &&
	       t[end + 1] == '\'';
}

static bool is_boolean(const char *word, size_t n)
{
	return (n == 4 && strncasecmp(word, "true", 4) == 0) ||
	       (n == 5 && strncasecmp(word, "false", 5) == 0);
}

/* A word (identifier or keyword) at t[i]; a string prefix or a boolean
 * becomes "?". Returns where the token ends. */
static size_t sanitize_word(const char *t, size_t len, size_t i, struct sql_out *o)
{
	size_t end = i;
	bool backslash;

	while (end < len && is_ident_char((unsigned char)t[end]))
		end++;
	if (is_string_prefix(t + i, end - i, t, len, end, &backslash)) {
		if (t[end] == '&')
			end++;
		emit_char(o, '?');
		return skip_quoted(t, len, end, '\'', backslash);
	}
	if (is_boolean(t + i, end - i))
		emit_char(o, '?');
	else
		emit(o, t + i, end - i);
	return end;
}

/* "$1" is a parameter and stays; "$tag$...$tag$" is a value. */
static size_t sanitize_dollar(const char *t, size_t len, size_t i, struct sql_out *o)
{
	size_t tag, end = i + 1;

	if (end < len && is_digit((unsigned char)t[end])) {
		while (end < len && is_digit((unsigned char)t[end]))
			end++;
		emit(o, t + i, end - i);
		return end;
	}
	tag = dollar_tag_len(t, len, i);
	if (!tag) {
		emit_char(o, '$');
		return i + 1;
	}
	emit_char(o, '?');
	return skip_dollar_quoted(t, len, i, tag);
}

static size_t sanitize_token(const char *t, size_t len, size_t i, struct sql_out *o)
{
	unsigned char c = (unsigned char)t[i];
	bool after_word = i > 0 && is_ident_char((unsigned char)t[i - 1]);

	if (c == '\'') {
		emit_char(o, '?');
		return skip_quoted(t, len, i, '\'', false);
	}
	if (c == '"') {
		size_t end = skip_quoted(t, len, i, '"', false);

		emit(o, t + i, end - i);
		return end;
	}
	if (c == '$')
		return sanitize_dollar(t, len, i, o);
	if (!after_word && (is_digit(c) || (c == '.' && i + 1 < len && is_digit((unsigned char)t[i + 1])))) {
		emit_char(o, '?');
		return skip_number(t, len, i + 1);
	}
	if (is_ident_start(c))
		return sanitize_word(t, len, i, o);
	emit_char(o, (char)c);
	return i + 1;
}

size_t sql_sanitize(const char *t, size_t len, char *out, size_t size, bool *cut)
{
	struct sql_out o = { .buf = out, .size = size };
	size_t i = 0;

	while (i < len && !o.cut && t[i] != '\0') {
		if (is_space((unsigned char)t[i])) {
			if (o.len && o.buf[o.len - 1] != ' ')
				emit_char(&o, ' ');
			i++;
		} else if (t[i] == '-' && i + 1 < len && t[i + 1] == '-') {
			while (i < len && t[i] != '\n')
				i++;
		} else if (t[i] == '/' && i + 1 < len && t[i + 1] == '*') {
			i = skip_block_comment(t, len, i);
		} else {
			i = sanitize_token(t, len, i, &o);
		}
	}
	while (o.len && o.buf[o.len - 1] == ' ')
		o.len--;
	if (size)
		out[o.len] = '\0';
	*cut = o.cut;
	return o.len;
}

/* ---- summarising --------------------------------------------------------- */

/* A token of sanitised text: a word (dotted and quoted parts together) or
 * one character. */
struct sql_token {
	const char *start;
	size_t len;
	bool word;
};

static const char *next_token(const char *p, struct sql_token *tok)
{
	while (*p == ' ')
		p++;
	tok->start = p;
	tok->word = is_ident_start((unsigned char)*p) || *p == '"';
	if (!*p) {
		tok->len = 0;
		return p;
	}
	if (!tok->word) {
		tok->len = 1;
		return p + 1;
	}
	while (is_ident_char((unsigned char)*p) || *p == '"' || *p == '.') {
		if (*p == '"') {
			const char *close = strchr(p + 1, '"');

			p = close ? close + 1 : p + strlen(p);
		} else {
			p++;
		}
	}
	tok->len = (size_t)(p - tok->start);
	return p;
}

static bool token_is(const struct sql_token *tok, const char *word)
{
	return tok->word && strlen(word) == tok->len && strncasecmp(tok->start, word, tok->len) == 0;
}

static bool token_is_any(const struct sql_token *tok, const char *const *words)
{
	for (; *words; words++)
		if (token_is(tok, *words))
			return true;
	return false;
}

/* Words after which the next token names a table: in a FROM list (where
 * a name followed by "(" is a function), or anywhere else (where "(" opens
 * a column list). */
static const char *const table_in_list[] = { "FROM", "JOIN", "USING", NULL };
static const char *const table_named[] = { "INTO", "UPDATE", "COPY", "TABLE", NULL };
/* Words that end a FROM list. */
static const char *const list_end[] = { "WHERE", "GROUP", "ORDER", "HAVING", "LIMIT", "OFFSET",
					"UNION", "INTERSECT", "EXCEPT", "WINDOW", "FOR", "ON",
					"SET", "VALUES", "RETURNING", "INNER", "LEFT", "RIGHT",
					"FULL", "CROSS", "NATURAL", NULL };
/* Where COPY reads or writes: not tables. */
static const char *const copy_ends[] = { "STDIN", "STDOUT", "PROGRAM", NULL };

enum want { WANT_NONE, WANT_LISTED, WANT_NAMED };

struct table_refs {
	unsigned count;
	bool unknown; /* a subquery or a function where a table would be */
	struct sql_token first;
};

static void note_table(struct table_refs *refs, const struct sql_token *tok, const char *after,
		       enum want want)
{
	struct sql_token peek;

	next_token(after, &peek);
	if (!tok->word || (want == WANT_LISTED && peek.len == 1 && *peek.start == '(')) {
		refs->unknown = true;
		return;
	}
	if (token_is_any(tok, copy_ends))
		return;
	if (refs->count++ == 0)
		refs->first = *tok;
}

static void copy_upper(char *out, size_t size, const struct sql_token *tok)
{
	size_t n = tok->len < size - 1 ? tok->len : size - 1;

	for (size_t i = 0; i < n; i++) {
		char c = tok->start[i];

		out[i] = c >= 'a' && c <= 'z' ? (char)(c - 32) : c;
	}
	out[n] = '\0';
}

static bool is_char(const struct sql_token *tok, char c)
{
	return tok->len == 1 && *tok->start == c;
}

/* Counts the table references of a statement, at every depth. */
static void find_tables(const char *p, struct table_refs *refs)
{
	struct sql_token tok;
	int depth = 0, list_depth = -1;
	enum want want = WANT_NONE;

	for (p = next_token(p, &tok); tok.len; p = next_token(p, &tok)) {
		if (want != WANT_NONE && !token_is(&tok, "ONLY")) {
			note_table(refs, &tok, p, want);
			want = WANT_NONE;
			continue;
		}
		if (is_char(&tok, '('))
			depth++;
		else if (is_char(&tok, ')') && depth-- == list_depth)
			list_depth = -1;
		else if (is_char(&tok, ',') && depth == list_depth)
			want = WANT_LISTED;
		else if (depth == list_depth && token_is_any(&tok, list_end))
			list_depth = -1;
		if (token_is_any(&tok, table_in_list))
			want = WANT_LISTED;
		else if (token_is_any(&tok, table_named))
			want = WANT_NAMED;
		if (token_is(&tok, "FROM"))
			list_depth = depth;
	}
}

void sql_summarize(const char *sanitized, char *operation, size_t op_size, char *collection,
		   size_t coll_size)
{
	struct table_refs refs = { 0 };
	struct sql_token tok;
	const char *p = sanitized;

	operation[0] = collection[0] = '\0';
	do
		p = next_token(p, &tok);
	while (tok.len == 1 && *tok.start == '(');
	if (!tok.word)
		return;
	copy_upper(operation, op_size, &tok);
	if (token_is(&tok, "UPDATE") || token_is(&tok, "COPY"))
		p = tok.start; /* the table follows the operation itself */
	find_tables(p, &refs);
	if (refs.count == 1 && !refs.unknown) {
		size_t n = refs.first.len < coll_size - 1 ? refs.first.len : coll_size - 1;

		memcpy(collection, refs.first.start, n);
		collection[n] = '\0';
	}
}
