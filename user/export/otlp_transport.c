#include "otlp_transport.h"

#include "bytes.h"
#include "clock.h"
#include "h2c.h"
#include "kvlist.h"
#include "log.h"
#include "span.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

static const char *const grpc_paths[OTLP_SIGNALS] = {
	[OTLP_TRACES] = "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
	[OTLP_METRICS] = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
	[OTLP_LOGS] = "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
};
#define GRPC_PREFIX 5            /* compressed flag, 32-bit big-endian length */
#define RESPONSE_MAX (64 * 1024) /* more is not an OTLP response; cut */

_Static_assert(GRPC_PREFIX <= OTLP_ENCODE_HEADROOM, "the gRPC prefix fits the headroom");

/* gRPC status codes the OTLP specification calls retryable. */
enum grpc_code {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_ABORTED = 10,
	GRPC_OUT_OF_RANGE = 11,
	GRPC_UNAVAILABLE = 14,
	GRPC_DATA_LOSS = 15,
};

/* What the collector said in one attempt. */
struct answer {
	long http_status;
	int grpc_status;           /* -1: no grpc-status seen */
	char grpc_message[160];
	int64_t retry_after_ms;
	uint8_t details[512];      /* decoded grpc-status-details-bin */
	size_t details_len;
	uint8_t body[RESPONSE_MAX];
	size_t body_len;
	bool body_cut;
};

struct otlp_transport {
	struct otlp_opts opts;
	char url[600];
	CURL *curl;                /* TLS, and OTLP/HTTP */
	struct h2c *h2c;           /* gRPC without TLS */
	struct curl_slist *headers;
	struct h2c_field fields[H2C_FIELDS_MAX]; /* the headers, for h2c */
	size_t nfields;
	char curl_error[CURL_ERROR_SIZE];
	z_stream zs;
	bool zs_ready;
	struct bytes frame;        /* the compressed request, with gzip */
	const uint8_t *body;       /* the prepared request, as sent */
	size_t body_len;
	struct answer answer;
};

static int add_header(struct otlp_transport *t, const char *line)
{
	struct curl_slist *more = curl_slist_append(t->headers, line);

	if (!more)
		return -ENOMEM;
	t->headers = more;
	return 0;
}

/* gRPC metadata keys are lower-case on the wire; HTTP does not mind. */
static int add_user_headers(struct otlp_transport *t)
{
	struct kv_cursor cur = { .next = t->opts.headers };
	char key[128], value[1024], line[1200];
	enum kv_result r;

	while ((r = kv_next(&cur, key, sizeof(key), value, sizeof(value))) != KV_END) {
		if (r != KV_PAIR)
			continue;
		for (char *c = key; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		snprintf(line, sizeof(line), "%s: %s", key, value);
		if (add_header(t, line))
			return -ENOMEM;
	}
	return 0;
}

static int build_headers(struct otlp_transport *t)
{
	char line[64];
	int err = 0;

	/* curl would otherwise wait for "100 Continue" on larger bodies. */
	err |= add_header(t, "Expect:");
	if (t->opts.protocol == OTLP_GRPC) {
		err |= add_header(t, "content-type: application/grpc");
		err |= add_header(t, "te: trailers");
		snprintf(line, sizeof(line), "grpc-timeout: %um", t->opts.timeout_ms);
		err |= add_header(t, line);
		if (t->opts.gzip)
			err |= add_header(t, "grpc-encoding: gzip");
	} else {
		err |= add_header(t, "Content-Type: application/x-protobuf");
		if (t->opts.gzip)
			err |= add_header(t, "Content-Encoding: gzip");
	}
	return err ? -ENOMEM : add_user_headers(t);
}

static void parse_retry_after(struct answer *a, const char *value)
{
	char *end;
	long long secs = strtoll(value, &end, 10);
	time_t when;

	if (end != value && secs >= 0) {
		a->retry_after_ms = secs * 1000;
		return;
	}
	when = curl_getdate(value, NULL);
	if (when > 0) {
		time_t now = time(NULL);

		a->retry_after_ms = when > now ? (int64_t)(when - now) * 1000 : 0;
	}
}

static int base64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+' || c == '-')
		return 62;
	if (c == '/' || c == '_')
		return 63;
	return -1;
}

