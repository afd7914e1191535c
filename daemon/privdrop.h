/* privdrop.h - becoming [global] user/group after start-up. */
#ifndef TLSFWD_PRIVDROP_H
#define TLSFWD_PRIVDROP_H

#include <stddef.h>

#include "config.h"

/*
 * Switches to g->uid/g->gid with no supplementary groups, for good: the
 * change is verified, and failure is for the caller to treat as fatal.
 * Does nothing when g->user is empty.
 */
int	privdrop(const struct global_config *g, char *err, size_t errlen);

#endif
