/* reader.c — listing archive files, reading their lines, and the fast path
 * of the line parser (see reader.h). */
#include "batch/reader.h"

#include "core/clock.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define LINE_MAX_BYTES (1u << 20) /* far above TL_MAX_EVENT_JSON: only corrupt data is longer */
#define OUT_CAP (LINE_MAX_BYTES + (1u << 20))
#define IN_CAP (1u << 20)

/* ---- listing -------------------------------------------------------------- */

static int cmp_file(const void *a, const void *b)
{
	const struct tl_archive_file *x = a, *y = b;
	if (x->day != y->day)
		return x->day < y->day ? -1 : 1;
	int r = strcmp(x->name.topic, y->name.topic);
	if (r)
		return r;
	if (x->name.partition != y->name.partition)
		return x->name.partition < y->name.partition ? -1 : 1;
	return (x->name.first > y->name.first) - (x->name.first < y->name.first);
}

void tl_archive_files_free(struct tl_archive_file *f, size_t n)
{
	if (!f)
		return;
	for (size_t i = 0; i < n; i++)
		free(f[i].path);
	free(f);
}

int tl_archive_files_list(const char *dir, int64_t from_day, int64_t to_day, struct tl_archive_file **out,
                          size_t *n)
{
	struct tl_archive_file *v = NULL;
	size_t len = 0, cap = 0;
	int rc = TL_OK;
	for (int64_t day = from_day; day <= to_day && !rc; day++) {
		char dt[32], sub[PATH_MAX];
		int k = tl_archive_day_format(day, dt, sizeof dt);
		if (k < 0 || snprintf(sub, sizeof sub, "%s/%s", dir, dt) >= (int)sizeof sub) {
			rc = -TL_EINVAL;
			break;
		}
		DIR *d = opendir(sub);
		if (!d) {
			if (errno != ENOENT)
				rc = tl_err_from_errno(errno);
			continue;
		}
		struct dirent *e;
		while (!rc && (e = readdir(d))) {
			struct tl_archive_name nm;
			if (tl_archive_name_parse(e->d_name, &nm) != TL_OK)
				continue;
			char path[PATH_MAX];
			struct stat stt;
			if (snprintf(path, sizeof path, "%s/%s", sub, e->d_name) >= (int)sizeof path) {
				rc = -TL_EINVAL;
				break;
			}
			if (stat(path, &stt)) {
				rc = tl_err_from_errno(errno);
				break;
			}
			if (len == cap) {
				size_t nc = cap ? cap * 2 : 256;
				struct tl_archive_file *nv = realloc(v, nc * sizeof *nv);
				if (!nv) {
					rc = -TL_ENOMEM;
					break;
				}
				v = nv;
				cap = nc;
			}
			v[len] = (struct tl_archive_file){
			    .path = strdup(path), .day = day, .name = nm, .size = (uint64_t)stt.st_size};
			if (!v[len].path) {
				rc = -TL_ENOMEM;
				break;
			}
			len++;
		}
		closedir(d);
	}
	if (rc) {
		tl_archive_files_free(v, len);
		return rc;
	}
	if (len)
		qsort(v, len, sizeof *v, cmp_file);
	*out = v;
	*n = len;
	return TL_OK;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

int tl_archive_days_list(const char *dir, int64_t from_day, int64_t to_day, int64_t **out, size_t *n)
{
	*out = NULL;
	*n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return errno == ENOENT ? TL_OK : tl_err_from_errno(errno);
	int64_t *v = NULL;
	size_t len = 0, cap = 0;
	int rc = TL_OK;
	struct dirent *e;
	while ((e = readdir(d))) {
		int64_t day;
		if (tl_archive_day_parse(e->d_name, &day) || day < from_day || day > to_day)
			continue;
		if (len == cap) {
			size_t nc = cap ? cap * 2 : 64;
			int64_t *nv = realloc(v, nc * sizeof *nv);
			if (!nv) {
				rc = -TL_ENOMEM;
				break;
			}
			v = nv;
			cap = nc;
		}
		v[len++] = day;
	}
	closedir(d);
	if (rc) {
		free(v);
		return rc;
	}
	if (len)
		qsort(v, len, sizeof *v, cmp_i64);
	*out = v;
	*n = len;
	return TL_OK;
}

/* ---- reading lines ------------------------------------------------------- */

struct tl_archive_reader {
	int fd;
	ZSTD_DCtx *d;
	char *in;
	ZSTD_inBuffer ib;
	char *buf;
	size_t pos, len; /* unread decompressed bytes: buf[pos..len) */
	size_t scanned;  /* buf[pos..scanned) has no newline */
	uint64_t consumed;
	size_t last_ret; /* last ZSTD_decompressStream result: 0 = at a frame end */
	bool input_eof, eof;
};

int tl_archive_reader_open(const char *path, struct tl_archive_reader **out)
{
	struct tl_archive_reader *r = calloc(1, sizeof *r);
	if (!r)
		return -TL_ENOMEM;
	r->fd = -1;
	r->d = ZSTD_createDCtx();
	r->in = malloc(IN_CAP);
	r->buf = malloc(OUT_CAP);
	int rc = !r->d || !r->in || !r->buf ? -TL_ENOMEM : tl_archive_reader_reopen(r, path);
	if (rc) {
		tl_archive_reader_close(r);
		return rc;
	}
	*out = r;
	return TL_OK;
}

int tl_archive_reader_reopen(struct tl_archive_reader *r, const char *path)
{
	if (r->fd >= 0)
		close(r->fd);
	r->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (r->fd < 0)
		return tl_err_from_errno(errno);
	(void)posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	ZSTD_DCtx_reset(r->d, ZSTD_reset_session_only);
	r->ib = (ZSTD_inBuffer){r->in, 0, 0};
	r->pos = r->len = r->scanned = 0;
	r->consumed = 0;
	r->last_ret = 0;
	r->input_eof = r->eof = false;
	return TL_OK;
}

void tl_archive_reader_close(struct tl_archive_reader *r)
{
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	ZSTD_freeDCtx(r->d);
	free(r->in);
	free(r->buf);
	free(r);
}

uint64_t tl_archive_reader_offset(const struct tl_archive_reader *r)
{
	return r->consumed;
}

/* Decompresses more into buf[len..). */
static int fill(struct tl_archive_reader *r)
{
	for (;;) {
		if (r->ib.pos == r->ib.size && !r->input_eof) {
			ssize_t got = read(r->fd, r->in, IN_CAP);
			if (got < 0) {
				if (errno == EINTR)
					continue;
				return tl_err_from_errno(errno);
			}
			r->ib = (ZSTD_inBuffer){r->in, (size_t)got, 0};
			r->consumed += (uint64_t)got;
			if (got == 0)
				r->input_eof = true;
		}
		if (r->ib.pos == r->ib.size && r->input_eof) {
			if (r->last_ret != 0)
				return -TL_ECORRUPT; /* the last frame is cut short */
			r->eof = true;
			return TL_OK;
		}
		ZSTD_outBuffer ob = {r->buf + r->len, OUT_CAP - r->len, 0};
		size_t ret = ZSTD_decompressStream(r->d, &ob, &r->ib);
		if (ZSTD_isError(ret))
			return -TL_ECORRUPT;
		r->last_ret = ret;
		r->len += ob.pos;
		if (ob.pos)
			return TL_OK;
	}
}

int tl_archive_reader_next(struct tl_archive_reader *r, const char **line, size_t *n)
{
	for (;;) {
		char *start = r->buf + r->pos;
		char *nl = memchr(r->buf + r->scanned, '\n', r->len - r->scanned);
		if (nl) {
			*line = start;
			*n = (size_t)(nl - start);
			r->pos = r->scanned = (size_t)(nl - r->buf) + 1;
			return 1;
		}
		r->scanned = r->len;
		if (r->eof) {
			if (r->pos == r->len)
				return 0;
			*line = start; /* a last line without its newline */
			*n = r->len - r->pos;
			r->pos = r->scanned = r->len;
			return 1;
		}
		if (r->len - r->pos > LINE_MAX_BYTES)
			return -TL_ETOOBIG;
		if (r->pos) {
			memmove(r->buf, start, r->len - r->pos);
			r->len -= r->pos;
			r->scanned -= r->pos;
			r->pos = 0;
		}
		int rc = fill(r);
		if (rc)
			return rc;
	}
}

/* ---- the fast path of the line parser ------------------------------------ */

enum key {
	K_TYPE,
	K_TENANT,
	K_CAMPAIGN,
	K_VARIANT,
	K_RECIPIENT,
	K_MESSAGE,
	K_ID,
	K_URL,
	K_UA,
	K_IP,
	K_PROVIDER,
	K_TOKEN,
	K_TS,
	K_ARRIVAL,
	K_BOUNCE,
	K_MACHINE, /* from here: "true" values */
	K_BOT,
	K_HEAD,
	K_HASHED,
	K__N
};

static const struct {
	const char *name;
	uint8_t len;
	uint16_t max; /* string fields: the limit tl_event_from_json enforces */
} keys[K__N] = {
    [K_TYPE] = {"type", 4, 32},
    [K_TENANT] = {"tenant", 6, TL_MAX_TENANT},
    [K_CAMPAIGN] = {"campaign", 8, TL_MAX_CAMPAIGN},
    [K_VARIANT] = {"variant", 7, TL_MAX_VARIANT},
    [K_RECIPIENT] = {"recipient", 9, TL_MAX_RECIPIENT},
    [K_MESSAGE] = {"message", 7, TL_MAX_MESSAGE},
    [K_ID] = {"id", 2, TL_MAX_ID},
    [K_URL] = {"url", 3, TL_MAX_URL},
    [K_UA] = {"user_agent", 10, TL_MAX_USER_AGENT},
    [K_IP] = {"ip", 2, TL_MAX_IP},
    [K_PROVIDER] = {"provider", 8, TL_MAX_PROVIDER},
    [K_TOKEN] = {"token", 5, TL_MAX_TOKEN},
    [K_TS] = {"ts", 2, 64},
    [K_ARRIVAL] = {"arrival", 7, 64},
    [K_BOUNCE] = {"bounce_class", 12, 16},
    [K_MACHINE] = {"machine", 7, 0},
    [K_BOT] = {"bot", 3, 0},
    [K_HEAD] = {"head", 4, 0},
    [K_HASHED] = {"hashed", 6, 0},
};

#define KEY_IS(lit) (memcmp(k, lit, sizeof(lit) - 1) == 0)

/* The key k of n bytes, or -1. Constant-length compares: no calls. */
static int key_lookup(const char *k, size_t n)
{
	switch (n) {
	case 2:
		return KEY_IS("id") ? K_ID : KEY_IS("ts") ? K_TS : KEY_IS("ip") ? K_IP : -1;
	case 3:
		return KEY_IS("url") ? K_URL : KEY_IS("bot") ? K_BOT : -1;
	case 4:
		return KEY_IS("type") ? K_TYPE : KEY_IS("head") ? K_HEAD : -1;
	case 5:
		return KEY_IS("token") ? K_TOKEN : -1;
	case 6:
		return KEY_IS("tenant") ? K_TENANT : KEY_IS("hashed") ? K_HASHED : -1;
	case 7:
		return KEY_IS("variant")   ? K_VARIANT
		       : KEY_IS("message") ? K_MESSAGE
		       : KEY_IS("arrival") ? K_ARRIVAL
		       : KEY_IS("machine") ? K_MACHINE
		                           : -1;
	case 8:
		return KEY_IS("campaign") ? K_CAMPAIGN : KEY_IS("provider") ? K_PROVIDER : -1;
	case 9:
		return KEY_IS("recipient") ? K_RECIPIENT : -1;
	case 10:
		return KEY_IS("user_agent") ? K_UA : -1;
	case 12:
		return KEY_IS("bounce_class") ? K_BOUNCE : -1;
	default:
		return -1;
	}
}

/* tl_event_to_json writes the keys in this order: a canonical line is read
 * by trying, at each key, the ones that may come next, each a constant-size
 * compare. lit(pos) is "\"<name>\":" of canonical position pos. */
#define AT(lit) (memcmp(p, lit, sizeof(lit) - 1) == 0 ? (int)(sizeof(lit) - 1) : 0)

struct kmatch {
	int key, len, pos;
};

/* Needs 16 readable bytes at p. */
static bool canonical_key(const char *p, int from, struct kmatch *m)
{
	static const int8_t key_at[] = {K_TYPE,    K_TENANT, K_CAMPAIGN, K_VARIANT,  K_RECIPIENT,
	                                K_MESSAGE, K_ID,     K_TS,       K_ARRIVAL,  K_URL,
	                                K_UA,      K_IP,     K_BOUNCE,   K_PROVIDER, K_MACHINE,
	                                K_BOT,     K_HEAD,   K_HASHED,   K_TOKEN};
	for (int pos = from; pos < K__N; pos++) {
		int n;
		switch (pos) {
		case 0:
			n = AT("\"type\":");
			break;
		case 1:
			n = AT("\"tenant\":");
			break;
		case 2:
			n = AT("\"campaign\":");
			break;
		case 3:
			n = AT("\"variant\":");
			break;
		case 4:
			n = AT("\"recipient\":");
			break;
		case 5:
			n = AT("\"message\":");
			break;
		case 6:
			n = AT("\"id\":");
			break;
		case 7:
			n = AT("\"ts\":");
			break;
		case 8:
			n = AT("\"arrival\":");
			break;
		case 9:
			n = AT("\"url\":");
			break;
		case 10:
			n = AT("\"user_agent\":");
			break;
		case 11:
			n = AT("\"ip\":");
			break;
		case 12:
			n = AT("\"bounce_class\":");
			break;
		case 13:
			n = AT("\"provider\":");
			break;
		case 14:
			n = AT("\"machine\":");
			break;
		case 15:
			n = AT("\"bot\":");
			break;
		case 16:
			n = AT("\"head\":");
			break;
		case 17:
			n = AT("\"hashed\":");
			break;
		default:
			n = AT("\"token\":");
			break;
		}
		if (n) {
			*m = (struct kmatch){key_at[pos], n, pos};
			return true;
		}
	}
	return false;
}

static struct tl_str *field(struct tl_event *ev, int key)
{
	switch (key) {
	case K_TENANT:
		return &ev->tenant;
	case K_CAMPAIGN:
		return &ev->campaign;
	case K_VARIANT:
		return &ev->variant;
	case K_RECIPIENT:
		return &ev->recipient;
	case K_MESSAGE:
		return &ev->message;
	case K_ID:
		return &ev->id;
	case K_URL:
		return &ev->url;
	case K_UA:
		return &ev->user_agent;
	case K_IP:
		return &ev->ip;
	case K_PROVIDER:
		return &ev->provider;
	case K_TOKEN:
		return &ev->token;
	default:
		return NULL;
	}
}

/* Index of the first byte of s[0..n) that ends or spoils a plain string:
 * '"', '\\', a control byte or a non-ASCII byte. 16 bytes at a time. */
static size_t plain_span(const char *s, size_t n)
{
	size_t i = 0;
#if defined(__SSE2__)
	const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
	for (; i + 16 <= n; i += 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
		/* signed: bytes >= 0x80 are negative, so "< 0x20" also catches them */
		__m128i bad = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
		                           _mm_cmplt_epi8(v, space));
		int m = _mm_movemask_epi8(bad);
		if (m)
			return i + (size_t)__builtin_ctz((unsigned)m);
	}
#endif
	for (; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80)
			break;
	}
	return i;
}

