/* sns.c — Amazon SNS message signatures and the signing-certificate cache.
 *
 * SignatureVersion 1 is SHA1withRSA and 2 is SHA256withRSA over the
 * canonical string of the message: "Key\nValue\n" for the documented keys in
 * byte order (Notification: Message, MessageId, Subject if present,
 * Timestamp, TopicArn, Type; (Un)SubscriptionConfirmation: Message,
 * MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type). The
 * certificate comes from SigningCertURL, which must be
 * https://sns.<region>.amazonaws.com/….pem: the https fetch (TLS against
 * the system CAs) is what makes the certificate Amazon's. */
#include "collect/webhooks/internal.h"

#include "core/clock.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CERT_MAX_BYTES (64 * 1024)
#define FETCHES_PER_MIN 10
#define NEG_TTL_MS (10 * 60 * 1000) /* a 4xx or a bad PEM */
#define NEG_TTL_SOFT_MS (10 * 1000) /* a network failure */
#define FETCH_WAIT_MS 500           /* how long a request waits for a fetch it started */

/* ---- URLs --------------------------------------------------------------- */

/* An AWS region name: <2 letters>[-gov]-<letters>-<digits> ("us-east-1",
 * "us-gov-west-1", "ap-southeast-2"). Not merely [a-z0-9-]+: that let
 * "sns.s3.amazonaws.com" through, the S3 bucket "sns" under Amazon's own
 * wildcard certificate, where anyone owning that bucket could have served
 * a signing certificate. */
static bool region_ok(const char *r, size_t n)
{
	size_t i = 0;
	if (n < 6 || n > 32)
		return false;
	for (; i < 2; i++)
		if (r[i] < 'a' || r[i] > 'z')
			return false;
	if (r[i++] != '-')
		return false;
	if (n - i > 4 && memcmp(r + i, "gov-", 4) == 0)
		i += 4;
	size_t w = i;
	while (i < n && r[i] >= 'a' && r[i] <= 'z')
		i++;
	if (i == w || i >= n || r[i++] != '-')
		return false;
	size_t d = i;
	while (i < n && r[i] >= '0' && r[i] <= '9')
		i++;
	return i == n && i > d && i - d <= 2;
}

bool tl_wh_sns_url_ok(const char *u, size_t n, bool pem)
{
	static const char pre[] = "https://sns.", suf[] = ".amazonaws.com";
	const size_t pre_n = sizeof pre - 1, suf_n = sizeof suf - 1;
	if (!u || n <= pre_n || n > 2048 || memcmp(u, pre, pre_n) != 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)u[i];
		if (ch <= 0x20 || ch >= 0x7f || ch == '\\' || ch == '#')
			return false;
	}
	/* the authority ends at the first '/' (a '?' before it is refused) */
	size_t h = 8, e = h;
	while (e < n && u[e] != '/' && u[e] != '?')
		e++;
	if (e >= n || u[e] != '/')
		return false;
	/* host = "sns." region ".amazonaws.com"; this leaves no room for
	 * userinfo ('@'), a port (':') or another host */
	if (e - h < 4 + 1 + suf_n || memcmp(u + e - suf_n, suf, suf_n) != 0)
		return false;
	if (!region_ok(u + h + 4, e - suf_n - (h + 4)))
		return false;
	if (pem) { /* "/SimpleNotificationService-<hex>.pem", as SNS signs with */
		static const char cp[] = "/SimpleNotificationService-";
		const size_t cp_n = sizeof cp - 1;
		if (n - e < cp_n + 1 + 4 || n - e > cp_n + 64 + 4 || memcmp(u + e, cp, cp_n) != 0 ||
		    memcmp(u + n - 4, ".pem", 4) != 0)
			return false;
		for (size_t i = e + cp_n; i < n - 4; i++)
			if (!((u[i] >= '0' && u[i] <= '9') || (u[i] >= 'a' && u[i] <= 'f')))
				return false;
	}
	return true;
}

/* ---- the certificate cache ---------------------------------------------- */

struct cert_entry {
	char *url;
	X509 *x;    /* NULL: a remembered failure, or not fetched yet */
	int neg_rc; /* … with this code */
	int64_t neg_until_ms;
	uint64_t used;      /* LRU tick */
	bool fetching;      /* queued for the fetcher thread or being fetched: never evicted */
	bool queued;        /* … not taken by it yet */
	int64_t queued_now; /* the clock of the request that queued it */
};

