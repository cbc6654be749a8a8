/* safetensors reader (mmap, validated, zero-copy views) and atomic writer.
 *
 * The format: 8 bytes little-endian header length L, L bytes of a JSON
 * object (tensor name -> {dtype, shape, data_offsets}, plus an optional
 * "__metadata__" string map), then the data section the offsets point into.
 * The JSON goes through libjansson; everything the JSON says is checked
 * against the file before a single view is handed out, because checkpoints
 * come from anywhere and the views are raw pointers into the mapping. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* ---- dtypes ------------------------------------------------------------- */

static const struct {
  const char *name;
  size_t size;
} st_dtypes[FP8GEMM_ST_DTYPE_COUNT] = {
    [FP8GEMM_ST_BOOL] = {"BOOL", 1},         [FP8GEMM_ST_U8] = {"U8", 1},
    [FP8GEMM_ST_I8] = {"I8", 1},             [FP8GEMM_ST_F8_E5M2] = {"F8_E5M2", 1},
    [FP8GEMM_ST_F8_E4M3] = {"F8_E4M3", 1},   [FP8GEMM_ST_F8_E8M0] = {"F8_E8M0", 1},
    [FP8GEMM_ST_I16] = {"I16", 2},           [FP8GEMM_ST_U16] = {"U16", 2},
    [FP8GEMM_ST_F16] = {"F16", 2},           [FP8GEMM_ST_BF16] = {"BF16", 2},
    [FP8GEMM_ST_I32] = {"I32", 4},           [FP8GEMM_ST_U32] = {"U32", 4},
    [FP8GEMM_ST_F32] = {"F32", 4},           [FP8GEMM_ST_I64] = {"I64", 8},
    [FP8GEMM_ST_U64] = {"U64", 8},           [FP8GEMM_ST_F64] = {"F64", 8},
};

static int st_dtype_is_known(fp8gemm_st_dtype dtype) {
  return (unsigned)dtype < FP8GEMM_ST_DTYPE_COUNT;
}

const char *fp8gemm_st_dtype_name(fp8gemm_st_dtype dtype) {
  return st_dtype_is_known(dtype) ? st_dtypes[dtype].name : NULL;
}

size_t fp8gemm_st_dtype_size(fp8gemm_st_dtype dtype) {
  return st_dtype_is_known(dtype) ? st_dtypes[dtype].size : 0;
}

/* Sub-byte dtypes of newer safetensors versions: named in the error so a
 * user knows the file is fine but not supported here. */
static int st_dtype_is_sub_byte(const char *name) {
  return !strcmp(name, "F4") || !strcmp(name, "F6_E2M3") || !strcmp(name, "F6_E3M2");
}

fp8gemm_status fp8gemm_st_dtype_from_name(const char *name, fp8gemm_st_dtype *dtype) {
  FP8GEMM_CHECK_NOT_NULL(name);
  FP8GEMM_CHECK_NOT_NULL(dtype);
  for (int i = 0; i < FP8GEMM_ST_DTYPE_COUNT; i++) {
    if (!strcmp(name, st_dtypes[i].name)) {
      *dtype = (fp8gemm_st_dtype)i;
      return FP8GEMM_OK;
    }
  }
  if (st_dtype_is_sub_byte(name))
    return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                             "safetensors dtype '%s' (sub-byte) is not supported", name);
  return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "unknown safetensors dtype '%s'",
                           name);
}

/* Element count and byte size of a shape, refusing overflow. */
static int shape_bytes(size_t rank, const size_t *shape, size_t element_size, size_t *elements,
                       size_t *bytes) {
  size_t count = 1;
  for (size_t i = 0; i < rank; i++)
    if (__builtin_mul_overflow(count, shape[i], &count)) return 0;
  size_t total;
  if (__builtin_mul_overflow(count, element_size, &total)) return 0;
  *elements = count;
  *bytes = total;
  return 1;
}

/* ---- reader --------------------------------------------------------------- */

typedef struct st_tensor {
  const char *name; /* owned by the header's JSON tree */
  fp8gemm_st_dtype dtype;
  size_t rank;
  size_t shape_index; /* into the file's shape pool */
  size_t elements;
  size_t begin, end; /* within the data section */
} st_tensor;

typedef struct name_index {
  const char *name;
  size_t index; /* into tensors */
} name_index;