static inline int two(const char *p)
{
	return (p[0] - '0') * 10 + (p[1] - '0');
}

static inline uint64_t load_le64(const char *p)
{
	uint64_t x;
	memcpy(&x, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	x = __builtin_bswap64(x);
#endif
	return x;
}

/* Bytes of x at the positions of mask that are not ASCII digits: non-zero
 * when there is one (a byte >= 0x80 may also count as one, which only sends
 * the string to the full parser). */
static inline uint64_t not_digits(uint64_t x, uint64_t mask)
{
	uint64_t t = x ^ 0x3030303030303030ULL; /* digits become 0..9 */
	return ((t + 0x7676767676767676ULL) | t) & mask & 0x8080808080808080ULL;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" exactly, as tl_time_format_iso writes it, into
 * ms; false for anything else (tl_time_parse_iso then decides). For the
 * strings it accepts the result equals tl_time_parse_iso's. The shape is
 * checked 8 bytes at a time: "YYYY-MM-", "DDTHH:MM", ":SS.mmmZ". */
static bool canonical_time(const char *s, size_t n, int64_t *ms)
{
	if (n != 24)
		return false;
	/* byte k of the string is bits 8k..8k+7 */
	uint64_t a = load_le64(s), b = load_le64(s + 8), c = load_le64(s + 16);
	const uint64_t da = 0x00FFFF00FFFFFFFFULL; /* digits at bytes 0-3, 5, 6 */
	const uint64_t db = 0xFFFF00FFFF00FFFFULL; /* 0, 1, 3, 4, 6, 7 */
	const uint64_t dc = 0x00FFFFFF00FFFF00ULL; /* 1, 2, 4, 5, 6 */
	if (not_digits(a, da) | not_digits(b, db) | not_digits(c, dc))
		return false;
	if ((a & ~da) != 0x2D00002D00000000ULL || (b & ~db) != 0x00003A0000540000ULL ||
	    (c & ~dc) != 0x5A0000002E00003AULL)
		return false;
	int h = two(s + 11), mi = two(s + 14), se = two(s + 17);
	int frac = (s[20] - '0') * 100 + two(s + 21);
	if (h > 23 || mi > 59 || se > 59)
		return false;
	/* the date, checked and converted once per thread while it repeats (an
	 * archive file's lines share it): "YYYY-MM-" and "DD" are its key. A
	 * per-thread cache, not state: no result depends on it (the parser's
	 * unit test checks runs of dates against the full parser), hence no
	 * context to carry it in */
	static _Thread_local struct {
		uint64_t a;
		uint16_t dd;
		int64_t days;
	} memo; /* a = 0 matches no date that passed the checks above */
	uint16_t dd = (uint16_t)b;
	if (a != memo.a || dd != memo.dd) {
		int y = two(s) * 100 + two(s + 2), mo = two(s + 5), d = two(s + 8);
		static const unsigned char mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
		bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
		if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap))
			return false;
		memo.days = tl_days_from_civil(y, (unsigned)mo, (unsigned)d);
		memo.a = a;
		memo.dd = dd;
	}
	*ms = ((memo.days * 86400 + h * 3600 + mi * 60 + se) * 1000) + frac;
	return true;
}

