/* test_gen.c — the simulator's ground truth against a model collector.
 *
 * The model plays the collector + enricher + aggregator in memory with the
 * real library code: tl_event_from_json / tl_event_validate for the event
 * API (a batch with one bad line is refused whole), tl_token_verify for hits
 * (forged tokens answer the GIF or 404 and count nothing), tl_classify with
 * the default windows, id dedupe, tl_metrics_count_event and exact unique
 * sets. If the simulator's prediction of what the pipeline counts is wrong —
 * a verdict of the classifier, a duplicate, a junk batch — the counts differ. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/arena.h"
#include "core/clock.h"
#include "event/classify.h"
#include "gen/gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a set of strings ---- */

struct strset {
	char **slot;
	size_t cap, n;
};

static uint64_t fnv(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ULL;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
	return h;
}

/* Adds s (n bytes); returns 1 when it was new. */
static int strset_add(struct strset *set, const char *s, size_t n)
{
	if (2 * (set->n + 1) > set->cap) {
		size_t ncap = set->cap ? set->cap * 2 : 1024;
		char **ns = calloc(ncap, sizeof *ns);
		assert_non_null(ns);
		for (size_t i = 0; i < set->cap; i++) {
			if (!set->slot[i])
				continue;
			size_t j = fnv(set->slot[i], strlen(set->slot[i])) & (ncap - 1);
			while (ns[j])
				j = (j + 1) & (ncap - 1);
			ns[j] = set->slot[i];
		}
		free(set->slot);
		set->slot = ns;
		set->cap = ncap;
	}
	size_t j = fnv(s, n) & (set->cap - 1);
	while (set->slot[j]) {
		if (strlen(set->slot[j]) == n && memcmp(set->slot[j], s, n) == 0)
			return 0;
		j = (j + 1) & (set->cap - 1);
	}
	set->slot[j] = strndup(s, n);
	set->n++;
	return 1;
}

static void strset_free(struct strset *set)
{
	for (size_t i = 0; i < set->cap; i++)
		free(set->slot[i]);
	free(set->slot);
	memset(set, 0, sizeof *set);
}

/* ---- the model collector ---- */

#define MAX_CELLS 64

struct cell {
	char campaign[TL_MAX_CAMPAIGN + 1];
	char variant[TL_MAX_VARIANT + 1];
	int64_t counts[TL_M__COUNT];
	struct strset uniq[TL_U__COUNT];
};

struct model {
	const char *tenant;
	unsigned char key[TL_LINK_KEY_LEN];
	struct tl_classify_opts cls;
	struct strset ids;
	struct cell cells[MAX_CELLS];
	int ncells;
	struct tl_arena arena;
	char location[TL_MAX_URL + 1];
	int64_t bad_batches, rejected_hits;
};

static struct cell *cell_of(struct model *m, struct tl_str c, struct tl_str v)
{
	for (int i = 0; i < m->ncells; i++)
		if (strlen(m->cells[i].campaign) == c.n && !memcmp(m->cells[i].campaign, c.p, c.n) &&
		    strlen(m->cells[i].variant) == v.n && (!v.n || !memcmp(m->cells[i].variant, v.p, v.n)))
			return &m->cells[i];
	assert_true(m->ncells < MAX_CELLS);
	struct cell *x = &m->cells[m->ncells++];
	memset(x, 0, sizeof *x);
	memcpy(x->campaign, c.p, c.n);
	if (v.n)
		memcpy(x->variant, v.p, v.n);
	return x;
}

static void count(struct model *m, struct tl_event *ev)
{
	tl_classify(&m->cls, ev);
	struct cell *x = cell_of(m, ev->campaign, ev->variant);
	tl_metrics_count_event(ev, x->counts);
	unsigned kinds = tl_metrics_unique_kinds(ev);
	for (int k = 0; k < TL_U__COUNT; k++)
		if ((kinds & (1u << k)) && strset_add(&x->uniq[k], ev->recipient.p, ev->recipient.n))
			x->counts[tl_unique_metric((enum tl_unique_kind)k)]++;
}

