/*
 * config_priv.h - what config.c (the file, its sections and cross-key
 * rules), config_keys.c (each key's row and the generic setters) and
 * config_values.c (the setters of keys with a syntax of their own) share.
 * No other file includes it.
 */
#ifndef TLSFWD_CONFIG_PRIV_H
#define TLSFWD_CONFIG_PRIV_H

#include <stdbool.h>

#include "config.h"

/* The field of obj that row k's offset names. */
#define FIELD(obj, k, type) ((type *)(void *)((char *)(obj) + (k)->offset))

/* State of one parse: where we are, and what we have built so far. */
struct parse_ctx {
	const char		*path;
	struct config		*cfg;
	struct config_errors	*errs;
	/* Line reader state, so errors carry the right line number. */
	const char		*text;
	int			 line;
	bool			 line_indented;	/* inih: continues a value */
	bool			 after_key;	/* inih has a key to continue */
	/* The section the following keys belong to. */
	enum { SEC_NONE, SEC_GLOBAL, SEC_SERVICE, SEC_IGNORED } sec;
	struct service_config	*sc;
	bool			 global_seen;
	int			 global_line;
};

/* An error at the current line. */
void	config_error_here(struct parse_ctx *p, const char *fmt, ...)
	    __attribute__((format(printf, 2, 3)));

/*
 * Sets key name of table in obj (a service_config or the global_config)
 * from value; where ("[global]", "[name]") prefixes the errors about an
 * unknown or repeated key.
 */
void	config_key_apply(struct parse_ctx *p, const struct config_key *table,
	    void *obj, uint64_t *seen, const char *where, const char *name,
	    const char *value);
/* Gives every row with a default_value its default. */
void	config_keys_defaults(struct parse_ctx *p,
	    const struct config_key *table, void *obj);
/* Whether key name of table was given (seen: the section's bits). */
bool	config_key_seen(const struct config_key *table, uint64_t seen,
	    const char *name);

/* config_values.c: keys whose values have a syntax of their own. */
config_key_set	config_set_dns_servers, config_set_listen,
		config_add_upstreams, config_set_sni,
		config_set_verify_hostname, config_add_pin, config_set_alpn,
		config_add_allow, config_add_deny, config_set_metrics_listen,
		config_add_metrics_allow, config_set_via;

#endif