/* gRPC sends binary metadata base64-encoded, padding optional. */
static size_t base64_decode(const char *text, uint8_t *out, size_t size)
{
	uint32_t bits = 0;
	int nbits = 0;
	size_t used = 0;

	for (; *text && *text != '='; text++) {
		int v = base64_value(*text);

		if (v < 0)
			return 0;
		bits = bits << 6 | (uint32_t)v;
		nbits += 6;
		if (nbits >= 8) {
			if (used == size)
				return 0;
			nbits -= 8;
			out[used++] = (uint8_t)(bits >> nbits);
		}
	}
	return used;
}

static bool field_is(const char *name, size_t name_len, const char *want)
{
	return name_len == strlen(want) && strncasecmp(name, want, name_len) == 0;
}

/* One header or trailer of the answer, from either transport. */
static void answer_field(void *arg, const char *name, size_t name_len, const char *text,
			 size_t text_len)
{
	struct answer *a = arg;
	char value[1024];

	snprintf(value, sizeof(value), "%.*s", (int)text_len, text);
	if (field_is(name, name_len, "grpc-status")) {
		a->grpc_status = atoi(value);
	} else if (field_is(name, name_len, "grpc-message")) {
		if (!percent_decode(value, value + strlen(value), a->grpc_message,
				    sizeof(a->grpc_message)))
			snprintf(a->grpc_message, sizeof(a->grpc_message), "%s", value);
	} else if (field_is(name, name_len, "grpc-status-details-bin")) {
		a->details_len = base64_decode(value, a->details, sizeof(a->details));
	} else if (field_is(name, name_len, "retry-after")) {
		parse_retry_after(a, value);
	}
}

/* libcurl's header callback: the status line, then "name: value" lines
 * (headers and trailers) with their CRLF. */
static size_t on_header_line(char *line, size_t one, size_t len, void *arg)
{
	const char *colon = memchr(line, ':', len), *v, *end = line + len;

	if (!colon)
		return len;
	for (v = colon + 1; v < end && (*v == ' ' || *v == '\t'); v++)
		;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	answer_field(arg, line, (size_t)(colon - line), v, (size_t)(end - v));
	return len;
}

/* Keeps the first RESPONSE_MAX bytes; the rest is read and discarded so
 * that the connection stays usable. */
static size_t on_body(char *data, size_t one, size_t len, void *arg)
{
	struct answer *a = arg;
	size_t room = RESPONSE_MAX - a->body_len, keep = len < room ? len : room;

	a->body_cut |= keep < len;
	memcpy(a->body + a->body_len, data, keep);
	a->body_len += keep;
	return len;
}

