/* SPDX-License-Identifier: MIT
 *
 * tls.c: TLS for the server (SSL_CTX from tls_cert/tls_key with its checks)
 * and for the native upstream client (a verifying client SSL_CTX), and one
 * engine per connection over two memory BIOs, so the connection's loop does
 * all socket I/O and OpenSSL never touches a descriptor.
 */
#include "util/platform.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls/tls.h"
#include "util/errors.h"

/* One plaintext record's worth: small pieces (a chunk's size line, its data,
 * its CRLF) are gathered into one record instead of three. */
#define GATHER_MAX 16384

/* An outgoing buffer above this is given back once it is empty, so one big
 * answer does not leave an idle connection holding its size. */
#define OUT_KEEP 65536

struct ag_tls {
    SSL *ssl;
    BIO *rbio; /* ciphertext in (memory BIO); owned by ssl */
    BIO *wbio; /* ciphertext out, into out[] (out_method); owned by ssl */
    uv_stream_t *stream;
    /* Ciphertext not yet offered to the socket. Our own buffer rather than a
     * memory BIO's: emptying a memory BIO (BIO_reset) clears its whole
     * capacity, and reading it out is a copy per write. */
    char *out;
    size_t out_len, out_cap;
    bool broken;           /* out could not grow: the connection must go */
    char why[160];         /* a failed handshake's first OpenSSL error */
    SSL_SESSION *fresh[4]; /* client: sessions issued on this connection, oldest first */
    unsigned nfresh;
};

/* Ciphertext the socket did not take at once, queued with libuv. */
typedef struct tls_write {
    uv_write_t req;
    uv_write_t *user; /* the caller's, handed back to cb */
    uv_write_cb cb;
    char *data; /* owned */
} tls_write_t;

/* ---- the outgoing BIO: SSL's records appended to t->out ----------------- */

static BIO_METHOD *out_method;
static pthread_once_t out_once = PTHREAD_ONCE_INIT;

static int out_write(BIO *b, const char *data, size_t len, size_t *written)
{
    ag_tls_t *t = BIO_get_data(b);
    if (t->out_len + len > t->out_cap) {
        size_t cap = t->out_cap ? t->out_cap : 4096;
        while (cap < t->out_len + len)
            cap *= 2;
        char *p = realloc(t->out, cap);
        if (!p) {
            t->broken = true;
            return 0;
        }
        t->out = p;
        t->out_cap = cap;
    }
    memcpy(t->out + t->out_len, data, len);
    t->out_len += len;
    *written = len;
    return 1;
}

static long out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    AG_UNUSED(num);
    AG_UNUSED(ptr);
    ag_tls_t *t = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* the loop sends it: flush() below */
    case BIO_CTRL_WPENDING:
    case BIO_CTRL_PENDING:
        return t ? (long)t->out_len : 0;
    default:
        return 0;
    }
}

static int out_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void out_method_init(void)
{
    out_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "aigate-tls-out");
    if (out_method && (BIO_meth_set_write_ex(out_method, out_write) != 1 ||
                       BIO_meth_set_ctrl(out_method, out_ctrl) != 1 ||
                       BIO_meth_set_create(out_method, out_create) != 1)) {
        BIO_meth_free(out_method);
        out_method = NULL;
    }
}

static SSL_CTX *sslctx(const ag_tls_ctx_t *c)
{
    return (SSL_CTX *)c;
}

/* OpenSSL's first queued error as text, the queue emptied. */
static void ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "unknown error");
    ERR_clear_error();
}

