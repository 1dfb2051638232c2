#include "otlp_config.h"

#include "kvlist.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_HTTP_ENDPOINT "http://localhost:4318"
#define DEFAULT_GRPC_ENDPOINT "http://localhost:4317"
/* Each signal's part of its variables' names, and its OTLP/HTTP path. */
static const struct {
	const char *name;
	const char *http_path;
} signals[OTLP_SIGNALS] = {
	[OTLP_TRACES] = { "TRACES", "/v1/traces" },
	[OTLP_METRICS] = { "METRICS", "/v1/metrics" },
	[OTLP_LOGS] = { "LOGS", "/v1/logs" },
};

/* Each setting's variable (after OTEL_EXPORTER_OTLP_ or
 * OTEL_EXPORTER_OTLP_<SIGNAL>_) and flag. */
static const struct {
	const char *suffix;
	const char *flag;
} names[OTLP_SETTINGS] = {
	[OTLP_PROTOCOL] = { "PROTOCOL", "otlp-protocol" },
	[OTLP_ENDPOINT] = { "ENDPOINT", "otlp-endpoint" },
	[OTLP_HEADERS] = { "HEADERS", "otlp-headers" },
	[OTLP_COMPRESSION] = { "COMPRESSION", "otlp-compression" },
	[OTLP_TIMEOUT] = { "TIMEOUT", "otlp-timeout-ms" },
	[OTLP_CERTIFICATE] = { "CERTIFICATE", "otlp-certificate" },
	[OTLP_CLIENT_CERTIFICATE] = { "CLIENT_CERTIFICATE", "otlp-client-certificate" },
	[OTLP_CLIENT_KEY] = { "CLIENT_KEY", "otlp-client-key" },
	[OTLP_INSECURE] = { "INSECURE", "otlp-insecure" },
};

void otlp_settings_from_env(struct otlp_settings *s, enum otlp_signal signal,
			    const struct config_env *env)
{
	memset(s, 0, sizeof(*s));
	s->signal = signal;
	for (int i = 0; i < OTLP_SETTINGS; i++) {
		for (int specific = 0; specific < 2; specific++) {
			char name[48];
			const char *v;

			snprintf(name, sizeof(name), "OTEL_EXPORTER_OTLP_%s%s%s",
				 specific ? signals[signal].name : "", specific ? "_" : "",
				 names[i].suffix);
			v = env->get(env->ctx, name);
			if (!v || !v[0])
				continue;
			s->value[i].text = v;
			s->value[i].signal_only = specific;
			snprintf(s->value[i].source, sizeof(s->value[i].source), "%s", name);
		}
	}
}

const char *otlp_setting_flag(enum otlp_setting which)
{
	return names[which].flag;
}

void otlp_settings_set_flag(struct otlp_settings *s, enum otlp_setting which, const char *text)
{
	s->value[which].text = text;
	s->value[which].signal_only = false;
	snprintf(s->value[which].source, sizeof(s->value[which].source), "--%s", names[which].flag);
}

bool otlp_settings_have_endpoint(const struct otlp_settings *s)
{
	return s->value[OTLP_ENDPOINT].text != NULL;
}

static int parse_protocol(const struct otlp_settings *s, struct otlp_opts *out, char *err,
			  size_t size)
{
	const char *v = s->value[OTLP_PROTOCOL].text;

	if (!v || strcmp(v, "http/protobuf") == 0)
		out->protocol = OTLP_HTTP_PROTOBUF;
	else if (strcmp(v, "grpc") == 0)
		out->protocol = OTLP_GRPC;
	else
		return errorf(err, size, "%s: \"%s\" is not one of grpc, http/protobuf%s",
			    s->value[OTLP_PROTOCOL].source, v,
			    strcmp(v, "http/json") == 0 ? " (http/json is not supported)" : "");
	return 0;
}