struct fp8gemm_safetensors {
  char *origin; /* path, or "<memory>", for messages */
  void *mapping;
  size_t mapping_size;
  const uint8_t *data; /* the data section */
  size_t data_size;
  json_t *header;
  st_tensor *tensors; /* file order */
  size_t count;
  name_index *by_name; /* sorted by name */
  size_t *shapes;  /* pool of all shapes */
  json_t *metadata; /* borrowed from header, or NULL */
  const char **meta_keys;
  size_t meta_count;
};

/* A non-negative JSON integer. */
static int json_to_size(const json_t *value, size_t *out) {
  if (!json_is_integer(value)) return 0;
  json_int_t v = json_integer_value(value);
  if (v < 0) return 0;
  *out = (size_t)v;
  return 1;
}

static fp8gemm_status parse_metadata(fp8gemm_safetensors *file, json_t *metadata) {
  if (!json_is_object(metadata))
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: '__metadata__' is not an object of strings", file->origin);
  size_t count = json_object_size(metadata);
  file->meta_keys = calloc(count ? count : 1, sizeof *file->meta_keys);
  if (!file->meta_keys)
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "%s: no memory for metadata",
                             file->origin);
  const char *key;
  json_t *value;
  json_object_foreach(metadata, key, value) {
    if (!json_is_string(value))
      return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                               "%s: '__metadata__': value of key '%s' is not a string",
                               file->origin, key);
    file->meta_keys[file->meta_count++] = key;
  }
  file->metadata = metadata;
  return FP8GEMM_OK;
}

static fp8gemm_status parse_tensor(fp8gemm_safetensors *file, const char *name, json_t *entry,
                                   st_tensor *tensor, size_t *shape_used, size_t *shape_cap) {
  const char *origin = file->origin;
  if (!json_is_object(entry))
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "%s: tensor '%s': entry is not an object",
                             origin, name);
  const char *field;
  json_t *value;
  json_object_foreach(entry, field, value) {
    if (strcmp(field, "dtype") && strcmp(field, "shape") && strcmp(field, "data_offsets"))
      return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                               "%s: tensor '%s': unknown field '%s' (expected dtype, shape, "
                               "data_offsets)",
                               origin, name, field);
  }

  json_t *dtype = json_object_get(entry, "dtype");
  if (!dtype)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "%s: tensor '%s': field 'dtype' is missing",
                             origin, name);
  if (!json_is_string(dtype))
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'dtype' is not a string", origin, name);
  const char *dtype_name = json_string_value(dtype);
  if (fp8gemm_st_dtype_from_name(dtype_name, &tensor->dtype) != FP8GEMM_OK)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'dtype': %s dtype '%.64s'", origin, name,
                             st_dtype_is_sub_byte(dtype_name) ? "unsupported sub-byte" : "unknown",
                             dtype_name);

  json_t *shape = json_object_get(entry, "shape");
  if (!shape)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "%s: tensor '%s': field 'shape' is missing",
                             origin, name);
  if (!json_is_array(shape))
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'shape' is not an array", origin, name);
  size_t rank = json_array_size(shape);
  if (rank > FP8GEMM_ST_MAX_RANK)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'shape' has rank %zu, above %d", origin,
                             name, rank, FP8GEMM_ST_MAX_RANK);
  if (!file->shapes || *shape_used + rank > *shape_cap) { /* never NULL: views point into it */
    size_t cap = (*shape_cap ? *shape_cap * 2 : 64) + rank;
    size_t *grown = realloc(file->shapes, cap * sizeof *grown);
    if (!grown)
      return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "%s: no memory for shapes", origin);
    file->shapes = grown;
    *shape_cap = cap;
  }
  tensor->rank = rank;
  tensor->shape_index = *shape_used;
  size_t *dims = file->shapes + *shape_used;
  for (size_t i = 0; i < rank; i++) {
    if (!json_to_size(json_array_get(shape, i), &dims[i]))
      return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                               "%s: tensor '%s': field 'shape': entry %zu is not a "
                               "non-negative integer",
                               origin, name, i);
  }
  *shape_used += rank;

  json_t *offsets = json_object_get(entry, "data_offsets");
  if (!offsets)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'data_offsets' is missing", origin, name);
  if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
      !json_to_size(json_array_get(offsets, 0), &tensor->begin) ||
      !json_to_size(json_array_get(offsets, 1), &tensor->end))
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'data_offsets' is not [begin, end] of "
                             "non-negative integers",
                             origin, name);
  if (tensor->begin > tensor->end)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'data_offsets': begin %zu > end %zu", origin,
                             name, tensor->begin, tensor->end);
  if (tensor->end > file->data_size)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'data_offsets': end %zu is past the data "
                             "section (%zu bytes)",
                             origin, name, tensor->end, file->data_size);

  size_t bytes;
  if (!shape_bytes(rank, dims, st_dtypes[tensor->dtype].size, &tensor->elements, &bytes))
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'shape': size overflows", origin, name);
  if (bytes != tensor->end - tensor->begin)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': field 'data_offsets' spans %zu bytes but shape x "
                             "%s size is %zu bytes",
                             origin, name, tensor->end - tensor->begin,
                             st_dtypes[tensor->dtype].name, bytes);
  tensor->name = name;
  return FP8GEMM_OK;
}