static int post_events(struct model *m, const struct tl_gen_request *r)
{
	tl_arena_reset(&m->arena);
	size_t cap = 16, n = 0;
	struct tl_event *evs = malloc(cap * sizeof *evs);
	const char *p = r->body, *end = r->body + r->body_len;
	int status = 200;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (len) {
			if (n == cap)
				evs = realloc(evs, (cap *= 2) * sizeof *evs);
			char err[128];
			if (tl_event_from_json(p, len, &m->arena, &evs[n], err, sizeof err) ||
			    tl_event_validate(&evs[n], err, sizeof err) || (evs[n].flags & TL_EVF_HIT) ||
			    evs[n].tenant.n != strlen(m->tenant) ||
			    memcmp(evs[n].tenant.p, m->tenant, evs[n].tenant.n)) {
				status = 400;
				break;
			}
			n++;
		}
		p += len + 1;
	}
	if (status == 400) {
		m->bad_batches++;
	} else {
		for (size_t i = 0; i < n; i++)
			if (strset_add(&m->ids, evs[i].id.p, evs[i].id.n))
				count(m, &evs[i]);
	}
	free(evs);
	return status;
}

static int hit(struct model *m, const struct tl_gen_request *r)
{
	bool open = r->kind == TL_GEN_REQ_PIXEL;
	const char *tok = r->path + 3;
	size_t len = strlen(tok);
	if (open) {
		assert_true(len > 4 && !strcmp(tok + len - 4, ".gif"));
		len -= 4;
	}
	static unsigned char scratch[TL_MAX_TOKEN];
	struct tl_token t;
	if (tl_token_verify(tok, len, m->key, sizeof m->key, scratch, sizeof scratch, &t)) {
		m->rejected_hits++;
		return open ? 200 : 404;
	}
	assert_int_equal(t.kind, open ? TL_TOKEN_OPEN : TL_TOKEN_CLICK);
	struct tl_event ev = {
	    .type = open ? TL_EV_OPEN : TL_EV_CLICK,
	    .ts_ms = tl_now_ms(),
	    .sent_ms = t.issued_ms,
	    .tenant = t.tenant,
	    .campaign = t.campaign,
	    .variant = t.variant,
	    .recipient = t.recipient,
	    .url = t.url,
	    .user_agent = tl_str_of(r->user_agent, strlen(r->user_agent)),
	};
	if (!strcmp(r->method, "HEAD"))
		ev.flags |= TL_EVF_HEAD;
	count(m, &ev);
	if (open)
		return 200;
	memcpy(m->location, t.url.p, t.url.n);
	m->location[t.url.n] = '\0';
	return 302;
}

/* Drives g through the model; returns the number of unexpected answers. */
static int64_t drive(struct tl_gen *g, struct model *m)
{
	int64_t bad = 0;
	for (;;) {
		struct tl_gen_request *r;
		assert_int_equal(tl_gen_next(g, &r), 0);
		if (!r)
			break;
		r->attempts = 1;
		int status = r->kind == TL_GEN_REQ_EVENTS ? post_events(m, r) : hit(m, r);
		char err[512];
		if (tl_gen_complete(g, r, status, status == 302 ? m->location : NULL, err, sizeof err)) {
			print_error("unexpected: %s\n", err);
			bad++;
		}
	}
	return bad;
}

static void model_init(struct model *m, const char *tenant, const unsigned char *key)
{
	memset(m, 0, sizeof *m);
	m->tenant = tenant;
	memcpy(m->key, key, TL_LINK_KEY_LEN);
	tl_classify_defaults(&m->cls);
	tl_arena_init(&m->arena, 1 << 20, 0);
}

static void model_free(struct model *m)
{
	strset_free(&m->ids);
	for (int i = 0; i < m->ncells; i++)
		for (int k = 0; k < TL_U__COUNT; k++)
			strset_free(&m->cells[i].uniq[k]);
	tl_arena_free(&m->arena);
}

static const unsigned char key_acme[TL_LINK_KEY_LEN] = "0123456789abcdef0123456789abcdef";
static const unsigned char key_other[TL_LINK_KEY_LEN] = "fedcba9876543210fedcba9876543210";

