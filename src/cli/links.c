#include "cli/links.h"

#include "core/clock.h"

#include <string.h>

int tl_link_url(const struct tl_token *t, const unsigned char *key, size_t key_len, const char *base,
                struct tl_buf *out)
{
	size_t bl = strlen(base);
	while (bl && base[bl - 1] == '/')
		bl--;
	struct tl_token tok = *t;
	if (!tok.issued_ms)
		tok.issued_ms = tl_now_ms();
	int rc = tl_buf_append(out, base, bl);
	if (!rc)
		rc = tl_buf_puts(out, t->kind == TL_TOKEN_CLICK ? "/c/" : "/o/");
	if (!rc)
		rc = tl_token_mint(&tok, key, key_len, out);
	if (!rc && t->kind == TL_TOKEN_OPEN)
		rc = tl_buf_puts(out, ".gif");
	return rc;
}
