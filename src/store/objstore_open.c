/* SPDX-License-Identifier: MIT
 *
 * objstore_open.c: opening the bucket of an [[r2_buckets]] binding by its
 * backend's name, with the S3 keys resolved from the secrets S3_ACCESS_KEY_ID
 * and S3_SECRET_ACCESS_KEY (environment, secrets file, .dev.vars).
 */
#include "util/platform.h"

#include <string.h>

#include "store/objstore.h"
#include "store/secrets.h"
#include "store/secrets_resolve.h"
#include "util/errors.h"

int ag_objstore_open_binding(const char *data_dir, const char *bucket, bool create,
                             const char *backend, const ag_objstore_s3_where_t *where,
                             ag_objstore_t **out)
{
    *out = NULL;
    if (backend == NULL || strcmp(backend, AG_OBJ_BACKEND_FS) == 0)
        return ag_objstore_open_bucket(data_dir, bucket, create, out);
    if (strcmp(backend, AG_OBJ_BACKEND_S3) != 0)
        return AG_OBJ_EBACKEND;
    char *ak = NULL, *sk = NULL;
    int rc = ag_secrets_resolve(data_dir, "S3_ACCESS_KEY_ID", &ak);
    if (rc == 0)
        rc = ag_secrets_resolve(data_dir, "S3_SECRET_ACCESS_KEY", &sk);
    if (rc == AG_ENOTFOUND) {
        ag__objstore_set_error("bucket %s is on the S3 backend: set the secrets "
                               "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (`aigate secret put`, "
                               "the environment or .dev.vars)",
                               bucket ? bucket : "");
        rc = AG_OBJ_ES3_CONFIG;
    }
    if (rc == 0) {
        ag_objstore_s3_options_t s3 = {
            .endpoint = where ? where->endpoint : NULL,
            .region = where ? where->region : NULL,
            .path_style = where ? where->path_style : true,
            .access_key = ak,
            .secret_key = sk,
        };
        ag_objstore_options_t o = {.backend = AG_OBJ_BACKEND_S3, .s3 = &s3};
        rc = ag_objstore_open_bucket_opts(data_dir, bucket, create, &o, out);
    }
    ag_secrets_value_free(ak);
    ag_secrets_value_free(sk);
    return rc;
}
