/* SPDX-License-Identifier: MIT
 *
 * admin.h: the operators' listener: metrics, live tail, minute series,
 * analytics, the dashboard, health and readiness. Its own HTTP server (one
 * thread, the same hardening as the clients' one), never counted in the
 * request metrics, and behind a bearer token when one is configured.
 */
#ifndef AG_ADMIN_ADMIN_H
#define AG_ADMIN_ADMIN_H

#include <stdbool.h>

#include "gateway/gateway.h"
#include "http/server.h"
#include "obs/obs.h"
#include "store/objstore.h"
#include "store/usage_log.h"
#include "tasks/tasks.h"

typedef struct ag_admin ag_admin_t;

typedef enum { AG_ADMIN_STARTING, AG_ADMIN_READY, AG_ADMIN_DRAINING } ag_admin_state_t;

typedef struct ag_admin_options {
    const char *listen; /* "host:port", "[v6]:port" */
    const char *token;  /* NULL or "": no token; copied and zeroed on free */
    ag_server_limits_t limits;
    ag_obs_t *obs; /* borrowed, like the rest */
    ag_usage_log_t *usage_log;
    ag_objstore_t *log_bucket;
    ag_tasks_t *tasks;      /* NULL: no scheduled tasks */
    ag_gateway_t *gateway;  /* for /readyz's Redis state; NULL: none */
    const ag_config_t *cfg; /* for the task list */
    /* POST /reload: validates and applies the config at `path` (NULL: the
     * server's own file), writing the answer's JSON into body; returns the
     * HTTP status. Called on a thread-pool thread; may block. NULL: 404. */
    int (*reload)(void *ctx, const char *path, ag_buf_t *body);
    /* POST /upgrade: a binary upgrade to `binary` (NULL: the running one's
     * path) with the config at `path` (NULL: the server's own file); as
     * reload, with reload_ctx. NULL: 404. */
    int (*upgrade)(void *ctx, const char *binary, const char *path, ag_buf_t *body);
    void *reload_ctx;
    ag_tls_ctx_t *tls; /* HTTPS with this context (borrowed); NULL: plain HTTP */
    /* A binary upgrade's handover: the old admin listener's sockets (see
     * ag_server_options_t.inherit_fds); owned from the call on. */
    const int *inherit_fds;
    unsigned ninherit;
} ag_admin_options_t;

/** Splits "host:port" ("[::1]:8788" too). @return 0 or -EINVAL. */
int ag_admin_parse_listen(const char *listen, char *host, size_t hostlen, int *port);

/** True for 127.0.0.0/8, ::1 and localhost. */
bool ag_admin_is_loopback(const char *host);

/** Binds and starts. @return 0, or a negative code (the caller names admin_listen). */
int ag_admin_start(const ag_admin_options_t *opts, ag_admin_t **out);

int ag_admin_port(const ag_admin_t *a);

/** The listening sockets, for a binary upgrade (ag_server_listen_fds()). */
unsigned ag_admin_listen_fds(const ag_admin_t *a, int *out, unsigned max);

/** The clients' server, once it listens (for aigate_connections_active). */
void ag_admin_set_server(ag_admin_t *a, const ag_server_t *srv);
void ag_admin_set_state(ag_admin_t *a, ag_admin_state_t state);
/** A reload's certificate for new admin connections (ag_server_set_tls). Any thread. */
int ag_admin_set_tls(ag_admin_t *a, ag_tls_ctx_t *ctx);

/** A reload restarted the scheduled tasks: the runner and the config it
 *  borrows (tasks NULL while it restarts). Waits for task requests using the
 *  old ones to let go of them. */
void ag_admin_set_tasks(ag_admin_t *a, ag_tasks_t *tasks, const ag_config_t *cfg);

/** Ends open tails and stops; then joins and frees. */
void ag_admin_shutdown(ag_admin_t *a);
void ag_admin_wait_and_free(ag_admin_t *a);

#endif
