/* links.h — tracking URLs: <base>/o/<token>.gif and <base>/c/<token>. */
#ifndef TL_LINKS_H
#define TL_LINKS_H

#include "core/buf.h"
#include "event/token.h"

/* Mints t with key and appends the whole URL to out. 0 or negative. */
int tl_link_url(const struct tl_token *t, const unsigned char *key, size_t key_len, const char *base,
                struct tl_buf *out) TL_MUST_CHECK;

#endif