static int compare_by_offset(const void *a, const void *b) {
  const st_tensor *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

static int compare_by_name(const void *a, const void *b) {
  return strcmp(((const name_index *)a)->name, ((const name_index *)b)->name);
}

/* The spans must tile the data section: sorted by offset, each tensor
 * starts where the previous one ended and the last ends at the end. */
static fp8gemm_status check_spans(const fp8gemm_safetensors *file) {
  size_t expected = 0;
  for (size_t i = 0; i < file->count; i++) {
    const st_tensor *t = &file->tensors[i];
    if (t->begin < expected)
      return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                               "%s: tensor '%s': field 'data_offsets' [%zu, %zu] overlaps "
                               "tensor '%s' (which ends at %zu)",
                               file->origin, t->name, t->begin, t->end,
                               file->tensors[i - 1].name, expected);
    if (t->begin > expected)
      return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                               "%s: tensor '%s': field 'data_offsets' begins at %zu, leaving "
                               "a hole after offset %zu",
                               file->origin, t->name, t->begin, expected);
    expected = t->end;
  }
  if (expected != file->data_size)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: %zu bytes of the data section after offset %zu belong to no "
                             "tensor",
                             file->origin, file->data_size - expected, expected);
  return FP8GEMM_OK;
}

static fp8gemm_status parse_file(fp8gemm_safetensors *file, const uint8_t *bytes, size_t size) {
  const char *origin = file->origin;
  if (size < 8)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: %zu bytes, shorter than the 8-byte header length", origin,
                             size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | bytes[i];
  if (header_len > FP8GEMM_ST_MAX_HEADER_BYTES)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: header length %llu exceeds the limit of %u bytes", origin,
                             (unsigned long long)header_len, FP8GEMM_ST_MAX_HEADER_BYTES);
  if (header_len > size - 8)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: header length %llu exceeds the file (%zu bytes after the "
                             "length)",
                             origin, (unsigned long long)header_len, size - 8);
  const char *header = (const char *)bytes + 8;
  /* The format's own rule: the header starts with '{' (no leading
   * whitespace a polyglot file could hide something in). */
  if (header_len == 0 || header[0] != '{')
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "%s: header does not start with '{'", origin);
  file->data = bytes + 8 + header_len;
  file->data_size = size - 8 - (size_t)header_len;

  json_error_t error;
  file->header = json_loadb(header, (size_t)header_len, JSON_REJECT_DUPLICATES, &error);
  if (!file->header)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: header is not valid JSON: %s (line %d, column %d)", origin,
                             error.text, error.line, error.column);
  /* An object for sure: it starts with '{' and jansson takes one value. */

  size_t entries = json_object_size(file->header);
  file->tensors = calloc(entries ? entries : 1, sizeof *file->tensors);
  if (!file->tensors)
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "%s: no memory for %zu tensors",
                             origin, entries);
  size_t shape_used = 0, shape_cap = 0;
  const char *name;
  json_t *entry;
  json_object_foreach(file->header, name, entry) {
    if (!strcmp(name, "__metadata__")) {
      FP8GEMM_RETURN_IF_ERROR(parse_metadata(file, entry));
      continue;
    }
    FP8GEMM_RETURN_IF_ERROR(
        parse_tensor(file, name, entry, &file->tensors[file->count], &shape_used, &shape_cap));
    file->count++;
  }

  qsort(file->tensors, file->count, sizeof *file->tensors, compare_by_offset);
  FP8GEMM_RETURN_IF_ERROR(check_spans(file));

  file->by_name = malloc((file->count ? file->count : 1) * sizeof *file->by_name);
  if (!file->by_name)
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "%s: no memory for the name index",
                             origin);
  for (size_t i = 0; i < file->count; i++)
    file->by_name[i] = (name_index){file->tensors[i].name, i};
  qsort(file->by_name, file->count, sizeof *file->by_name, compare_by_name);
  return FP8GEMM_OK;
}