static void print_counts(const char *what, const int64_t *c)
{
	print_message("%-6s", what);
	for (int k = 0; k < TL_M__COUNT; k++)
		print_message(" %s=%lld", tl_metric_name((enum tl_metric)k), (long long)c[k]);
	print_message("\n");
}

/* Every (campaign, variant) the model counted equals the truth, and the
 * model counted nothing the truth does not have. */
static void assert_model_equals_truth(struct tl_gen *g, struct model *m, int campaigns,
                                      const char *const *variants, int nv)
{
	int seen = 0;
	for (int c = 0; c < campaigns; c++) {
		char name[64];
		snprintf(name, sizeof name, "camp-%d", c);
		for (int s = 0; s < (nv ? nv : 1); s++) {
			const char *v = nv ? variants[s] : "";
			int64_t want[TL_M__COUNT];
			assert_int_equal(tl_gen_truth(g, c, s, want), 0);
			struct cell *x = cell_of(m, tl_str_of(name, strlen(name)), tl_str_of(v, strlen(v)));
			if (memcmp(want, x->counts, sizeof want)) {
				print_error("campaign %s variant \"%s\" differs\n", name, v);
				print_counts("truth", want);
				print_counts("model", x->counts);
				fail();
			}
			assert_true(want[TL_M_SENT] > 0);
			seen++;
		}
	}
	assert_int_equal(m->ncells, seen);
}

static void test_truth_matches_model(void **state)
{
	(void)state;
	struct tl_gen_opts o;
	tl_gen_defaults(&o);
	o.tenant = "acme";
	memcpy(o.link_key, key_acme, sizeof key_acme);
	memcpy(o.other_key, key_other, sizeof key_other);
	o.has_other_key = true;
	o.campaigns = 3;
	o.recipients = 4000;
	o.seed = 42;
	o.batch_lines = 100; /* many batches: junk, retried batches and duplicates all occur */
	struct tl_gen *g;
	assert_int_equal(tl_gen_create(&o, &g), 0);
	struct model m;
	model_init(&m, "acme", key_acme);
	assert_int_equal(drive(g, &m), 0);

	static const char *const v[] = {"A", "B"};
	assert_model_equals_truth(g, &m, 3, v, 2);

	struct tl_gen_stats st;
	tl_gen_stats(g, &st);
	assert_int_equal(st.errors, 0);
	/* the junk really was there, and really was refused */
	assert_true(st.junk_batches > 0);
	assert_int_equal(m.bad_batches, st.junk_batches);
	assert_true(st.dup_lines > 0);
	assert_true(st.retried_batches > 0);
	assert_true(st.forged_hits > 0);
	assert_int_equal(m.rejected_hits, st.forged_hits);
	assert_true(st.events_sent > st.events_counted);

	/* every metric is exercised, in every variant */
	for (int c = 0; c < 3; c++)
		for (int s = 0; s < 2; s++) {
			int64_t t[TL_M__COUNT];
			assert_int_equal(tl_gen_truth(g, c, s, t), 0);
			for (int k = 0; k < TL_M__COUNT; k++)
				if (t[k] == 0)
					fail_msg("campaign %d variant %d: %s is 0", c, s,
					         tl_metric_name((enum tl_metric)k));
			assert_true(t[TL_M_OPENS] > t[TL_M_UNIQUE_OPENS]);
			assert_true(t[TL_M_UNIQUE_OPENS] > t[TL_M_UNIQUE_HUMAN_OPENS]);
			assert_true(t[TL_M_CLICKS] > t[TL_M_UNIQUE_CLICKS]);
			assert_true(t[TL_M_UNIQUE_CLICKS] > t[TL_M_UNIQUE_HUMAN_CLICKS]);
			assert_true(t[TL_M_BOUNCED] > t[TL_M_HARD_BOUNCED] + t[TL_M_SOFT_BOUNCED]);
		}
	model_free(&m);
	tl_gen_destroy(g);
}