static int parse_bool(const struct otlp_settings *s, enum otlp_setting which, bool *out,
		      char *err, size_t size)
{
	const char *v = s->value[which].text;

	*out = false;
	if (!v)
		return 0;
	if (strcasecmp(v, "true") == 0)
		*out = true;
	else if (strcasecmp(v, "false") != 0)
		return errorf(err, size, "%s: \"%s\" is not true or false", s->value[which].source, v);
	return 0;
}

static bool has_scheme(const char *url)
{
	return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* gRPC: scheme://host:port, the path dropped (the method is the path);
 * with no scheme, OTEL_EXPORTER_OTLP_INSECURE chooses h2c or TLS. */
static int grpc_url(const struct otlp_settings *s, bool insecure, struct otlp_opts *out,
		    char *err, size_t size)
{
	const char *v = s->value[OTLP_ENDPOINT].text ? s->value[OTLP_ENDPOINT].text
						     : DEFAULT_GRPC_ENDPOINT;
	const char *host;
	size_t len;

	if (has_scheme(v)) {
		host = strstr(v, "://") + 3;
		len = (size_t)(host - v) + strcspn(host, "/?#");
		snprintf(out->url, sizeof(out->url), "%.*s", (int)len, v);
	} else {
		host = v;
		snprintf(out->url, sizeof(out->url), "%s://%.*s", insecure ? "http" : "https",
			 (int)strcspn(v, "/?#"), v);
	}
	if (!host[0] || host[0] == '/' || strchr(v, ' '))
		return errorf(err, size, "%s: \"%s\" is not an endpoint like http://host:4317",
			    s->value[OTLP_ENDPOINT].source, v);
	return 0;
}

/* http/protobuf: the signal's own variable is the URL as given; the
 * generic one is a base that the signal's path ("/v1/traces") is appended
 * to. */
static int http_url(const struct otlp_settings *s, struct otlp_opts *out, char *err, size_t size)
{
	const char *v = s->value[OTLP_ENDPOINT].text ? s->value[OTLP_ENDPOINT].text
						     : DEFAULT_HTTP_ENDPOINT;
	size_t len = strlen(v);

	if (!has_scheme(v) || strchr(v, ' ') || !strstr(v, "://")[3])
		return errorf(err, size, "%s: \"%s\" is not a URL like http://host:4318",
			    s->value[OTLP_ENDPOINT].source, v);
	if (s->value[OTLP_ENDPOINT].signal_only) {
		snprintf(out->url, sizeof(out->url), "%s", v);
		return 0;
	}
	while (len && v[len - 1] == '/')
		len--;
	snprintf(out->url, sizeof(out->url), "%.*s%s", (int)len, v, signals[s->signal].http_path);
	return 0;
}

static int check_headers(const struct otlp_settings *s, struct otlp_opts *out, char *err,
			 size_t size)
{
	const char *v = s->value[OTLP_HEADERS].text;
	struct kv_cursor cur = { .next = v };
	char key[128], value[1024];
	enum kv_result r;

	if (!v)
		return 0;
	if (strlen(v) >= sizeof(out->headers))
		return errorf(err, size, "%s: longer than %zu characters", s->value[OTLP_HEADERS].source,
			    sizeof(out->headers) - 1);
	while ((r = kv_next(&cur, key, sizeof(key), value, sizeof(value))) != KV_END)
		if (r == KV_BAD || strpbrk(key, " :\r\n") || strpbrk(value, "\r\n"))
			return errorf(err, size,
				    "%s: not a list of key=value pairs (values percent-encoded)",
				    s->value[OTLP_HEADERS].source);
	snprintf(out->headers, sizeof(out->headers), "%s", v);
	return 0;
}

static int parse_compression(const struct otlp_settings *s, struct otlp_opts *out, char *err,
			     size_t size)
{
	const char *v = s->value[OTLP_COMPRESSION].text;

	out->gzip = v && strcmp(v, "gzip") == 0;
	if (v && !out->gzip && strcmp(v, "none") != 0)
		return errorf(err, size, "%s: \"%s\" is not one of gzip, none",
			    s->value[OTLP_COMPRESSION].source, v);
	return 0;
}

static int parse_timeout(const struct otlp_settings *s, struct otlp_opts *out, char *err,
			 size_t size)
{
	const char *v = s->value[OTLP_TIMEOUT].text;
	char *end;
	long long ms;

	out->timeout_ms = DEFAULT_TIMEOUT_MS;
	if (!v)
		return 0;
	errno = 0;
	ms = strtoll(v, &end, 10);
	if (errno || end == v || *end || ms < 1 || ms > 3600000)
		return errorf(err, size, "%s: \"%s\" is not a time in ms from 1 to 3600000",
			    s->value[OTLP_TIMEOUT].source, v);
	out->timeout_ms = (uint32_t)ms;
	return 0;
}

/* A file that cannot be read now would fail every export later. */
static int readable_file(const struct otlp_settings *s, enum otlp_setting which, char *out,
			 size_t out_size, char *err, size_t size)
{
	const char *v = s->value[which].text;

	out[0] = '\0';
	if (!v)
		return 0;
	if (strlen(v) >= out_size || access(v, R_OK) != 0)
		return errorf(err, size, "%s: cannot read \"%s\": %s", s->value[which].source, v,
			    strlen(v) >= out_size ? "path too long" : strerror(errno));
	snprintf(out, out_size, "%s", v);
	return 0;
}

/* A URL libcurl itself could not parse would fail every export later. */
static int check_url(const struct otlp_settings *s, const char *url, char *err, size_t size)
{
	CURLU *u = curl_url();
	CURLUcode rc;

	if (!u)
		return errorf(err, size, "out of memory");
	rc = curl_url_set(u, CURLUPART_URL, url, 0);
	curl_url_cleanup(u);
	if (rc)
		return errorf(err, size, "%s: \"%s\" is not a URL: %s",
			    s->value[OTLP_ENDPOINT].source[0] ? s->value[OTLP_ENDPOINT].source
							      : "the OTLP endpoint",
			    url, curl_url_strerror(rc));
	return 0;
}

int otlp_settings_check(const struct otlp_settings *s, char *err, size_t err_size)
{
	struct otlp_opts opts;

	return parse_protocol(s, &opts, err, err_size) ||
	       parse_compression(s, &opts, err, err_size) ||
	       parse_timeout(s, &opts, err, err_size);
}

int otlp_settings_resolve(const struct otlp_settings *s, struct otlp_opts *out, char *err,
			  size_t err_size)
{
	bool insecure;

	memset(out, 0, sizeof(*out));
	out->signal = s->signal;
	if (parse_protocol(s, out, err, err_size) ||
	    parse_bool(s, OTLP_INSECURE, &insecure, err, err_size) ||
	    (out->protocol == OTLP_GRPC ? grpc_url(s, insecure, out, err, err_size)
					: http_url(s, out, err, err_size)) ||
	    check_headers(s, out, err, err_size) || parse_compression(s, out, err, err_size) ||
	    parse_timeout(s, out, err, err_size) ||
	    readable_file(s, OTLP_CERTIFICATE, out->certificate, sizeof(out->certificate), err,
			  err_size) ||
	    readable_file(s, OTLP_CLIENT_CERTIFICATE, out->client_certificate,
			  sizeof(out->client_certificate), err, err_size) ||
	    readable_file(s, OTLP_CLIENT_KEY, out->client_key, sizeof(out->client_key), err,
			  err_size))
		return -1;
	if (check_url(s, out->url, err, err_size))
		return -1;
	if (!out->client_certificate[0] != !out->client_key[0])
		return errorf(err, err_size,
			    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and _CLIENT_KEY go together: "
			    "only one is set");
	return 0;
}