static fp8gemm_status file_new(const char *origin, fp8gemm_safetensors **file) {
  fp8gemm_safetensors *f = calloc(1, sizeof *f);
  if (f) f->origin = strdup(origin);
  if (!f || !f->origin) {
    free(f);
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "%s: no memory for the file handle",
                             origin);
  }
  *file = f;
  return FP8GEMM_OK;
}

void fp8gemm_safetensors_close(fp8gemm_safetensors *file) {
  if (!file) return;
  if (file->header) json_decref(file->header);
  if (file->mapping) munmap(file->mapping, file->mapping_size);
  free(file->tensors);
  free(file->by_name);
  free(file->shapes);
  free(file->meta_keys);
  free(file->origin);
  free(file);
}

fp8gemm_status fp8gemm_safetensors_open_memory(const void *bytes, size_t size,
                                               fp8gemm_safetensors **file) {
  FP8GEMM_CHECK_NOT_NULL(file);
  *file = NULL;
  if (!bytes && size)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: argument 'bytes' is NULL with size %zu", __func__, size);
  fp8gemm_safetensors *f = NULL;
  FP8GEMM_RETURN_IF_ERROR(file_new("<memory>", &f));
  fp8gemm_status status = parse_file(f, bytes, size);
  if (status != FP8GEMM_OK) {
    fp8gemm_safetensors_close(f);
    return status;
  }
  *file = f;
  return FP8GEMM_OK;
}

fp8gemm_status fp8gemm_safetensors_open(const char *path, fp8gemm_safetensors **file) {
  FP8GEMM_CHECK_NOT_NULL(path);
  FP8GEMM_CHECK_NOT_NULL(file);
  *file = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    return fp8gemm_set_error(FP8GEMM_ERROR_IO, "%s: cannot stat: %s", path, strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return fp8gemm_set_error(FP8GEMM_ERROR_IO, "%s: not a regular file", path);
  }
  size_t size = (size_t)st.st_size;
  if (size < 8) {
    close(fd);
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: %zu bytes, shorter than the 8-byte header length", path, size);
  }
  void *mapping = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int map_errno = errno;
  close(fd); /* the mapping keeps the file */
  if (mapping == MAP_FAILED)
    return fp8gemm_set_error(FP8GEMM_ERROR_IO, "%s: cannot map %zu bytes: %s", path, size,
                             strerror(map_errno));
  fp8gemm_safetensors *f = NULL;
  fp8gemm_status status = file_new(path, &f);
  if (status != FP8GEMM_OK) {
    munmap(mapping, size);
    return status;
  }
  f->mapping = mapping;
  f->mapping_size = size;
  status = parse_file(f, mapping, size);
  if (status != FP8GEMM_OK) {
    fp8gemm_safetensors_close(f);
    return status;
  }
  *file = f;
  return FP8GEMM_OK;
}

size_t fp8gemm_safetensors_count(const fp8gemm_safetensors *file) {
  return file ? file->count : 0;
}

static void fill_view(const fp8gemm_safetensors *file, const st_tensor *t,
                      fp8gemm_tensor_view *view) {
  view->name = t->name;
  view->dtype = t->dtype;
  view->rank = t->rank;
  view->shape = file->shapes + t->shape_index;
  view->elements = t->elements;
  view->data = file->data + t->begin;
  view->offset = t->begin;
  view->bytes = t->end - t->begin;
}

fp8gemm_status fp8gemm_safetensors_tensor(const fp8gemm_safetensors *file, size_t index,
                                          fp8gemm_tensor_view *view) {
  FP8GEMM_CHECK_NOT_NULL(file);
  FP8GEMM_CHECK_NOT_NULL(view);
  if (index >= file->count)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: tensor index %zu out of range (%zu tensors)", file->origin,
                             index, file->count);
  fill_view(file, &file->tensors[index], view);
  return FP8GEMM_OK;
}

static const st_tensor *lookup(const fp8gemm_safetensors *file, const char *name) {
  size_t lo = 0, hi = file->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(name, file->by_name[mid].name);
    if (c == 0) return &file->tensors[file->by_name[mid].index];
    if (c < 0)
      hi = mid;
    else
      lo = mid + 1;
  }
  return NULL;
}

int fp8gemm_safetensors_contains(const fp8gemm_safetensors *file, const char *name) {
  return file && name && lookup(file, name) != NULL;
}

