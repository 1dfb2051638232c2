#include "otlp_kv.h"

#include <string.h>

bool otlp_kv_init(struct otlp_kv_list *l, struct arena *a, size_t max)
{
	l->arena = a;
	l->n = 0;
	l->max = max;
	l->failed = false;
	l->kv = arena_alloc(a, (max + 1) * sizeof(*l->kv));
	return l->kv != NULL;
}

char *otlp_text_copy(struct arena *a, const struct log_redaction *r, const char *text,
		     size_t len)
{
	size_t room = (r ? LOGLINE_TEXT_MAX : len) + 1;
	char *out = arena_alloc(a, room);

	if (!out)
		return NULL;
	if (r) {
		log_redact(r, text, len, out, room);
	} else {
		memcpy(out, text, len);
		out[len] = '\0';
	}
	return out;
}

static Otlp__AnyValue *add(struct otlp_kv_list *l, const char *key)
{
	Otlp__KeyValue *kv;
	Otlp__AnyValue *value;

	if (l->skip_key && strcmp(key, l->skip_key) == 0)
		return NULL;
	kv = arena_alloc(l->arena, sizeof(*kv));
	value = arena_alloc(l->arena, sizeof(*value));
	if (!kv || !value || l->n == l->max) {
		l->failed = true;
		return NULL;
	}
	otlp__key_value__init(kv);
	otlp__any_value__init(value);
	kv->key = l->copy ? otlp_text_copy(l->arena, NULL, key, strlen(key)) : (char *)key;
	if (!kv->key) {
		l->failed = true;
		return NULL;
	}
	kv->value = value;
	l->kv[l->n++] = kv;
	return value;
}

static void put_str(void *ctx, const char *key, const char *text)
{
	struct otlp_kv_list *l = ctx;
	Otlp__AnyValue *v = add(l, key);

	if (!v)
		return;
	v->value_case = OTLP__ANY_VALUE__VALUE_STRING_VALUE;
	v->string_value = l->copy ? otlp_text_copy(l->arena, l->redaction, text, strlen(text))
				  : (char *)text;
	if (!v->string_value)
		l->failed = true;
}

static void put_i64(void *ctx, const char *key, int64_t number)
{
	Otlp__AnyValue *v = add(ctx, key);

	if (v) {
		v->value_case = OTLP__ANY_VALUE__VALUE_INT_VALUE;
		v->int_value = number;
	}
}

static void put_bool(void *ctx, const char *key, bool flag)
{
	Otlp__AnyValue *v = add(ctx, key);

	if (v) {
		v->value_case = OTLP__ANY_VALUE__VALUE_BOOL_VALUE;
		v->bool_value = flag;
	}
}

struct attr_sink otlp_kv_sink(struct otlp_kv_list *l)
{
	return (struct attr_sink){ put_str, put_i64, put_bool, l };
}