static int parse_time(struct tl_str t, int64_t *ms)
{
	if (canonical_time(t.p, t.n, ms))
		return TL_OK;
	return tl_time_parse_iso(t.p, t.n, ms);
}

/* memset(ev, 0, …) in plain stores: for a struct this size compilers emit
 * `rep stos`, whose start-up costs more than the rest of a line's parse. */
static inline void zero_event(struct tl_event *ev)
{
#if defined(__SSE2__)
	/* straight-line stores (a loop would be turned back into the memset) */
	char *p = (char *)ev;
	const __m128i z = _mm_setzero_si128();
#define Z16(k) _mm_storeu_si128((__m128i *)(void *)(p + 16 * (k)), z)
	_Static_assert(sizeof *ev > 12 * 16 && sizeof *ev <= 14 * 16,
	               "zero_event: the size of the event changed");
	Z16(0), Z16(1), Z16(2), Z16(3), Z16(4), Z16(5), Z16(6), Z16(7), Z16(8), Z16(9), Z16(10), Z16(11);
	_mm_storeu_si128((__m128i *)(void *)(p + sizeof *ev - 32), z);
	_mm_storeu_si128((__m128i *)(void *)(p + sizeof *ev - 16), z);
#undef Z16
#else
	memset(ev, 0, sizeof *ev);
#endif
}