fp8gemm_status fp8gemm_safetensors_find(const fp8gemm_safetensors *file, const char *name,
                                        fp8gemm_tensor_view *view) {
  FP8GEMM_CHECK_NOT_NULL(file);
  FP8GEMM_CHECK_NOT_NULL(name);
  FP8GEMM_CHECK_NOT_NULL(view);
  const st_tensor *t = lookup(file, name);
  if (!t)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: no tensor named '%s'",
                             file->origin, name);
  fill_view(file, t, view);
  return FP8GEMM_OK;
}

size_t fp8gemm_safetensors_metadata_count(const fp8gemm_safetensors *file) {
  return file ? file->meta_count : 0;
}

fp8gemm_status fp8gemm_safetensors_metadata_at(const fp8gemm_safetensors *file, size_t index,
                                               const char **key, const char **value) {
  FP8GEMM_CHECK_NOT_NULL(file);
  FP8GEMM_CHECK_NOT_NULL(key);
  FP8GEMM_CHECK_NOT_NULL(value);
  if (index >= file->meta_count)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: metadata index %zu out of range (%zu entries)", file->origin,
                             index, file->meta_count);
  *key = file->meta_keys[index];
  *value = json_string_value(json_object_get(file->metadata, *key));
  return FP8GEMM_OK;
}

const char *fp8gemm_safetensors_metadata(const fp8gemm_safetensors *file, const char *key) {
  if (!file || !key || !file->metadata) return NULL;
  return json_string_value(json_object_get(file->metadata, key));
}

fp8gemm_status fp8gemm_safetensors_tensor_layout(const fp8gemm_safetensors *file,
                                                 const char *name, fp8gemm_layout *layout) {
  FP8GEMM_CHECK_NOT_NULL(file);
  FP8GEMM_CHECK_NOT_NULL(name);
  FP8GEMM_CHECK_NOT_NULL(layout);
  size_t key_len = strlen(FP8GEMM_ST_META_LAYOUT_PREFIX) + strlen(name) + 1;
  char *key = malloc(key_len);
  if (!key) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "%s: no memory", __func__);
  snprintf(key, key_len, "%s%s", FP8GEMM_ST_META_LAYOUT_PREFIX, name);
  const char *value = fp8gemm_safetensors_metadata(file, key);
  free(key);
  if (!value) {
    *layout = FP8GEMM_LAYOUT_PLAIN;
    return FP8GEMM_OK;
  }
  if (fp8gemm_layout_from_name(value, layout) != FP8GEMM_OK)
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                             "%s: tensor '%s': metadata '%s%s' names unknown layout '%.64s'",
                             file->origin, name, FP8GEMM_ST_META_LAYOUT_PREFIX, name, value);
  return FP8GEMM_OK;
}

/* ---- writer ----------------------------------------------------------------- */

typedef struct writer_tensor {
  char *name;
  fp8gemm_st_dtype dtype;
  size_t rank;
  size_t shape[FP8GEMM_ST_MAX_RANK];
  size_t bytes;
  const void *data;           /* borrowed, or NULL for a deferred tensor */
  fp8gemm_tensor_fill_fn fill;
  void *user;
} writer_tensor;

struct fp8gemm_safetensors_writer {
  writer_tensor *tensors;
  size_t count, capacity;
  json_t *names;    /* set of names (name -> null) for duplicate checks */
  json_t *metadata; /* string -> string */
};

fp8gemm_status fp8gemm_safetensors_writer_create(fp8gemm_safetensors_writer **writer) {
  FP8GEMM_CHECK_NOT_NULL(writer);
  fp8gemm_safetensors_writer *w = calloc(1, sizeof *w);
  if (w) {
    w->names = json_object();
    w->metadata = json_object();
  }
  if (!w || !w->names || !w->metadata) {
    fp8gemm_safetensors_writer_destroy(w);
    *writer = NULL;
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "%s: no memory", __func__);
  }
  *writer = w;
  return FP8GEMM_OK;
}

void fp8gemm_safetensors_writer_destroy(fp8gemm_safetensors_writer *writer) {
  if (!writer) return;
  for (size_t i = 0; i < writer->count; i++) free(writer->tensors[i].name);
  free(writer->tensors);
  if (writer->names) json_decref(writer->names);
  if (writer->metadata) json_decref(writer->metadata);
  free(writer);
}