static int gzip_init(struct otlp_transport *t)
{
	/* 15 + 16: a gzip wrapper rather than zlib's, as HTTP and gRPC expect. */
	if (deflateInit2(&t->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	t->zs_ready = true;
	return 0;
}

/* Compresses message into t->frame at offset; returns the length or 0. */
static size_t gzip_into_frame(struct otlp_transport *t, const uint8_t *message, size_t len,
			      size_t offset)
{
	size_t bound = deflateBound(&t->zs, len);

	t->frame.used = 0;
	if (bytes_reserve(&t->frame, offset + bound) || deflateReset(&t->zs) != Z_OK)
		return 0;
	t->zs.next_in = (uint8_t *)message;
	t->zs.avail_in = (uInt)len;
	t->zs.next_out = t->frame.data + offset;
	t->zs.avail_out = (uInt)bound;
	if (deflate(&t->zs, Z_FINISH) != Z_STREAM_END)
		return 0;
	return bound - t->zs.avail_out;
}

static void write_grpc_prefix(uint8_t *at, bool compressed, size_t len)
{
	at[0] = compressed ? 1 : 0;
	at[1] = (uint8_t)(len >> 24);
	at[2] = (uint8_t)(len >> 16);
	at[3] = (uint8_t)(len >> 8);
	at[4] = (uint8_t)len;
}

int otlp_transport_prepare(struct otlp_transport *t, uint8_t *message, size_t len)
{
	bool grpc = t->opts.protocol == OTLP_GRPC;
	size_t offset = grpc ? GRPC_PREFIX : 0, packed;

	if (!t->opts.gzip) {
		if (grpc)
			write_grpc_prefix(message - GRPC_PREFIX, false, len);
		t->body = message - offset;
		t->body_len = offset + len;
		return 0;
	}
	packed = gzip_into_frame(t, message, len, offset);
	if (!packed)
		return -ENOMEM;
	if (grpc)
		write_grpc_prefix(t->frame.data, true, packed);
	t->body = t->frame.data;
	t->body_len = offset + packed;
	return 0;
}

static bool is_https(const char *url)
{
	return strncasecmp(url, "https://", 8) == 0;
}

/* gRPC needs HTTP/2, negotiated by ALPN: curl carries gRPC only over TLS. */
static long http_version(const struct otlp_transport *t)
{
	return t->opts.protocol == OTLP_GRPC ? CURL_HTTP_VERSION_2TLS : CURL_HTTP_VERSION_NONE;
}

/* Cleartext gRPC has its own lasting connection: see h2c.h for why not
 * libcurl's. */
static bool uses_h2c(const struct otlp_transport *t)
{
	return t->opts.protocol == OTLP_GRPC && !is_https(t->url);
}

/* The header lines, split for h2c; curl's "Expect:" (no value) is not one. */
static int setup_h2c(struct otlp_transport *t)
{
	static const char agent[] = "sonde/" SONDE_VERSION;

	t->h2c = h2c_new(t->url);
	if (!t->h2c)
		return -EINVAL;
	t->fields[t->nfields++] = (struct h2c_field){ "user-agent", 10, agent, sizeof(agent) - 1 };
	for (const struct curl_slist *h = t->headers; h; h = h->next) {
		const char *colon = strchr(h->data, ':'), *value;

		if (!colon || !colon[1])
			continue;
		if (t->nfields == H2C_FIELDS_MAX)
			return -E2BIG;
		for (value = colon + 1; *value == ' '; value++)
			;
		t->fields[t->nfields++] = (struct h2c_field){
			h->data, (size_t)(colon - h->data), value, strlen(value)
		};
	}
	return 0;
}

static int setup_curl(struct otlp_transport *t)
{
	CURL *c = t->curl;
	CURLcode rc = CURLE_OK;

	rc |= curl_easy_setopt(c, CURLOPT_URL, t->url);
	rc |= curl_easy_setopt(c, CURLOPT_POST, 1L);
	rc |= curl_easy_setopt(c, CURLOPT_HTTPHEADER, t->headers);
	rc |= curl_easy_setopt(c, CURLOPT_HTTP_VERSION, http_version(t));
	rc |= curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)t->opts.timeout_ms);
	rc |= curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)t->opts.timeout_ms);
	rc |= curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	rc |= curl_easy_setopt(c, CURLOPT_USERAGENT, "sonde/" SONDE_VERSION);
	rc |= curl_easy_setopt(c, CURLOPT_ERRORBUFFER, t->curl_error);
	rc |= curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header_line);
	rc |= curl_easy_setopt(c, CURLOPT_HEADERDATA, &t->answer);
	rc |= curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	rc |= curl_easy_setopt(c, CURLOPT_WRITEDATA, &t->answer);
	rc |= curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	/* --verbose shows the exchange with the collector too. */
	rc |= curl_easy_setopt(c, CURLOPT_VERBOSE, log_get_level() >= LOG_DEBUG ? 1L : 0L);
	if (t->opts.certificate[0])
		rc |= curl_easy_setopt(c, CURLOPT_CAINFO, t->opts.certificate);
	if (t->opts.client_certificate[0])
		rc |= curl_easy_setopt(c, CURLOPT_SSLCERT, t->opts.client_certificate);
	if (t->opts.client_key[0])
		rc |= curl_easy_setopt(c, CURLOPT_SSLKEY, t->opts.client_key);
	return rc == CURLE_OK ? 0 : -EINVAL;
}

