// Wrappers for jansson's function-like macros and inline functions, which Swift cannot call directly.
#include "CJanssonShim.h"

json_type cjansson_typeof(const json_t *json) { return json_typeof(json); }

void cjansson_decref(json_t *json) { json_decref(json); }

json_t *cjansson_incref(json_t *json) { return json_incref(json); }

json_t *cjansson_loadb(const char *buffer, size_t length, json_error_t *error) {
    return json_loadb(buffer, length, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, error);
}

char *cjansson_dumps(const json_t *json) {
    return json_dumps(json, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
}
