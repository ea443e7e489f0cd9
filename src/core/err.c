#include "core/err.h"

#include <errno.h>

static const char *const messages[TL_ERR__COUNT] = {
    [TL_OK] = "success",
    [TL_EINVAL] = "invalid argument or input",
    [TL_ENOMEM] = "out of memory",
    [TL_EIO] = "I/O error",
    [TL_ENOSPC] = "no space left on device",
    [TL_EAGAIN] = "temporarily unavailable, try again",
    [TL_ECORRUPT] = "data corrupted",
    [TL_ENOTFOUND] = "not found",
    [TL_EBUSY] = "busy",
    [TL_ETOOBIG] = "too large",
    [TL_EAUTH] = "authentication failed",
    [TL_ECLOSED] = "closed",
    [TL_EEXIST] = "already exists",
    [TL_ETIMEDOUT] = "timed out",
    [TL_EUNAVAIL] = "backend unavailable",
    [TL_ELOCKED] = "locked by another process",
    [TL_EUNSUPPORTED] = "not supported",
};

const char *tl_strerror(int err)
{
	if (err < 0)
		err = -err;
	if (err >= TL_ERR__COUNT || !messages[err])
		return "unknown error";
	return messages[err];
}

int tl_err_from_errno(int e)
{
	switch (e) {
	case 0:
		return TL_OK;
	case ENOMEM:
		return -TL_ENOMEM;
	case ENOSPC:
	case EDQUOT:
		return -TL_ENOSPC;
	case EAGAIN:
		return -TL_EAGAIN;
	case ENOENT:
		return -TL_ENOTFOUND;
	case EEXIST:
		return -TL_EEXIST;
	case EBUSY:
		return -TL_EBUSY;
	case EINVAL:
		return -TL_EINVAL;
	case ETIMEDOUT:
		return -TL_ETIMEDOUT;
	case EFBIG:
		return -TL_ETOOBIG;
	default:
		return -TL_EIO;
	}
}