static void asn1_time_text(const ASN1_TIME *t, char *buf, size_t len)
{
    buf[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    if (ASN1_TIME_print(b, t) > 0) {
        int n = BIO_read(b, buf, (int)len - 1);
        buf[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

/* The one protocol we speak: http/1.1. A client that offers ALPN without it
 * gets no ALPN answer (and may still speak HTTP/1.1), as nginx does. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    AG_UNUSED(ssl);
    AG_UNUSED(arg);
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int readable(const char *what, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s \"%s\": cannot read it: %s", what, path, strerror(errno));
        return -1;
    }
    fclose(f);
    return 0;
}

int ag_tls_ctx_new(const char *cert_file, const char *key_file, ag_tls_ctx_t **out, char *err,
                   size_t errlen)
{
    char why[256];
    ERR_clear_error();
    if (!cert_file || !*cert_file || !key_file || !*key_file) {
        snprintf(err, errlen, "tls_cert and tls_key must be set together");
        return AG_EBADCONFIG;
    }
    if (readable("tls_cert", cert_file, err, errlen) < 0 ||
        readable("tls_key", key_file, err, errlen) < 0)
        return AG_EBADCONFIG;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "cannot create a TLS context: %s", why);
        return AG_EBADCONFIG;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    /* Renegotiation is a DoS lever and nothing we need; the server's order of
     * ciphers wins; idle connections give their record buffers back. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* Resumption by stateless tickets only: a shared session cache is a lock
     * every worker's handshakes would meet. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* TLS 1.2: forward-secret AEAD suites only (TLS 1.3's defaults are all AEAD). */
    if (SSL_CTX_set_cipher_list(ctx,
                                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305") != 1) {
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "cannot set the TLS ciphers: %s", why);
        goto fail;
    }
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "tls_cert \"%s\" is not a PEM certificate chain: %s", cert_file, why);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        if (ERR_GET_REASON(ERR_peek_error()) == X509_R_KEY_VALUES_MISMATCH) {
            ERR_clear_error();
            snprintf(err, errlen,
                     "tls_key \"%s\" does not match the certificate in tls_cert \"%s\"", key_file,
                     cert_file);
            goto fail;
        }
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "tls_key \"%s\" is not a PEM private key for tls_cert: %s", key_file,
                 why);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "tls_key \"%s\" does not match the certificate in tls_cert \"%s\"",
                 key_file, cert_file);
        goto fail;
    }
    X509 *x = SSL_CTX_get0_certificate(ctx);
    char when[64];
    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        asn1_time_text(X509_get0_notAfter(x), when, sizeof(when));
        snprintf(err, errlen, "tls_cert \"%s\": the certificate expired (notAfter %s)", cert_file,
                 when);
        goto fail;
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
        asn1_time_text(X509_get0_notBefore(x), when, sizeof(when));
        snprintf(err, errlen, "tls_cert \"%s\": the certificate is not valid yet (notBefore %s)",
                 cert_file, when);
        goto fail;
    }
    *out = (ag_tls_ctx_t *)ctx;
    return 0;
fail:
    SSL_CTX_free(ctx);
    return AG_EBADCONFIG;
}

ag_tls_ctx_t *ag_tls_ctx_ref(ag_tls_ctx_t *ctx)
{
    if (ctx)
        SSL_CTX_up_ref(sslctx(ctx));
    return ctx;
}

void ag_tls_ctx_unref(ag_tls_ctx_t *ctx)
{
    if (ctx)
        SSL_CTX_free(sslctx(ctx));
}

void ag_tls_ctx_fingerprint(const ag_tls_ctx_t *ctx, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    out[0] = '\0';
    X509 *x = SSL_CTX_get0_certificate(sslctx(ctx));
    if (!x || X509_digest(x, EVP_sha256(), md, &n) != 1)
        return;
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < n && i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * (n < 32 ? n : 32)] = '\0';
}

