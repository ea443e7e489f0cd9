/* enrich.h — the enricher: verifies tracking tokens, resolves tenant,
 * campaign, variant, message, recipient (keyed hash) and link, classifies
 * machine opens and bot clicks (DESIGN.md §1).
 *
 * tl_enrich_event is pure library code shared by the streaming role and the
 * batch recompute. The role (tl_enricher_*) reads partition p of `events`,
 * writes exactly one record per input to partition p of `metrics` (rejects
 * carry TL_EVF_DEAD and are also copied to `dead` with their reason), and on
 * start resumes after the source offset carried by the last record of its
 * output partition. */
#ifndef TL_ENRICH_H
#define TL_ENRICH_H

#include "core/buf.h"
#include "event/classify.h"
#include "event/event.h"
#include "event/token.h"
#include "store/store.h"
#include "stream/stream.h"

/* Finds a tenant by name; NULL when unknown. */
typedef const struct tl_tenant *(*tl_tenant_lookup_fn)(void *arg, const char *name, size_t len);

struct tl_enrich_ctx {
	tl_tenant_lookup_fn lookup;
	void *lookup_arg;
	struct tl_classify_opts classify;
};

/* Scratch memory for one tl_enrich_event call (token decoding, recipient hash). */
struct tl_enrich_scratch {
	unsigned char token[TL_MAX_TOKEN];
	char rcpt_hash[TL_RCPT_HASH_LEN + 1];
};

/* Enriches ev in place. Its string views may afterwards point into scratch,
 * which must outlive them. Returns 0, or -TL_EINVAL / -TL_EAUTH with *reason
 * set to a static reason ("bad_token", "bad_signature", "unknown_tenant",
 * "token_kind", "invalid_event"). Any thread (ctx lookup permitting). */
int tl_enrich_event(const struct tl_enrich_ctx *ctx, struct tl_event *ev, struct tl_enrich_scratch *scratch,
                    const char **reason) TL_MUST_CHECK;

struct tl_enricher;

struct tl_enricher_opts {
	struct tl_stream *stream; /* not owned */
	const char *db_uri;       /* tenants */
	uint64_t partitions;      /* owned partitions mask */
	struct tl_classify_opts classify;
	size_t batch_max; /* records per poll, default 4096 */
};

int tl_enricher_create(const struct tl_enricher_opts *o, struct tl_enricher **out) TL_MUST_CHECK;
int tl_enricher_run(struct tl_enricher *e);
void tl_enricher_stop(struct tl_enricher *e);
void tl_enricher_destroy(struct tl_enricher *e);
/* Prometheus text: processed, rejected by reason, machine/bot by rule. Any thread. */
int tl_enricher_metrics(struct tl_enricher *e, struct tl_buf *out) TL_MUST_CHECK;

#endif
