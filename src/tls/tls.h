/* SPDX-License-Identifier: MIT
 *
 * tls.h: TLS over OpenSSL 3 memory BIOs, driven by the connection's own loop,
 * for both ends: the server's contexts (tls_cert, tls_key, checked) and the
 * native upstream client's (peer verified against the system store or
 * upstream_ca_file), and the per-connection engine that turns ciphertext read
 * from the socket into plaintext and encrypts what goes out before uv_write.
 */
#ifndef AG_TLS_TLS_H
#define AG_TLS_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

/* An SSL_CTX: reference counted (each connection's SSL holds one), immutable
 * once built, so any thread may start connections on it. */
typedef struct ag_tls_ctx ag_tls_ctx_t;
/* One connection's TLS state; owned by its connection, used on its loop only. */
typedef struct ag_tls ag_tls_t;

/** Builds a server context from a PEM certificate chain (leaf first) and its
 *  private key: TLS 1.2 minimum, no renegotiation, ALPN http/1.1. Refuses an
 *  unreadable file, a key that does not match the certificate, and a
 *  certificate that is expired or not valid yet, with a message naming the
 *  file in err. @return 0 and *out (the caller's reference), or AG_EBADCONFIG. */
int ag_tls_ctx_new(const char *cert_file, const char *key_file, ag_tls_ctx_t **out, char *err,
                   size_t errlen);
/** Another reference (NULL: no-op); returns ctx. */
ag_tls_ctx_t *ag_tls_ctx_ref(ag_tls_ctx_t *ctx);
/** Drops a reference; the context goes with its last connection. NULL: no-op. */
void ag_tls_ctx_unref(ag_tls_ctx_t *ctx);
/** The leaf certificate's SHA-256 fingerprint, hex, into out (65 bytes). */
void ag_tls_ctx_fingerprint(const ag_tls_ctx_t *ctx, char out[65]);

/** A connection's engine over stream (borrowed: it must outlive the engine).
 *  @return NULL when memory ran out. */
ag_tls_t *ag_tls_new(ag_tls_ctx_t *ctx, uv_stream_t *stream);

/** Builds a client context: TLS 1.2 minimum, the peer's chain verified
 *  against ca_file (PEM; NULL or "": the system store, OpenSSL's default
 *  paths), ALPN http/1.1, sessions kept for resumption by the caller.
 *  @return 0 and *out, or AG_EBADCONFIG with the reason in err. */
int ag_tls_client_ctx_new(const char *ca_file, ag_tls_ctx_t **out, char *err, size_t errlen);

/** A client engine for host (SNI when host is a name; the certificate must
 *  name host, or hold it as an IP address), resuming session when given (an
 *  ag_tls_session_take(), borrowed). The first ag_tls_feed(t, NULL, 0) sends
 *  the ClientHello. @return NULL when memory ran out. */
ag_tls_t *ag_tls_client_new(ag_tls_ctx_t *ctx, uv_stream_t *stream, const char *host,
                            void *session);
/** A session the server issued on this connection (the newest first; a TLS
 *  1.3 server sends two per full handshake), the caller's reference for
 *  ag_tls_session_free; NULL when none is left. */
void *ag_tls_session_take(ag_tls_t *t);
/** True for a TLS 1.3 ticket, which is used once (RFC 8446, C.4); a TLS 1.2
 *  session may resume many connections. */
bool ag_tls_session_single_use(const void *session);
void ag_tls_session_free(void *session);
/** Why a client handshake failed, for the log (the certificate check's
 *  verdict when it was that), into buf. */
void ag_tls_failure(ag_tls_t *t, char *buf, size_t len);
/** Frees the engine; NULL: no-op. Call only after the stream closed (its
 *  pending writes' callbacks have run). */
void ag_tls_free(ag_tls_t *t);

/** Ciphertext read from the socket: fed in, the handshake advanced, and what
 *  the engine must send (handshake records, alerts) written. @return 0, or a
 *  negative code when the connection is broken (not TLS, a failed
 *  handshake, a write error): close it. */
int ag_tls_feed(ag_tls_t *t, const char *data, size_t len);

/** Plaintext into buf[0..len). @return bytes (> 0), 0 when more ciphertext
 *  is needed, UV_EOF when the peer sent close_notify, or a negative code on a
 *  protocol error. len 0 asks whether a byte is ready without taking it:
 *  1 when one is, else as above. */
int ag_tls_read(ag_tls_t *t, char *buf, size_t len);

/** True when ciphertext or plaintext waits inside the engine (reading stopped
 *  while records were buffered): read it before new socket data comes. */
bool ag_tls_pending(const ag_tls_t *t);

/** True once the handshake completed. */
bool ag_tls_established(const ag_tls_t *t);

/** Encrypts bufs and sends them after everything sent before.
 *  @return 0 when the socket took all of it now (cb is not called), 1 when
 *  some is queued (cb(wr, status) runs once it is written or failed; wr is
 *  the caller's, passed back untouched), or a negative code (cb is not called).
 *  *queued (may be NULL): the ciphertext bytes left queued. */
int ag_tls_write(ag_tls_t *t, const uv_buf_t *bufs, unsigned nbufs, uv_write_t *wr, uv_write_cb cb,
                 size_t *queued);

/** Queues close_notify (before a lingering close); best effort. */
void ag_tls_shutdown(ag_tls_t *t);

#endif
