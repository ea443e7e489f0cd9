/* err.h — error codes shared by every tally module.
 *
 * Convention: 0 is success, a negative TL_E* value is failure, everywhere.
 * tl_strerror() turns either sign into a static message. */
#ifndef TL_ERR_H
#define TL_ERR_H

#define TL_MUST_CHECK __attribute__((warn_unused_result))

enum tl_err {
	TL_OK = 0,
	TL_EINVAL = 1,   /* bad argument or malformed input */
	TL_ENOMEM,       /* allocation failed */
	TL_EIO,          /* I/O error */
	TL_ENOSPC,       /* no space left on the data device */
	TL_EAGAIN,       /* try again later (nothing lost) */
	TL_ECORRUPT,     /* stored data failed its integrity check */
	TL_ENOTFOUND,    /* no such object */
	TL_EBUSY,        /* resource locked or busy */
	TL_ETOOBIG,      /* over a configured size cap */
	TL_EAUTH,        /* authentication / signature failed */
	TL_ECLOSED,      /* object closed or shutting down */
	TL_EEXIST,       /* already exists */
	TL_ETIMEDOUT,    /* deadline passed */
	TL_EUNAVAIL,     /* backend unavailable (database or server down) */
	TL_ELOCKED,      /* held by another process */
	TL_EUNSUPPORTED, /* unknown scheme / feature */
	TL_ERR__COUNT
};

/* Returns a static, human-readable message for err (either sign). Any thread. */
const char *tl_strerror(int err);

/* Maps an errno value to the closest negative TL_E* code. Any thread. */
int tl_err_from_errno(int e);

#endif