ag_tls_t *ag_tls_new(ag_tls_ctx_t *ctx, uv_stream_t *stream)
{
    ag_tls_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->stream = stream;
    t->ssl = SSL_new(sslctx(ctx)); /* takes its own reference to ctx */
    t->rbio = BIO_new(BIO_s_mem());
    pthread_once(&out_once, out_method_init);
    t->wbio = out_method ? BIO_new(out_method) : NULL;
    if (t->wbio)
        BIO_set_data(t->wbio, t);
    if (!t->ssl || !t->rbio || !t->wbio) {
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    /* An empty memory BIO says "retry", not EOF: the socket's EOF is the loop's to tell. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    return t;
}

/* A session (a TLS 1.3 ticket, a TLS 1.2 session) arrived: kept on the
 * engine for its owner to take; the oldest goes when four wait. */
static int on_new_session(SSL *ssl, SSL_SESSION *s)
{
    ag_tls_t *t = SSL_get_app_data(ssl);
    if (!t)
        return 0;
    if (t->nfresh == sizeof(t->fresh) / sizeof(t->fresh[0])) {
        SSL_SESSION_free(t->fresh[0]);
        memmove(t->fresh, t->fresh + 1, --t->nfresh * sizeof(t->fresh[0]));
    }
    t->fresh[t->nfresh++] = s;
    return 1; /* the reference is ours */
}

int ag_tls_client_ctx_new(const char *ca_file, ag_tls_ctx_t **out, char *err, size_t errlen)
{
    char why[256];
    ERR_clear_error();
    if (ca_file && *ca_file && readable("upstream_ca_file", ca_file, err, errlen) < 0)
        return AG_EBADCONFIG;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        ssl_reason(why, sizeof(why));
        snprintf(err, errlen, "cannot create a TLS context: %s", why);
        return AG_EBADCONFIG;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    /* The caller keeps one session per origin (ag_tls_session): OpenSSL's
     * own client cache would be a lock shared by every worker. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    static const unsigned char alpn[] = "\x08http/1.1";
    int ok = SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) == 0;
    if (ok)
        ok = ca_file && *ca_file ? SSL_CTX_load_verify_file(ctx, ca_file) == 1
                                 : SSL_CTX_set_default_verify_paths(ctx) == 1;
    if (!ok) {
        ssl_reason(why, sizeof(why));
        if (ca_file && *ca_file)
            snprintf(err, errlen, "upstream_ca_file \"%s\" holds no PEM certificate: %s", ca_file,
                     why);
        else
            snprintf(err, errlen, "cannot load the system CA store: %s", why);
        SSL_CTX_free(ctx);
        return AG_EBADCONFIG;
    }
    *out = (ag_tls_ctx_t *)ctx;
    return 0;
}

ag_tls_t *ag_tls_client_new(ag_tls_ctx_t *ctx, uv_stream_t *stream, const char *host, void *session)
{
    ag_tls_t *t = ag_tls_new(ctx, stream);
    if (!t)
        return NULL;
    SSL_set_app_data(t->ssl, t);
    SSL_set_connect_state(t->ssl);
    unsigned char ip[16];
    bool literal = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    int ok = literal
                 ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host) == 1
                 : SSL_set_tlsext_host_name(t->ssl, host) == 1 && SSL_set1_host(t->ssl, host) == 1;
    if (ok && session)
        ok = SSL_set_session(t->ssl, session) == 1;
    if (!ok) {
        ERR_clear_error();
        ag_tls_free(t);
        return NULL;
    }
    return t;
}

void *ag_tls_session_take(ag_tls_t *t)
{
    while (t->nfresh) {
        SSL_SESSION *s = t->fresh[--t->nfresh];
        if (SSL_SESSION_is_resumable(s))
            return s;
        SSL_SESSION_free(s);
    }
    return NULL;
}

bool ag_tls_session_single_use(const void *session)
{
    return SSL_SESSION_get_protocol_version(session) >= TLS1_3_VERSION;
}

void ag_tls_session_free(void *session)
{
    SSL_SESSION_free(session);
}

void ag_tls_failure(ag_tls_t *t, char *buf, size_t len)
{
    long v = SSL_get_verify_result(t->ssl);
    if (v != X509_V_OK)
        snprintf(buf, len, "upstream certificate verify failed: %s",
                 X509_verify_cert_error_string(v));
    else
        snprintf(buf, len, "upstream TLS handshake failed: %s", t->why[0] ? t->why : "closed");
}

void ag_tls_free(ag_tls_t *t)
{
    if (!t)
        return;
    SSL_free(t->ssl); /* and both BIOs */
    while (t->nfresh)
        SSL_SESSION_free(t->fresh[--t->nfresh]);
    free(t->out);
    free(t);
}

static void on_tls_written(uv_write_t *req, int status)
{
    tls_write_t *w = (tls_write_t *)req;
    uv_write_t *user = w->user;
    uv_write_cb cb = w->cb;
    free(w->data);
    free(w);
    if (cb)
        cb(user, status);
}

/* Sends what the engine produced: straight to the socket when it takes it
 * (libuv refuses a try_write while anything is queued, so order holds), the
 * rest queued. @return 0 all sent, 1 queued (cb later), or a negative code. */
static char *take_out(ag_tls_t *t)
{
    char *p = t->out;
    t->out = NULL;
    t->out_cap = 0;
    return p;
}

static int flush(ag_tls_t *t, uv_write_t *user, uv_write_cb cb, size_t *queued)
{
    if (queued)
        *queued = 0;
    if (t->broken)
        return UV_ENOMEM;
    if (t->out_len == 0)
        return 0;
    uv_buf_t b = uv_buf_init(t->out, (unsigned)t->out_len);
    int w = uv_try_write(t->stream, &b, 1);
    size_t done = w > 0 ? (size_t)w : 0, rest = t->out_len - done;
    int rc = 0;
    if (w < 0 && w != UV_EAGAIN) {
        rc = w;
    } else if (rest) {
        /* Nothing taken: the buffer itself goes with the write (no copy). */
        tls_write_t *q = malloc(sizeof(*q));
        if (q && done == 0) {
            q->data = take_out(t);
        } else if (q) {
            q->data = malloc(rest);
            if (q->data)
                memcpy(q->data, t->out + done, rest);
        }
        if (!q || !q->data) {
            free(q);
            rc = UV_ENOMEM;
        } else {
            q->user = user;
            q->cb = cb;
            b = uv_buf_init(q->data, (unsigned)rest);
            rc = uv_write(&q->req, t->stream, &b, 1, on_tls_written);
            if (rc < 0) {
                free(q->data);
                free(q);
            } else {
                rc = 1;
                if (queued)
                    *queued = rest;
            }
        }
    }
    t->out_len = 0;
    if (t->out_cap > OUT_KEEP) {
        AG_FREE(&t->out);
        t->out_cap = 0;
    }
    return rc;
}

int ag_tls_feed(ag_tls_t *t, const char *data, size_t len)
{
    if (len && BIO_write(t->rbio, data, (int)len) != (int)len)
        return UV_ENOMEM;
    if (SSL_is_init_finished(t->ssl))
        return 0;
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    int rc = 0;
    if (r <= 0) {
        int e = SSL_get_error(t->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            unsigned long code = ERR_peek_error();
            rc = ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_HTTP_REQUEST
                     ? AG_TLS_EPLAIN
                     : AG_TLS_EHANDSHAKE;
            if (code)
                ERR_error_string_n(code, t->why, sizeof(t->why));
            ERR_clear_error();
        }
    }
    /* The handshake's records, or the alert that ends a failed one. */
    int f = flush(t, NULL, NULL, NULL);
    return rc < 0 ? rc : f < 0 ? f : 0;
}

int ag_tls_read(ag_tls_t *t, char *buf, size_t len)
{
    size_t n = 0;
    char one;
    ERR_clear_error();
    int r = len ? SSL_read_ex(t->ssl, buf, len, &n) : SSL_peek_ex(t->ssl, &one, 1, &n);
    int rc;
    if (r == 1) {
        rc = len ? (int)n : 1;
    } else {
        int e = SSL_get_error(t->ssl, r);
        rc = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0
             : e == SSL_ERROR_ZERO_RETURN                          ? UV_EOF
                                                                   : AG_TLS_EPROTO;
        ERR_clear_error();
    }
    /* Reading can make records to send (a KeyUpdate's answer, session tickets). */
    int f = flush(t, NULL, NULL, NULL);
    if (f < 0 && rc >= 0)
        return f;
    return rc;
}

bool ag_tls_pending(const ag_tls_t *t)
{
    return SSL_has_pending(t->ssl) || BIO_ctrl_pending(t->rbio) > 0;
}

bool ag_tls_established(const ag_tls_t *t)
{
    return SSL_is_init_finished(t->ssl);
}

static int write_all(ag_tls_t *t, const char *p, size_t len)
{
    size_t n = 0;
    ERR_clear_error();
    if (SSL_write_ex(t->ssl, p, len, &n) != 1 || n != len) {
        ERR_clear_error();
        return AG_TLS_EPROTO;
    }
    return 0;
}

int ag_tls_write(ag_tls_t *t, const uv_buf_t *bufs, unsigned nbufs, uv_write_t *wr, uv_write_cb cb,
                 size_t *queued)
{
    char gather[GATHER_MAX];
    size_t g = 0;
    int rc = 0;
    for (unsigned i = 0; i < nbufs && rc == 0; i++) {
        size_t l = bufs[i].len;
        if (l == 0)
            continue;
        if (g + l <= sizeof(gather)) {
            memcpy(gather + g, bufs[i].base, l);
            g += l;
            continue;
        }
        if (g)
            rc = write_all(t, gather, g);
        g = 0;
        if (rc == 0)
            rc = write_all(t, bufs[i].base, l);
    }
    if (rc == 0 && g)
        rc = write_all(t, gather, g);
    if (rc < 0) {
        t->out_len = 0;
        return rc;
    }
    return flush(t, wr, cb, queued);
}

void ag_tls_shutdown(ag_tls_t *t)
{
    if (!SSL_is_init_finished(t->ssl))
        return;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
    (void)flush(t, NULL, NULL, NULL);
}
