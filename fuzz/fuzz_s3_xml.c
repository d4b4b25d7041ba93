/* SPDX-License-Identifier: MIT
 *
 * fuzz_s3_xml.c: the S3 answers we read (objstore_s3_xml.c) on arbitrary
 * bytes: a ListObjectsV2 page and an <Error> document. A page either parses
 * into entries whose keys are within bounds, or fails leaving nothing to free.
 */
#include "util/platform.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/objstore.h"
#include "util/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *xml = (const char *)data;
    ag_obj_list_result_t page;
    memset(&page, 0, sizeof(page));
    char *next = NULL;
    int rc = ag__objstore_s3_parse_list(xml, size, &page, &next);
    AG_ASSERT(rc == 0 || rc == AG_EPROTO || rc == -ENOMEM);
    if (rc != 0)
        AG_ASSERT(next == NULL);
    ag_obj_list_result_free(&page);
    free(next);

    char code[64], msg[256];
    ag__objstore_s3_parse_error(xml, size, code, sizeof(code), msg, sizeof(msg));
    AG_ASSERT(memchr(code, '\0', sizeof(code)) != NULL);
    AG_ASSERT(memchr(msg, '\0', sizeof(msg)) != NULL);
    return 0;
}