int otlp_transport_new(struct otlp_transport **out, const struct otlp_opts *opts, char *err,
		       size_t err_size)
{
	struct otlp_transport *t = calloc(1, sizeof(*t));
	const char *why = "out of memory";
	int ret = -ENOMEM;

	if (!t)
		return errorf(err, err_size, "OTLP exporter: %s", why), -ENOMEM;
	t->opts = *opts;
	snprintf(t->url, sizeof(t->url), "%s%s", opts->url,
		 opts->protocol == OTLP_GRPC ? grpc_paths[opts->signal] : "");
	if (!uses_h2c(t) &&
	    (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(t->curl = curl_easy_init()))) {
		why = "libcurl did not initialise";
		goto fail;
	}
	if (build_headers(t) || (opts->gzip && gzip_init(t)))
		goto fail;
	if (uses_h2c(t)) {
		ret = setup_h2c(t);
		why = ret == -EINVAL ? "the endpoint is not an http:// URL with a host"
				     : "too many OTEL_EXPORTER_OTLP_HEADERS";
	} else {
		ret = setup_curl(t);
		why = "libcurl refused an option (built without HTTP/2 or TLS?)";
	}
	if (ret)
		goto fail;
	*out = t;
	return 0;
fail:
	otlp_transport_free(t);
	errorf(err, err_size, "OTLP exporter: %s", why);
	return ret;
}

void otlp_transport_free(struct otlp_transport *t)
{
	if (!t)
		return;
	if (t->curl)
		curl_easy_cleanup(t->curl);
	h2c_free(t->h2c);
	curl_slist_free_all(t->headers);
	if (t->zs_ready)
		deflateEnd(&t->zs);
	bytes_free(&t->frame);
	free(t);
}