static void test_no_variants(void **state)
{
	(void)state;
	struct tl_gen_opts o;
	tl_gen_defaults(&o);
	o.tenant = "acme";
	memcpy(o.link_key, key_acme, sizeof key_acme);
	o.campaigns = 2;
	o.recipients = 1500;
	o.variants = "";
	o.seed = 7;
	struct tl_gen *g;
	assert_int_equal(tl_gen_create(&o, &g), 0);
	struct model m;
	model_init(&m, "acme", key_acme);
	assert_int_equal(drive(g, &m), 0);
	assert_model_equals_truth(g, &m, 2, NULL, 0);

	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_gen_truth_json(g, &b), 0);
	assert_non_null(strstr(b.data, "\"variants\":{\"\":{\"sent\":"));
	assert_non_null(strstr(b.data, "\"tenant\":\"acme\""));
	tl_buf_free(&b);
	model_free(&m);
	tl_gen_destroy(g);
}

static char *truth_of(uint64_t seed, int64_t recipients)
{
	struct tl_gen_opts o;
	tl_gen_defaults(&o);
	o.tenant = "acme";
	memcpy(o.link_key, key_acme, sizeof key_acme);
	o.campaigns = 2;
	o.recipients = recipients;
	o.seed = seed;
	struct tl_gen *g;
	assert_int_equal(tl_gen_create(&o, &g), 0);
	for (;;) {
		struct tl_gen_request *r;
		assert_int_equal(tl_gen_next(g, &r), 0);
		if (!r)
			break;
		assert_int_equal(tl_gen_complete(g, r, r->expect_status ? r->expect_status : 202,
		                                 r->expect_location, NULL, 0),
		                 0);
	}
	struct tl_buf b;
	tl_buf_init(&b, 0);
	assert_int_equal(tl_gen_truth_json(g, &b), 0);
	tl_gen_destroy(g);
	return b.data;
}

static void test_deterministic(void **state)
{
	(void)state;
	char *a = truth_of(99, 800), *b = truth_of(99, 800), *c = truth_of(100, 800);
	assert_string_equal(a, b);
	assert_string_not_equal(a, c);
	free(a);
	free(b);
	free(c);
}

static void test_events_scale_recipients(void **state)
{
	(void)state;
	struct tl_gen_opts o;
	tl_gen_defaults(&o);
	o.tenant = "acme";
	memcpy(o.link_key, key_acme, sizeof key_acme);
	o.campaigns = 4;
	o.events = 60000;
	struct tl_gen *g;
	assert_int_equal(tl_gen_create(&o, &g), 0);
	assert_true(tl_gen_recipients(g) > 1000);
	for (;;) {
		struct tl_gen_request *r;
		assert_int_equal(tl_gen_next(g, &r), 0);
		if (!r)
			break;
		(void)tl_gen_complete(g, r, r->expect_status ? r->expect_status : 200, r->expect_location,
		                      NULL, 0);
	}
	struct tl_gen_stats st;
	tl_gen_stats(g, &st);
	assert_true(st.events_sent > 54000 && st.events_sent < 66000);
	tl_gen_destroy(g);
}

/* A wrong answer is an error: a junk batch the collector took, a click that
 * did not redirect where its token says. */
static void test_unexpected_answers_are_errors(void **state)
{
	(void)state;
	struct tl_gen_opts o;
	tl_gen_defaults(&o);
	o.tenant = "acme";
	memcpy(o.link_key, key_acme, sizeof key_acme);
	o.campaigns = 1;
	o.recipients = 3000;
	o.batch_lines = 100;
	struct tl_gen *g;
	assert_int_equal(tl_gen_create(&o, &g), 0);
	int junk_taken = 0, bad_redirect = 0;
	for (;;) {
		struct tl_gen_request *r;
		assert_int_equal(tl_gen_next(g, &r), 0);
		if (!r)
			break;
		int status = r->expect_status ? r->expect_status : 200;
		const char *loc = r->expect_location;
		char err[512] = "";
		if (status == 400 && !junk_taken) {
			junk_taken = 1;
			assert_int_equal(tl_gen_complete(g, r, 200, NULL, err, sizeof err), -TL_EINVAL);
			assert_non_null(strstr(err, "expected 400"));
			continue;
		}
		if (status == 302 && !bad_redirect) {
			bad_redirect = 1;
			assert_int_equal(tl_gen_complete(g, r, 302, "https://evil.example/", err, sizeof err),
			                 -TL_EINVAL);
			continue;
		}
		assert_int_equal(tl_gen_complete(g, r, status, loc, err, sizeof err), 0);
	}
	assert_true(junk_taken && bad_redirect);
	struct tl_gen_stats st;
	tl_gen_stats(g, &st);
	assert_int_equal(st.errors, 2);
	tl_gen_destroy(g);
}