int tl_batch_parse_fast(const char *s, size_t n, struct tl_event *ev)
{
	zero_event(ev);
	if (n < 2 || s[0] != '{' || s[n - 1] != '}' || n > TL_MAX_EVENT_JSON)
		return 1;
	const char *p = s + 1, *end = s + n - 1; /* end: the closing brace */
	uint32_t seen = 0;
	struct tl_str type = TL_STR_NULL, bounce = TL_STR_NULL, ts = TL_STR_NULL, arrival = TL_STR_NULL;
	int next_pos = 0; /* canonical position the next key is looked for from */
	if (p == end)
		return 1;
	for (;;) {
		int key;
		struct kmatch km;
		if (end - p >= 16 && canonical_key(p, next_pos, &km)) {
			key = km.key;
			p += km.len;
			next_pos = km.pos + 1;
		} else {
			if (*p != '"')
				return 1;
			const char *k = ++p, *kq = k;
			while (kq < end && *kq != '"' && kq - k < 16) /* keys are short */
				kq++;
			if (kq + 1 >= end || *kq != '"' || kq[1] != ':')
				return 1;
			key = key_lookup(k, (size_t)(kq - k));
			p = kq + 2;
		}
		if (key < 0 || (seen & (1u << key)))
			return 1; /* unknown or repeated key: the full parser decides */
		seen |= 1u << key;
		if (key >= K_MACHINE) {
			if (end - p < 4 || memcmp(p, "true", 4) != 0)
				return 1;
			p += 4;
			static const uint16_t flag[] = {TL_EVF_PROVIDER_MACHINE, TL_EVF_BOT, TL_EVF_HEAD,
			                                TL_EVF_HASHED};
			ev->flags |= flag[key - K_MACHINE];
		} else {
			if (p >= end || *p != '"')
				return 1;
			const char *v = ++p;
			size_t vn = plain_span(v, (size_t)(end - v));
			if (v + vn >= end || v[vn] != '"' || vn == 0 || vn > keys[key].max)
				return 1;
			p = v + vn + 1;
			struct tl_str val = tl_str_of(v, vn);
			switch (key) {
			case K_TYPE:
				type = val;
				break;
			case K_TS:
				ts = val;
				break;
			case K_ARRIVAL:
				arrival = val;
				break;
			case K_BOUNCE:
				bounce = val;
				break;
			default:
				*field(ev, key) = val;
			}
		}
		if (p == end)
			break;
		if (*p != ',')
			return 1;
		p++;
	}

	/* the checks of tl_event_from_json, in any order: all must pass */
	if (!type.n)
		return 1;
	ev->type = (uint8_t)tl_event_type_parse(type.p, type.n);
	if (ev->type == TL_EV_NONE)
		return 1;
	bool open_or_click = ev->type == TL_EV_OPEN || ev->type == TL_EV_CLICK;
	if (ev->token.n) {
		if (!open_or_click)
			return 1;
		ev->flags |= TL_EVF_HIT;
	} else if (!ev->campaign.n || !ev->recipient.n) {
		return 1;
	}
	if (!ev->id.n || !ts.n)
		return 1;
	if (parse_time(ts, &ev->ts_ms) || ev->ts_ms <= 0)
		return 1;
	if (arrival.n == ts.n && memcmp(arrival.p, ts.p, ts.n) == 0)
		ev->arrival_ms = ev->ts_ms; /* hits: received = happened */
	else if (arrival.n && (parse_time(arrival, &ev->arrival_ms) || ev->arrival_ms <= 0))
		return 1;
	if (bounce.n) {
		int c = tl_bounce_class_parse(bounce.p, bounce.n);
		if (ev->type != TL_EV_BOUNCED || c < 0)
			return 1;
		ev->bounce_class = (uint8_t)c;
	}
	if ((seen & (1u << K_MACHINE)) && ev->type != TL_EV_OPEN)
		return 1;
	if ((seen & (1u << K_BOT)) && ev->type != TL_EV_CLICK)
		return 1;
	if ((seen & (1u << K_HEAD)) && !open_or_click)
		return 1;
	return 0;
}

int tl_batch_parse_line(const char *line, size_t len, struct tl_arena *a, struct tl_event *ev, char *err,
                        size_t errlen)
{
	if (tl_batch_parse_fast(line, len, ev) == 0)
		return TL_OK;
	return tl_event_from_json(line, len, a, ev, err, errlen);
}
