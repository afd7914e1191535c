/* privdrop.c - becoming [global] user/group after start-up. */
#include "privdrop.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int
privdrop(const struct global_config *g, char *err, size_t errlen)
{
	uid_t r, e, s;
	gid_t rg, eg, sg;

	if (g->user[0] == '\0')
		return 0;
	/* Started as that user already (systemd User=): nothing to drop. */
	if (geteuid() != 0) {
		if (getuid() == g->uid && geteuid() == g->uid &&
		    getgid() == g->gid && getegid() == g->gid)
			return 0;
		snprintf(err, errlen, "cannot switch to user %s: not started "
		    "as root (uid %u)", g->user, (unsigned)geteuid());
		return -1;
	}
	/* Groups first: once the uid changes, we may no longer change them. */
	if (setgroups(0, NULL) != 0) {
		snprintf(err, errlen, "cannot clear supplementary groups: %s",
		    strerror(errno));
		return -1;
	}
	if (setresgid(g->gid, g->gid, g->gid) != 0) {
		snprintf(err, errlen, "cannot switch to gid %u: %s",
		    (unsigned)g->gid, strerror(errno));
		return -1;
	}
	if (setresuid(g->uid, g->uid, g->uid) != 0) {
		snprintf(err, errlen, "cannot switch to user %s (uid %u): %s",
		    g->user, (unsigned)g->uid, strerror(errno));
		return -1;
	}
	/* Trust, but verify: all ids changed, and root cannot come back. */
	if (getresuid(&r, &e, &s) != 0 || getresgid(&rg, &eg, &sg) != 0 ||
	    r != g->uid || e != g->uid || s != g->uid || rg != g->gid ||
	    eg != g->gid || sg != g->gid ||
	    (g->uid != 0 && setuid(0) == 0)) {
		snprintf(err, errlen, "privileges were not fully dropped");
		return -1;
	}
	return 0;
}
