/* SPDX-License-Identifier: MIT
 *
 * resp.h: the RESP2 reply parser (Redis's wire format, server to client): strict,
 * incremental, bounded in depth, element count and string size. Replies become
 * a tree of ag_resp_t whose strings point into the caller's buffer (zero-copy).
 */
#ifndef AG_STORE_RESP_H
#define AG_STORE_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Nesting the parser accepts: our scripts answer flat arrays; 8 leaves room. */
#define AG_RESP_MAX_DEPTH 8
/* A simple string, an error or a header line longer than this is malformed. */
#define AG_RESP_MAX_LINE 65536

typedef enum ag_resp_type {
    AG_RESP_STATUS = 1, /* +OK */
    AG_RESP_ERROR,      /* -ERR ... */
    AG_RESP_INTEGER,    /* :42 */
    AG_RESP_BULK,       /* $3\r\nabc */
    AG_RESP_NIL,        /* $-1 or *-1 */
    AG_RESP_ARRAY,      /* *2 ... */
} ag_resp_type_t;

typedef struct ag_resp ag_resp_t;
struct ag_resp {
    ag_resp_type_t type;
    int64_t integer;  /* AG_RESP_INTEGER */
    const char *str;  /* STATUS, ERROR, BULK: into the parsed buffer, not NUL-terminated */
    size_t len;       /* its length; ARRAY: the element count */
    ag_resp_t *elems; /* ARRAY: len elements */
};

typedef struct ag_resp_limits {
    size_t max_bulk;  /* the largest bulk string, bytes */
    size_t max_nodes; /* replies plus all their elements, in one reply */
} ag_resp_limits_t;

/** The state of one reply being scanned; ag_resp_parser_init() before use, and
 *  again (or ag_resp_parse() does it) after each complete reply. */
typedef struct ag_resp_parser {
    ag_resp_limits_t limits;
    /* private */
    size_t _pos;                          /* where the next element starts */
    unsigned _depth;                      /* open arrays */
    int64_t _left[AG_RESP_MAX_DEPTH + 1]; /* elements still due at each depth */
    size_t _nodes;                        /* nodes counted so far */
} ag_resp_parser_t;

void ag_resp_parser_init(ag_resp_parser_t *p, const ag_resp_limits_t *limits);

/**
 * Parses one reply from the start of buf[0..len). Incremental: after AG_EAGAIN,
 * call it again with the same bytes plus more (the buffer may move, its start
 * must not change); bytes already checked are not scanned again.
 * @return bytes the reply takes (> 0) and sets *out to a tree owned by the caller
 *         (ag_resp_free()), whose strings point into buf: valid while those bytes are;
 *         AG_EAGAIN when the reply is incomplete; AG_EPROTO when it is malformed
 *         (then the connection must be dropped: nothing after it can be trusted);
 *         AG_ETOOBIG when it passes a limit; -ENOMEM.
 */
int64_t ag_resp_parse(ag_resp_parser_t *p, const char *buf, size_t len, ag_resp_t **out);

/** Frees a tree from ag_resp_parse() or ag_resp_dup(). NULL is a no-op. */
void ag_resp_free(ag_resp_t *r);

/** A copy of r that owns its strings (NUL-terminated), in one allocation, for
 *  a reply that must outlive the buffer it was parsed from. NULL: no memory. */
ag_resp_t *ag_resp_dup(const ag_resp_t *r);

/** True when r is a STATUS, ERROR or BULK reply whose text is exactly s. */
bool ag_resp_is(const ag_resp_t *r, ag_resp_type_t type, const char *s);

/** True when r is an ERROR whose first word is `code` ("NOSCRIPT", "NOAUTH"). */
bool ag_resp_error_is(const ag_resp_t *r, const char *code);

#endif
