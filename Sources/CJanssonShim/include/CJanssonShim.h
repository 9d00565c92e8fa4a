// Wrappers for jansson's function-like macros and inline functions, which Swift cannot call directly.
#ifndef CJANSSON_SHIM_H
#define CJANSSON_SHIM_H
#include <jansson.h>

json_type cjansson_typeof(const json_t *json);
void cjansson_decref(json_t *json);
json_t *cjansson_incref(json_t *json);
/// Parses a whole buffer: any JSON value, duplicate object keys rejected.
json_t *cjansson_loadb(const char *buffer, size_t length, json_error_t *error);
/// Serialises compactly, keeping key order; the caller frees the result with free().
char *cjansson_dumps(const json_t *json);

#endif