fp8gemm_status fp8gemm_safetensors_writer_set_metadata(fp8gemm_safetensors_writer *writer,
                                                       const char *key, const char *value) {
  FP8GEMM_CHECK_NOT_NULL(writer);
  FP8GEMM_CHECK_NOT_NULL(key);
  if (!value) {
    json_object_del(writer->metadata, key);
    return FP8GEMM_OK;
  }
  json_t *string = json_string(value);
  if (!string)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "metadata '%.64s': value is not valid UTF-8", key);
  if (json_object_set_new(writer->metadata, key, string) != 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "metadata key '%.64s' is not valid UTF-8", key);
  return FP8GEMM_OK;
}

static fp8gemm_status writer_add(fp8gemm_safetensors_writer *writer, const char *name,
                                 fp8gemm_st_dtype dtype, size_t rank, const size_t *shape,
                                 const void *data, fp8gemm_tensor_fill_fn fill, void *user) {
  if (!strcmp(name, "__metadata__"))
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "tensor name '__metadata__' is reserved by the format");
  if (!st_dtype_is_known(dtype))
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "tensor '%s': unknown dtype %d",
                             name, (int)dtype);
  if (rank > FP8GEMM_ST_MAX_RANK)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "tensor '%s': rank %zu above %d",
                             name, rank, FP8GEMM_ST_MAX_RANK);
  if (rank && !shape)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "tensor '%s': argument 'shape' is NULL with rank %zu", name, rank);
  size_t elements, bytes;
  if (!shape_bytes(rank, shape, st_dtypes[dtype].size, &elements, &bytes) ||
      bytes > (size_t)INT64_MAX)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "tensor '%s': size overflows",
                             name);
  if (!data && !fill && bytes)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "tensor '%s': argument 'data' is NULL for %zu bytes", name, bytes);
  if (json_object_get(writer->names, name))
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "tensor '%s' is added twice", name);
  if (writer->count == writer->capacity) {
    size_t cap = writer->capacity ? writer->capacity * 2 : 64;
    writer_tensor *grown = realloc(writer->tensors, cap * sizeof *grown);
    if (!grown)
      return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "tensor '%s': no memory", name);
    writer->tensors = grown;
    writer->capacity = cap;
  }
  writer_tensor *t = &writer->tensors[writer->count];
  memset(t, 0, sizeof *t);
  t->name = strdup(name);
  if (!t->name)
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "tensor '%s': no memory", name);
  /* Also proves the name is valid UTF-8, which JSON needs. */
  if (json_object_set_new(writer->names, name, json_null()) != 0) {
    free(t->name);
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "tensor name '%.64s' is not valid UTF-8", name);
  }
  t->dtype = dtype;
  t->rank = rank;
  for (size_t i = 0; i < rank; i++) t->shape[i] = shape[i];
  t->bytes = bytes;
  t->data = data;
  t->fill = fill;
  t->user = user;
  writer->count++;
  return FP8GEMM_OK;
}

fp8gemm_status fp8gemm_safetensors_writer_add(fp8gemm_safetensors_writer *writer,
                                              const char *name, fp8gemm_st_dtype dtype,
                                              size_t rank, const size_t *shape,
                                              const void *data) {
  FP8GEMM_CHECK_NOT_NULL(writer);
  FP8GEMM_CHECK_NOT_NULL(name);
  return writer_add(writer, name, dtype, rank, shape, data, NULL, NULL);
}

fp8gemm_status fp8gemm_safetensors_writer_add_deferred(fp8gemm_safetensors_writer *writer,
                                                       const char *name, fp8gemm_st_dtype dtype,
                                                       size_t rank, const size_t *shape,
                                                       fp8gemm_tensor_fill_fn fill, void *user) {
  FP8GEMM_CHECK_NOT_NULL(writer);
  FP8GEMM_CHECK_NOT_NULL(name);
  FP8GEMM_CHECK_NOT_NULL(fill);
  return writer_add(writer, name, dtype, rank, shape, NULL, fill, user);
}

/* Data section alignment: the first tensor starts on a 64-byte boundary of
 * the file (the format pads the header with spaces). */
#define WRITER_DATA_ALIGN 64