struct tl_sns_certs {
	pthread_mutex_t mu;
	pthread_cond_t work; /* an entry was queued, or stopping */
	pthread_cond_t done; /* a fetch ended */
	pthread_t thread;
	bool started, stopping;
	int wait_ms;
	tl_webhook_fetch_fn fetch;
	void *arg;
	struct cert_entry *e;
	size_t n, max;
	uint64_t tick;
	int64_t window_ms;
	int window_fetches;
};

int tl_sns_certs_create(size_t max_entries, tl_webhook_fetch_fn fetch, void *arg, struct tl_sns_certs **out)
{
	*out = NULL;
	if (max_entries == 0)
		max_entries = 16;
	struct tl_sns_certs *c = calloc(1, sizeof *c);
	if (!c)
		return -TL_ENOMEM;
	c->e = calloc(max_entries, sizeof *c->e);
	if (!c->e || pthread_mutex_init(&c->mu, NULL) != 0) {
		free(c->e);
		free(c);
		return -TL_ENOMEM;
	}
	if (tl_cond_init_mono(&c->work) != 0 || tl_cond_init_mono(&c->done) != 0) {
		pthread_mutex_destroy(&c->mu);
		free(c->e);
		free(c);
		return -TL_ENOMEM;
	}
	c->max = max_entries;
	c->fetch = fetch;
	c->arg = arg;
	c->wait_ms = FETCH_WAIT_MS;
	*out = c;
	return 0;
}

void tl_sns_certs_set_wait(struct tl_sns_certs *c, int wait_ms)
{
	pthread_mutex_lock(&c->mu);
	c->wait_ms = wait_ms;
	pthread_mutex_unlock(&c->mu);
}

void tl_sns_certs_destroy(struct tl_sns_certs *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	c->stopping = true;
	pthread_cond_signal(&c->work);
	pthread_mutex_unlock(&c->mu);
	if (c->started)
		pthread_join(c->thread, NULL); /* a fetch in flight ends within its timeout */
	for (size_t i = 0; i < c->n; i++) {
		free(c->e[i].url);
		X509_free(c->e[i].x);
	}
	free(c->e);
	pthread_cond_destroy(&c->work);
	pthread_cond_destroy(&c->done);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static X509 *parse_pem(const struct tl_buf *b)
{
	if (!b->len || b->len > INT32_MAX)
		return NULL;
	BIO *bio = BIO_new_mem_buf(b->data, (int)b->len);
	X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	return x;
}

static struct cert_entry *find(struct tl_sns_certs *c, const char *url)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->e[i].url, url) == 0)
			return &c->e[i];
	return NULL;
}

/* The entry for url: an existing one, or a free / least recently used slot
 * (not one being fetched) reset for it — a remembered failure before a
 * certificate: forged URLs (each a failed fetch) must not push the real
 * certificates out. NULL on allocation failure or when every slot is being
 * fetched. */
static struct cert_entry *slot(struct tl_sns_certs *c, const char *url)
{
	struct cert_entry *e = find(c, url);
	if (e)
		return e;
	char *dup = strdup(url);
	if (!dup)
		return NULL;
	if (c->n < c->max) {
		e = &c->e[c->n++];
	} else {
		e = NULL;
		for (size_t i = 0; i < c->n; i++) {
			struct cert_entry *o = &c->e[i];
			if (o->fetching)
				continue;
			if (!e || (!o->x && e->x) || (!o->x == !e->x && o->used < e->used))
				e = o;
		}
		if (!e) {
			free(dup);
			return NULL;
		}
		free(e->url);
		X509_free(e->x);
	}
	memset(e, 0, sizeof *e);
	e->url = dup;
	return e;
}

/* Fetches the queued certificates one at a time, off the collector's loop:
 * a slow or unreachable server stalls no request beyond cert_get's wait. */