/* hit_id_prefix: every hit carries its own key "<prefix>-<n>" and may be
 * re-sent; batches are unchanged; without a prefix hits have no key and are
 * not retry-safe. A prefix outside [A-Za-z0-9_.-]{1,40} is refused. */
static void test_hit_keys(void **state)
{
	(void)state;
	struct tl_gen_opts o;
	tl_gen_defaults(&o);
	o.tenant = "acme";
	memcpy(o.link_key, key_acme, sizeof key_acme);
	o.campaigns = 1;
	o.recipients = 300;
	for (int keyed = 0; keyed < 2; keyed++) {
		o.hit_id_prefix = keyed ? "g00ff.run-1" : NULL;
		struct tl_gen *g;
		assert_int_equal(tl_gen_create(&o, &g), 0);
		uint64_t hits = 0;
		for (;;) {
			struct tl_gen_request *r;
			assert_int_equal(tl_gen_next(g, &r), 0);
			if (!r)
				break;
			if (r->kind == TL_GEN_REQ_EVENTS) {
				assert_null(r->idempotency_key);
				assert_true(r->retry_safe);
			} else if (keyed) {
				char want[64];
				snprintf(want, sizeof want, "g00ff.run-1-%llx", (unsigned long long)++hits);
				assert_non_null(r->idempotency_key);
				assert_string_equal(r->idempotency_key, want); /* unique within the run */
				assert_true(r->retry_safe);
			} else {
				hits++;
				assert_null(r->idempotency_key);
				assert_false(r->retry_safe);
			}
			assert_int_equal(tl_gen_complete(g, r, r->expect_status ? r->expect_status : 200,
			                                 r->expect_location, NULL, 0),
			                 0);
		}
		assert_true(hits > 100);
		tl_gen_destroy(g);
	}
	struct tl_gen *g;
	o.hit_id_prefix = "bad prefix";
	assert_int_equal(tl_gen_create(&o, &g), -TL_EINVAL);
	o.hit_id_prefix = "";
	assert_int_equal(tl_gen_create(&o, &g), -TL_EINVAL);
	o.hit_id_prefix = "0123456789012345678901234567890123456789x"; /* 41 */
	assert_int_equal(tl_gen_create(&o, &g), -TL_EINVAL);
}

static void test_bad_options(void **state)
{
	(void)state;
	struct tl_gen_opts o;
	struct tl_gen *g;
	tl_gen_defaults(&o);
	assert_int_equal(tl_gen_create(&o, &g), -TL_EINVAL); /* no tenant */
	o.tenant = "acme";
	o.variants = "A,,B";
	assert_int_equal(tl_gen_create(&o, &g), -TL_EINVAL);
	o.variants = "A,A";
	assert_int_equal(tl_gen_create(&o, &g), -TL_EINVAL);
	o.variants = "A,";
	assert_int_equal(tl_gen_create(&o, &g), -TL_EINVAL);
	o.variants = "A,B,C";
	o.campaigns = 0;
	assert_int_equal(tl_gen_create(&o, &g), -TL_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_truth_matches_model),
	    cmocka_unit_test(test_no_variants),
	    cmocka_unit_test(test_deterministic),
	    cmocka_unit_test(test_events_scale_recipients),
	    cmocka_unit_test(test_unexpected_answers_are_errors),
	    cmocka_unit_test(test_hit_keys),
	    cmocka_unit_test(test_bad_options),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