/* The header JSON (compact, __metadata__ first), padded with spaces. */
static fp8gemm_status build_header(const fp8gemm_safetensors_writer *writer, char **text,
                                   size_t *length) {
  json_t *root = json_object();
  if (!root) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "no memory for the header");
  int failed = 0;
  if (json_object_size(writer->metadata))
    failed |= json_object_set(root, "__metadata__", writer->metadata);
  size_t offset = 0;
  for (size_t i = 0; i < writer->count && !failed; i++) {
    const writer_tensor *t = &writer->tensors[i];
    json_t *shape = json_array();
    json_t *entry = json_object();
    if (!shape || !entry) {
      json_decref(shape);
      json_decref(entry);
      failed = 1;
      break;
    }
    for (size_t d = 0; d < t->rank; d++)
      failed |= json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
    failed |= json_object_set_new(entry, "dtype", json_string(st_dtypes[t->dtype].name));
    failed |= json_object_set_new(entry, "shape", shape);
    failed |= json_object_set_new(
        entry, "data_offsets",
        json_pack("[II]", (json_int_t)offset, (json_int_t)(offset + t->bytes)));
    failed |= json_object_set_new(root, t->name, entry);
    offset += t->bytes;
  }
  char *json = failed ? NULL : json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!json) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "no memory for the header");
  size_t len = strlen(json);
  size_t padded = len + (WRITER_DATA_ALIGN - (8 + len) % WRITER_DATA_ALIGN) % WRITER_DATA_ALIGN;
  char *out = malloc(padded);
  if (!out) {
    free(json);
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "no memory for the header");
  }
  memcpy(out, json, len);
  memset(out + len, ' ', padded - len);
  free(json);
  *text = out;
  *length = padded;
  return FP8GEMM_OK;
}

/* write(2) until all is written; a short write continues, an error or a
 * write of 0 bytes is returned as errno (ENOSPC for 0). */
static int write_all(int fd, const void *buffer, size_t bytes) {
  const char *p = buffer;
  while (bytes) {
    size_t chunk = bytes < ((size_t)1 << 30) ? bytes : ((size_t)1 << 30);
    ssize_t n = write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return ENOSPC;
    p += n;
    bytes -= (size_t)n;
  }
  return 0;
}

/* Small tensors are gathered so that the file gets few, large writes. */
#define STAGING_BYTES ((size_t)4 << 20)

typedef struct output {
  int fd;
  const char *path;
  char *staging;
  size_t staged;
  size_t written;   /* bytes handed to the kernel so far */
  size_t writeback; /* bytes whose writeback has been started */
} output;

/* Starts the disk writeback of what was written so far, so that the disk
 * works while the next tensors are produced and the final fsync has little
 * left to do (it took as long as the whole copy otherwise). A hint only:
 * errors surface at fsync. */
#define WRITEBACK_CHUNK ((size_t)8 << 20)

static void output_start_writeback(output *out) {
#ifdef SYNC_FILE_RANGE_WRITE
  if (out->written - out->writeback < WRITEBACK_CHUNK) return;
  sync_file_range(out->fd, (off_t)out->writeback, (off_t)(out->written - out->writeback),
                  SYNC_FILE_RANGE_WRITE);
  out->writeback = out->written;
#else
  (void)out;
#endif
}

static int output_write(output *out, const void *bytes, size_t size) {
  int err = write_all(out->fd, bytes, size);
  if (!err) {
    out->written += size;
    output_start_writeback(out);
  }
  return err;
}

static int output_flush(output *out) {
  int err = output_write(out, out->staging, out->staged);
  out->staged = 0;
  return err;
}

static int output_put(output *out, const void *bytes, size_t size) {
  if (size <= STAGING_BYTES - out->staged) {
    memcpy(out->staging + out->staged, bytes, size);
    out->staged += size;
    return 0;
  }
  int err = output_flush(out);
  if (err) return err;
  if (size < STAGING_BYTES / 4) {
    memcpy(out->staging, bytes, size);
    out->staged = size;
    return 0;
  }
  return output_write(out, bytes, size);
}

/* Creates `<dir>/.<base>.tmp-<pid>-<nonce>` exclusively, mode 0666 & ~umask
 * (what a plain open would give the destination). Returns 0 or an errno. */
static int create_temp(const char *path, char **temp_path, int *fd_out) {
  const char *slash = strrchr(path, '/');
  size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
  const char *base = slash ? slash + 1 : path;
  size_t len = strlen(path) + 64;
  char *temp = malloc(len);
  if (!temp) return ENOMEM;
  for (int attempt = 0; attempt < 100; attempt++) {
    /* pid + clock: unique enough, and O_EXCL retries on a collision (no
     * global counter: the library keeps no global state). The base is cut
     * so that the name stays within NAME_MAX (255). */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    snprintf(temp, len, "%.*s.%.200s.tmp-%ld-%lx", (int)dir_len, path, base, (long)getpid(),
             (unsigned long)now.tv_nsec ^ ((unsigned long)attempt << 30));
    int fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      *temp_path = temp;
      *fd_out = fd;
      return 0;
    }
    if (errno != EEXIST) {
      int err = errno;
      free(temp);
      return err;
    }
  }
  free(temp);
  return EEXIST;
}