static void set_reason(struct otlp_reply *reply, enum otlp_outcome outcome, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_reason(struct otlp_reply *reply, enum otlp_outcome outcome, const char *fmt, ...)
{
	va_list ap;

	reply->outcome = outcome;
	va_start(ap, fmt);
	vsnprintf(reply->reason, sizeof(reply->reason), fmt, ap);
	va_end(ap);
}

/* TLS problems are configuration: the same certificate fails again. */
static bool is_tls_config_error(CURLcode rc)
{
	return rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
	       rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_SSL_ISSUER_ERROR ||
	       rc == CURLE_SSL_CIPHER || rc == CURLE_SSL_CRL_BADFILE;
}

static void set_timeout_reason(const struct otlp_transport *t, struct otlp_reply *reply,
			       const char *detail)
{
	set_reason(reply, OTLP_RETRYABLE, "no answer within %u ms (OTEL_EXPORTER_OTLP_TIMEOUT): %s",
		   t->opts.timeout_ms, detail);
}

static void classify_curl_error(struct otlp_transport *t, CURLcode rc, struct otlp_reply *reply)
{
	const char *detail = t->curl_error[0] ? t->curl_error : curl_easy_strerror(rc);

	if (rc == CURLE_OPERATION_TIMEDOUT)
		set_timeout_reason(t, reply, detail);
	else if (is_tls_config_error(rc))
		set_reason(reply, OTLP_UNDELIVERABLE, "TLS: %s", detail);
	else
		set_reason(reply, OTLP_RETRYABLE, "%s", detail);
}

static void read_partial_success(const uint8_t *message, size_t len, struct otlp_reply *reply)
{
	if (otlp_decode_response(message, len, &reply->partial))
		snprintf(reply->reason, sizeof(reply->reason),
			 "accepted, but the response (%zu bytes) did not decode", len);
}

static bool http_status_retryable(long status)
{
	return status == 429 || status == 502 || status == 503 || status == 504;
}

static void classify_http(struct otlp_transport *t, struct otlp_reply *reply)
{
	struct answer *a = &t->answer;
	char why[160];

	if (a->http_status >= 200 && a->http_status < 300) {
		reply->outcome = OTLP_OK;
		if (!a->body_cut)
			read_partial_success(a->body, a->body_len, reply);
		return;
	}
	/* A refusal's body is a google.rpc.Status whose message says why. */
	if (!otlp_rpc_status_message(a->body, a->body_len, why, sizeof(why)))
		why[0] = '\0';
	set_reason(reply, http_status_retryable(a->http_status) ? OTLP_RETRYABLE : OTLP_REFUSED,
		   "HTTP %ld%s%s", a->http_status, why[0] ? ": " : "", why);
}

static bool grpc_code_retryable(int code, bool has_retry_info)
{
	switch (code) {
	case GRPC_CANCELLED:
	case GRPC_DEADLINE_EXCEEDED:
	case GRPC_ABORTED:
	case GRPC_OUT_OF_RANGE:
	case GRPC_UNAVAILABLE:
	case GRPC_DATA_LOSS:
		return true;
	case GRPC_RESOURCE_EXHAUSTED:
		/* Only a server that says when to come back may be retried. */
		return has_retry_info;
	default:
		return false;
	}
}

static void read_grpc_message(const struct answer *a, struct otlp_reply *reply)
{
	size_t len;

	/* No message (a trailers-only answer) means full success. */
	if (a->body_len < GRPC_PREFIX || a->body_cut)
		return;
	len = (size_t)a->body[1] << 24 | (size_t)a->body[2] << 16 | (size_t)a->body[3] << 8 |
	      a->body[4];
	/* We never offer grpc-accept-encoding, so a compressed answer is a
	 * server's error; the export itself succeeded. */
	if (a->body[0] != 0 || len > a->body_len - GRPC_PREFIX)
		return;
	read_partial_success(a->body + GRPC_PREFIX, len, reply);
}

static void classify_grpc(struct otlp_transport *t, struct otlp_reply *reply)
{
	struct answer *a = &t->answer;
	int64_t retry_info_ms;

	if (a->http_status != 200) {
		set_reason(reply, http_status_retryable(a->http_status) ? OTLP_RETRYABLE : OTLP_REFUSED,
			   "gRPC over HTTP %ld (is %s a gRPC endpoint?)", a->http_status, t->opts.url);
		return;
	}
	if (a->grpc_status < 0) {
		set_reason(reply, OTLP_RETRYABLE, "gRPC: the stream ended without grpc-status");
		return;
	}
	if (a->grpc_status == GRPC_OK) {
		reply->outcome = OTLP_OK;
		read_grpc_message(a, reply);
		return;
	}
	retry_info_ms = a->details_len ? otlp_retry_info_delay_ms(a->details, a->details_len) : -1;
	if (retry_info_ms >= 0)
		reply->retry_after_ms = retry_info_ms;
	set_reason(reply,
		   grpc_code_retryable(a->grpc_status, retry_info_ms >= 0) ? OTLP_RETRYABLE
									   : OTLP_REFUSED,
		   "gRPC status %d%s%s", a->grpc_status, a->grpc_message[0] ? ": " : "",
		   a->grpc_message);
}

static void reset_answer(struct answer *a)
{
	a->http_status = 0;
	a->grpc_status = -1;
	a->grpc_message[0] = '\0';
	a->retry_after_ms = -1;
	a->details_len = 0;
	a->body_len = 0;
	a->body_cut = false;
}

static void on_h2c_data(void *arg, const uint8_t *data, size_t len)
{
	on_body((char *)data, 1, len, arg);
}

static void send_h2c(struct otlp_transport *t, struct otlp_reply *reply)
{
	struct h2c_answer_sink sink = { answer_field, on_h2c_data, &t->answer };
	uint64_t deadline = monotonic_now_ns() + (uint64_t)t->opts.timeout_ms * 1000000ull;
	char why[256];
	int status = h2c_post(t->h2c, t->fields, t->nfields, t->body, t->body_len, deadline, &sink,
			      why, sizeof(why));

	if (status < 0) {
		if (status == -ETIMEDOUT)
			set_timeout_reason(t, reply, why);
		else
			set_reason(reply, OTLP_RETRYABLE, "%s", why);
		return;
	}
	t->answer.http_status = status;
	reply->retry_after_ms = t->answer.retry_after_ms;
	classify_grpc(t, reply);
}

void otlp_transport_send(struct otlp_transport *t, struct otlp_reply *reply)
{
	CURLcode rc;

	memset(reply, 0, sizeof(*reply));
	reply->retry_after_ms = -1;
	reset_answer(&t->answer);
	if (t->h2c) {
		send_h2c(t, reply);
		return;
	}
	t->curl_error[0] = '\0';
	curl_easy_setopt(t->curl, CURLOPT_POSTFIELDS, t->body);
	curl_easy_setopt(t->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->body_len);
	rc = curl_easy_perform(t->curl);
	if (rc != CURLE_OK) {
		classify_curl_error(t, rc, reply);
		return;
	}
	curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &t->answer.http_status);
	reply->retry_after_ms = t->answer.retry_after_ms;
	if (t->opts.protocol == OTLP_GRPC)
		classify_grpc(t, reply);
	else
		classify_http(t, reply);
}
