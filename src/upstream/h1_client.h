/* SPDX-License-Identifier: MIT
 *
 * h1_client.h: the native HTTP/1.1 upstream client, internal to upstream/:
 * client.c hands it the http:// and https:// transfers (upstream_client =
 * "native") behind the unchanged ag_upstream interface. One per worker loop;
 * loop thread only.
 */
#ifndef AG_UPSTREAM_H1_CLIENT_H
#define AG_UPSTREAM_H1_CLIENT_H

#include <stdbool.h>

#include <uv.h>

#include "upstream/client.h"

typedef struct ag_h1_client ag_h1_client_t;

/** Pool bounds: idle connections kept per origin, and how long one may idle. */
#define AG_H1_POOL_IDLE_MAX 64
#define AG_H1_POOL_IDLE_MS 30000

/** The CA file for https:// (NULL: the system store, loaded at the first
 *  https:// transfer). A file is loaded now. Before any client exists.
 *  @return 0 or AG_EBADCONFIG with the reason in err. */
int ag__h1_tls_init(const char *ca_file, char *err, size_t errlen);
/** Builds the client context on a thread of its own (once); joined by
 *  ag__h1_tls_warm_join(), before the process's cleanup. */
void ag__h1_tls_warm(void);
void ag__h1_tls_warm_join(void);

/** Creates the client on `loop`. @return 0 or -ENOMEM. */
int ag__h1_client_new(uv_loop_t *loop, ag_h1_client_t **out);

/** Closes every connection and frees every transfer without its callback; the
 *  memory goes once the handles have closed on the loop. NULL: no-op. */
void ag__h1_client_close(ag_h1_client_t *c);

/**
 * Starts a transfer as ag_upstream_start() does. The transfer it makes starts
 * with a `bool` that is true (client.c tells the two kinds apart by it).
 * @return 0; AG_EDECLINED when the URL is not one this client takes (not
 *         http:// or https://, userinfo, a proxy in the environment): use
 *         curl; -ENOMEM.
 */
int ag__h1_start(ag_h1_client_t *c, const ag_upstream_request_t *req, ag_upstream_done_cb done,
                 void *ctx, ag_upstream_xfer_t **out);

void ag__h1_cancel(ag_upstream_xfer_t *x);
void ag__h1_resume(ag_upstream_xfer_t *x);
unsigned ag__h1_active(const ag_h1_client_t *c);

#endif