static void *fetcher_main(void *arg)
{
	struct tl_sns_certs *c = arg;
	pthread_mutex_lock(&c->mu);
	while (!c->stopping) {
		struct cert_entry *e = NULL;
		for (size_t i = 0; i < c->n && !e; i++)
			if (c->e[i].queued)
				e = &c->e[i];
		if (!e) {
			pthread_cond_wait(&c->work, &c->mu);
			continue;
		}
		e->queued = false;
		char *url = strdup(e->url);
		int64_t now = e->queued_now;
		pthread_mutex_unlock(&c->mu);
		struct tl_buf b;
		tl_buf_init(&b, CERT_MAX_BYTES);
		int rc = !url ? -TL_ENOMEM : c->fetch ? c->fetch(c->arg, url, &b) : -TL_EUNAVAIL;
		X509 *x = NULL;
		if (!rc && !(x = parse_pem(&b)))
			rc = -TL_ECORRUPT;
		tl_buf_free(&b);
		pthread_mutex_lock(&c->mu);
		e = url ? find(c, url) : NULL; /* a fetching entry is never evicted */
		free(url);
		if (e && !rc) {
			e->x = x;
		} else {
			X509_free(x);
			if (e) {
				bool permanent = rc == -TL_ENOTFOUND || rc == -TL_ECORRUPT ||
				                 rc == -TL_ETOOBIG || rc == -TL_EINVAL;
				e->neg_rc = permanent ? -TL_ECORRUPT : rc;
				e->neg_until_ms = now + (permanent ? NEG_TTL_MS : NEG_TTL_SOFT_MS);
			}
		}
		if (e)
			e->fetching = false;
		pthread_cond_broadcast(&c->done);
	}
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

/* Returns the certificate for url (a reference the caller frees). A URL
 * not cached yet is queued for the fetcher thread (within the fetch
 * budget), and its result waited for at most c->wait_ms: on the
 * collector's loop, a slow server costs that much, not the fetch's
 * timeout. 0 or -TL_ENOTFOUND / -TL_ECORRUPT (no certificate there),
 * -TL_EAGAIN (fetch budget spent, or the fetch still running: the sender
 * retries and finds it cached), or the fetcher's retryable error. */
static int cert_get(struct tl_sns_certs *c, const char *url, int64_t now, X509 **out)
{
	*out = NULL;
	pthread_mutex_lock(&c->mu);
	int rc = 0;
	struct cert_entry *e = find(c, url);
	if (e && e->x) {
		X509_up_ref(e->x);
		*out = e->x;
		e->used = ++c->tick;
		goto done;
	}
	if (e && !e->fetching && e->neg_until_ms > now) {
		rc = e->neg_rc;
		goto done;
	}
	if (!e || !e->fetching) {
		if (now - c->window_ms >= 60 * 1000 || now < c->window_ms) {
			c->window_ms = now;
			c->window_fetches = 0;
		}
		if (c->window_fetches >= FETCHES_PER_MIN) {
			rc = -TL_EAGAIN;
			goto done;
		}
		if (!c->started) {
			if (pthread_create(&c->thread, NULL, fetcher_main, c) != 0) {
				rc = -TL_ENOMEM;
				goto done;
			}
			c->started = true;
		}
		if (!(e = slot(c, url))) {
			rc = -TL_ENOMEM;
			goto done;
		}
		c->window_fetches++;
		e->used = ++c->tick;
		e->neg_until_ms = 0;
		e->fetching = e->queued = true;
		e->queued_now = now;
		pthread_cond_signal(&c->work);
	}
	struct timespec until;
	tl_mono_deadline(&until, c->wait_ms);
	while ((e = find(c, url)) && e->fetching)
		if (pthread_cond_timedwait(&c->done, &c->mu, &until) == ETIMEDOUT)
			break;
	if (e && e->x) {
		X509_up_ref(e->x);
		*out = e->x;
	} else {
		rc = !e || e->fetching ? -TL_EAGAIN : e->neg_rc;
	}
done:
	pthread_mutex_unlock(&c->mu);
	return rc;
}

/* ---- verification ------------------------------------------------------- */

static int put_field(struct tl_buf *b, const char *key, struct tl_str v)
{
	int rc = tl_buf_puts(b, key);
	if (!rc)
		rc = tl_buf_putc(b, '\n');
	if (!rc)
		rc = tl_buf_append(b, v.p, v.n);
	if (!rc)
		rc = tl_buf_putc(b, '\n');
	return rc;
}

/* The canonical string of env into b. -TL_EINVAL when a signed field is missing. */
static int canonical(const json_t *env, struct tl_str type, struct tl_buf *b)
{
	static const char *const notif[] = {"Message",   "MessageId", "Subject",
	                                    "Timestamp", "TopicArn",  "Type"};
	static const char *const sub[] = {"Message", "MessageId", "SubscribeURL", "Timestamp",
	                                  "Token",   "TopicArn",  "Type"};
	bool is_notif = type.n == 12 && memcmp(type.p, "Notification", 12) == 0;
	const char *const *keys = is_notif ? notif : sub;
	size_t n = is_notif ? sizeof notif / sizeof notif[0] : sizeof sub / sizeof sub[0];
	for (size_t i = 0; i < n; i++) {
		const json_t *v = json_object_get(env, keys[i]);
		if ((!v || json_is_null(v)) && is_notif && strcmp(keys[i], "Subject") == 0)
			continue; /* optional, and left out of the string when absent */
		if (!json_is_string(v))
			return -TL_EINVAL;
		int rc = put_field(b, keys[i], tl_str_of(json_string_value(v), json_string_length(v)));
		if (rc)
			return rc;
	}
	return 0;
}

int tl_wh_sns_verify(struct wh_ctx *c, const json_t *env)
{
	struct tl_str type = tl_wh_str(env, "Type");
	struct tl_str ver = tl_wh_text(c, json_object_get(env, "SignatureVersion"));
	struct tl_str sig = tl_wh_str(env, "Signature");
	struct tl_str url = tl_wh_str(env, "SigningCertURL");
	if (!ver.n || !sig.n || !url.n)
		return tl_wh_fail(c, 401, -TL_EAUTH,
		                  "unsigned SNS message (set ses_verify=false to accept it)");
	const EVP_MD *md;
	if (ver.n == 1 && ver.p[0] == '1')
		md = EVP_sha1();
	else if (ver.n == 1 && ver.p[0] == '2')
		md = EVP_sha256();
	else
		return tl_wh_fail(c, 403, -TL_EAUTH, "unsupported SNS SignatureVersion");
	if (!tl_wh_sns_url_ok(url.p, url.n, true))
		return tl_wh_fail(c, 403, -TL_EAUTH,
		                  "SigningCertURL is not https://sns.<region>.amazonaws.com/….pem");
	struct tl_str ts = tl_wh_str(env, "Timestamp");
	int64_t t;
	if (!ts.n || tl_time_parse_iso(ts.p, ts.n, &t) != 0)
		return tl_wh_fail(c, 403, -TL_EAUTH, "bad SNS Timestamp");
	if (t < c->req->now_ms - TL_WH_MAX_AGE_MS || t > c->req->now_ms + TL_WH_MAX_SKEW_MS)
		return tl_wh_fail(c, 403, -TL_EAUTH, "SNS Timestamp too old or in the future");
	unsigned char raw[1024];
	long raw_n = sig.n <= 2048 ? tl_wh_b64decode(sig.p, sig.n, raw, sizeof raw) : -1;
	if (raw_n <= 0)
		return tl_wh_fail(c, 403, -TL_EAUTH, "bad SNS Signature encoding");
	if (!c->req->sns_certs)
		return tl_wh_fail(c, 503, -TL_EUNAVAIL, "SNS signature verification is not available");
	char *curl = tl_arena_strdup(c->req->arena, url.p, url.n);
	if (!curl)
		return tl_wh_fail_alloc(c);
	struct tl_buf b;
	tl_buf_init(&b, c->req->len + 4096);
	int rc = canonical(env, type, &b);
	if (rc) {
		tl_buf_free(&b);
		return rc == -TL_EINVAL ? tl_wh_fail(c, 403, -TL_EAUTH, "SNS message lacks a signed field")
		                        : tl_wh_fail(c, 500, -TL_ENOMEM, "out of memory");
	}
	X509 *x = NULL;
	rc = cert_get(c->req->sns_certs, curl, c->req->now_ms, &x);
	if (rc) {
		tl_buf_free(&b);
		if (rc == -TL_ECORRUPT)
			return tl_wh_fail(c, 403, -TL_EAUTH, "SigningCertURL did not give a certificate");
		if (rc == -TL_EAGAIN)
			return tl_wh_fail(c, 503, -TL_EUNAVAIL,
			                  "the SNS signing certificate is not fetched yet; retry");
		return tl_wh_fail(c, 503, -TL_EUNAVAIL, "could not fetch the SNS signing certificate (%s)",
		                  tl_strerror(rc));
	}
	time_t now_s = (time_t)(c->req->now_ms / 1000);
	bool valid = X509_cmp_time(X509_get0_notBefore(x), &now_s) < 0 &&
	             X509_cmp_time(X509_get0_notAfter(x), &now_s) > 0;
	EVP_PKEY *pk = X509_get0_pubkey(x);
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	int ok = valid && pk && mctx && EVP_DigestVerifyInit(mctx, NULL, md, NULL, pk) == 1 &&
	         EVP_DigestVerify(mctx, raw, (size_t)raw_n, (const unsigned char *)b.data, b.len) == 1;
	EVP_MD_CTX_free(mctx);
	X509_free(x);
	tl_buf_free(&b);
	if (!valid)
		return tl_wh_fail(c, 403, -TL_EAUTH, "SNS signing certificate is not valid now");
	return ok ? 0 : tl_wh_fail(c, 403, -TL_EAUTH, "bad SNS signature");
}