static fp8gemm_status sync_parent_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
  if (!dir) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "no memory");
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int err = fd < 0 ? errno : (fsync(fd) != 0 ? errno : 0);
  if (fd >= 0) close(fd);
  fp8gemm_status status = FP8GEMM_OK;
  /* EINVAL: the file system cannot sync folders; the rename stands. */
  if (err && err != EINVAL)
    status = fp8gemm_set_error(FP8GEMM_ERROR_IO,
                               "%s: written and renamed, but syncing folder '%s' failed: %s",
                               path, dir, strerror(err));
  free(dir);
  return status;
}

fp8gemm_status fp8gemm_safetensors_writer_write(fp8gemm_safetensors_writer *writer,
                                                const char *path) {
  FP8GEMM_CHECK_NOT_NULL(writer);
  FP8GEMM_CHECK_NOT_NULL(path);
  if (!*path) return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: empty path", __func__);

  char *header = NULL;
  size_t header_len = 0;
  FP8GEMM_RETURN_IF_ERROR(build_header(writer, &header, &header_len));

  size_t fill_capacity = 0;
  for (size_t i = 0; i < writer->count; i++)
    if (writer->tensors[i].fill && writer->tensors[i].bytes > fill_capacity)
      fill_capacity = writer->tensors[i].bytes;

  output out = {.fd = -1, .path = path, .staging = malloc(STAGING_BYTES)};
  void *fill_buffer = fill_capacity ? malloc(fill_capacity) : NULL;
  char *temp = NULL;
  fp8gemm_status status = FP8GEMM_OK;
  if (!out.staging || (fill_capacity && !fill_buffer)) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY,
                               "%s: no memory for write buffers (%zu bytes)", path,
                               STAGING_BYTES + fill_capacity);
    goto done;
  }
  int err = create_temp(path, &temp, &out.fd);
  if (err) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_IO,
                               "%s: cannot create a temporary file beside it: %s", path,
                               strerror(err));
    goto done;
  }

  uint8_t length_bytes[8];
  for (int i = 0; i < 8; i++) length_bytes[i] = (uint8_t)((uint64_t)header_len >> (8 * i));
  err = output_put(&out, length_bytes, 8);
  if (!err) err = output_put(&out, header, header_len);
  if (err) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_IO, "%s: writing the header failed: %s", path,
                               strerror(err));
    goto done;
  }
  size_t offset = 0;
  for (size_t i = 0; i < writer->count; i++) {
    const writer_tensor *t = &writer->tensors[i];
    const void *bytes = t->data;
    if (t->fill) {
      fp8gemm_status fill_status = t->fill(t->user, fill_buffer, t->bytes);
      if (fill_status != FP8GEMM_OK) {
        char cause[512];
        snprintf(cause, sizeof cause, "%s", fp8gemm_last_error());
        status = fp8gemm_set_error(fill_status, "%s: producing tensor '%s' failed: %s", path,
                                   t->name, cause);
        goto done;
      }
      bytes = fill_buffer;
    }
    err = t->bytes ? output_put(&out, bytes, t->bytes) : 0;
    if (err) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_IO,
                                 "%s: writing tensor '%s' (data bytes %zu..%zu) failed: %s",
                                 path, t->name, offset, offset + t->bytes, strerror(err));
      goto done;
    }
    offset += t->bytes;
  }
  err = output_flush(&out);
  if (err) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_IO, "%s: writing the final buffered bytes failed: %s",
                               path, strerror(err));
    goto done;
  }
  if (fsync(out.fd) != 0) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_IO, "%s: fsync of the temporary file failed: %s",
                               path, strerror(errno));
    goto done;
  }
  err = close(out.fd) != 0 ? errno : 0;
  out.fd = -1;
  if (err) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_IO, "%s: closing the temporary file failed: %s",
                               path, strerror(err));
    goto done;
  }
  if (rename(temp, path) != 0) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_IO, "%s: renaming the temporary file failed: %s",
                               path, strerror(errno));
    goto done;
  }
  free(temp);
  temp = NULL; /* renamed: nothing to remove */
  status = sync_parent_dir(path);

done:
  if (out.fd >= 0) close(out.fd);
  if (temp) {
    unlink(temp);
    free(temp);
  }
  free(fill_buffer);
  free(out.staging);
  free(header);
  return status;
}
