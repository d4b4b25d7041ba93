/* SPDX-License-Identifier: MIT
 *
 * objstore_info.c: the release of objects and their metadata, shared by the
 * object-store front end and its back ends (they call down to it, never up).
 */
#include "util/platform.h"

#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "store/objstore.h"

void ag_obj_info_free(ag_obj_info_t *info)
{
    if (info == NULL)
        return;
    free(info->key);
    free(info->custom);
    json_decref(info->_json);
    memset(info, 0, sizeof(*info));
}

void ag_obj_free(ag_obj_t *obj)
{
    if (obj == NULL)
        return;
    ag_obj_info_free(&obj->info);
    free(obj->data);
    obj->data = NULL;
    obj->len = 0;
}

void ag_obj_list_result_free(ag_obj_list_result_t *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < r->count; i++)
        ag_obj_info_free(&r->objects[i]);
    free(r->objects);
    for (size_t i = 0; i < r->nprefixes; i++)
        free(r->prefixes[i]);
    free(r->prefixes);
    free(r->cursor);
    memset(r, 0, sizeof(*r));
}
