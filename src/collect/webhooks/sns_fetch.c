/* sns_fetch.c — a bounded https GET with libcurl, for SNS signing
 * certificates and subscription confirmations (webhooks.h). https only, no
 * redirects, TLS peer and host verified against the system CAs, a timeout
 * on the whole transfer and a cap on the body. */
#include "collect/webhooks/webhooks.h"

#include <curl/curl.h>
#include <string.h>

struct sink {
	struct tl_buf *out;
	int rc;
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
	struct sink *s = arg;
	size_t n = size * nmemb;
	int rc = tl_buf_append(s->out, p, n);
	if (rc) {
		s->rc = rc;
		return 0; /* aborts the transfer */
	}
	return n;
}

int tl_webhook_http_global_init(void)
{
	return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -TL_ENOMEM;
}

int tl_webhook_http_get(void *opts_arg, const char *url, struct tl_buf *out)
{
	const struct tl_webhook_http_opts *o = opts_arg;
	long timeout_ms = o && o->timeout_ms > 0 ? o->timeout_ms : 5000;
	size_t max = o && o->max_bytes ? o->max_bytes : 64 * 1024;
	if (!url || strncmp(url, "https://", 8) != 0)
		return -TL_EINVAL;
	if (!out->max || out->max > max)
		out->max = max;
	CURL *h = curl_easy_init();
	if (!h)
		return -TL_ENOMEM;
	struct sink s = {out, 0};
	int bad = 0;
	bad |= curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms / 2 > 0 ? timeout_ms / 2 : 1) !=
	       CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_USERAGENT, "tally-webhooks/1") != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data) != CURLE_OK;
	bad |= curl_easy_setopt(h, CURLOPT_WRITEDATA, &s) != CURLE_OK;
	if (bad) {
		curl_easy_cleanup(h);
		return -TL_EINVAL;
	}
	CURLcode cc = curl_easy_perform(h);
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(h);
	if (s.rc)
		return s.rc == -TL_ETOOBIG ? -TL_ETOOBIG : s.rc;
	switch (cc) {
	case CURLE_OK:
		break;
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return -TL_EINVAL;
	case CURLE_FILESIZE_EXCEEDED:
		return -TL_ETOOBIG;
	case CURLE_OPERATION_TIMEDOUT:
		return -TL_ETIMEDOUT;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
		return -TL_EUNAVAIL;
	default:
		return -TL_EIO;
	}
	if (status >= 200 && status < 300)
		return 0;
	if (status >= 400 && status < 500)
		return -TL_ENOTFOUND;
	return -TL_EUNAVAIL; /* 3xx (no redirects followed), 5xx */
}
