/* The tuned table: which layout (plain or preshuffled) each weight shape
 * gets on a backend, with the measurements that led to the choice. It is
 * data, read at context creation; see README "Tuned table" for the format.
 *
 *   backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,preshuffled_us
 *   cpu,avx2,7168,2048,preshuffled,f8f32_gemm_6x16__avx2,4,1 16 128,210 3100 9000,190 2950 8800
 *
 * crossover_m: the small-M kernel serves M <= crossover_m (0: never);
 * empty or "default" leaves the choice to the backend.
 * m_values, plain_us and preshuffled_us are space-separated lists of the
 * same length (the times per M); they may be empty. Lines starting with '#'
 * and blank lines are skipped. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const table_columns[] = {"backend", "device",      "N",        "K",
                                            "layout",  "kernel",      "crossover_m", "m_values",
                                            "plain_us", "preshuffled_us"};
enum { TABLE_COLUMN_COUNT = sizeof table_columns / sizeof table_columns[0] };

void fp8gemm_tuned_table_free(fp8gemm_tuned_table *table) {
  if (!table) return;
  free(table->entries);
  table->entries = NULL;
  table->count = 0;
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s)) s++;
  char *end = s + strlen(s);
  while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
  return s;
}

/* Splits a line on commas in place; returns the number of fields. */
static size_t split_fields(char *line, char **fields, size_t max_fields) {
  size_t count = 0;
  char *cursor = line;
  for (;;) {
    char *comma = strchr(cursor, ',');
    if (count < max_fields) fields[count] = trim(cursor);
    count++;
    if (!comma) break;
    *comma = '\0';
    cursor = comma + 1;
  }
  return count;
}

static bool parse_size(const char *text, size_t *value) {
  if (!*text || !isdigit((unsigned char)*text)) return false;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || *end) return false;
  *value = (size_t)v;
  return true;
}

/* Counts the items of a space-separated list of numbers; false on a bad one. */
static bool count_numbers(const char *text, bool integers, size_t *count) {
  *count = 0;
  const char *p = text;
  while (*p) {
    while (*p == ' ') p++;
    if (!*p) break;
    char *end;
    errno = 0;
    if (integers) {
      if (!isdigit((unsigned char)*p)) return false;
      (void)strtoull(p, &end, 10);
    } else {
      double v = strtod(p, &end);
      if (end == p || !isfinite(v) || v < 0) return false;
    }
    if (errno || end == p || (*end && *end != ' ')) return false;
    (*count)++;
    p = end;
  }
  return true;
}

static fp8gemm_layout preshuffled_layout_of(const char *backend) {
  return !strcmp(backend, "cuda") ? FP8GEMM_LAYOUT_PRESHUFFLED_SM90 : FP8GEMM_LAYOUT_PRESHUFFLED_CPU;
}

fp8gemm_status fp8gemm_tuned_table_parse(const char *text, const char *origin,
                                         fp8gemm_tuned_table *table) {
  FP8GEMM_CHECK_NOT_NULL(text);
  FP8GEMM_CHECK_NOT_NULL(origin);
  FP8GEMM_CHECK_NOT_NULL(table);
  memset(table, 0, sizeof *table);
  snprintf(table->source, sizeof table->source, "%s", origin);

  char *copy = strdup(text);
  if (!copy) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "tuned table copy");
  fp8gemm_status status = FP8GEMM_OK;
  size_t capacity = 0, line_number = 0;
  bool header_seen = false;
  for (char *line = copy, *next; line; line = next) {
    char *newline = strchr(line, '\n');
    next = newline ? newline + 1 : NULL;
    if (newline) *newline = '\0';
    line_number++;
    char *content = trim(line);
    if (!*content || *content == '#') continue;
    char *fields[TABLE_COLUMN_COUNT];
    const size_t field_count = split_fields(content, fields, TABLE_COLUMN_COUNT);
    if (!header_seen) {
      bool ok = field_count == TABLE_COLUMN_COUNT;
      for (size_t i = 0; ok && i < TABLE_COLUMN_COUNT; i++) ok = !strcmp(fields[i], table_columns[i]);
      if (!ok) {
        status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                                   "%s:%zu: bad header: expected "
                                   "'backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,"
                                   "preshuffled_us'",
                                   origin, line_number);
        break;
      }
      header_seen = true;
      continue;
    }
    if (field_count != TABLE_COLUMN_COUNT) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "%s:%zu: %zu fields, expected %d", origin,
                                 line_number, field_count, (int)TABLE_COLUMN_COUNT);
      break;
    }
    fp8gemm_tuned_entry entry;
    memset(&entry, 0, sizeof entry);
    if (strcmp(fields[0], "cpu") && strcmp(fields[0], "cuda")) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "%s:%zu: backend '%s' is not cpu or cuda",
                                 origin, line_number, fields[0]);
      break;
    }
    snprintf(entry.backend, sizeof entry.backend, "%s", fields[0]);
    if (!*fields[1] || strlen(fields[1]) >= sizeof entry.device) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                                 "%s:%zu: device must be a name of 1..%zu characters or '*'",
                                 origin, line_number, sizeof entry.device - 1);
      break;
    }
    snprintf(entry.device, sizeof entry.device, "%s", fields[1]);
    if (!parse_size(fields[2], &entry.N) || entry.N == 0 || entry.N > FP8GEMM_MAX_DIM) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "%s:%zu: N '%s' is not a positive integer",
                                 origin, line_number, fields[2]);
      break;
    }
    if (!parse_size(fields[3], &entry.K) || entry.K == 0 || entry.K > FP8GEMM_MAX_DIM) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "%s:%zu: K '%s' is not a positive integer",
                                 origin, line_number, fields[3]);
      break;
    }
    if (!strcmp(fields[4], "preshuffled")) {
      entry.layout = preshuffled_layout_of(entry.backend);
    } else if (!strcmp(fields[4], "plain")) {
      entry.layout = FP8GEMM_LAYOUT_PLAIN;
    } else if (fp8gemm_layout_from_name(fields[4], &entry.layout) != FP8GEMM_OK ||
               (entry.layout != preshuffled_layout_of(entry.backend))) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                                 "%s:%zu: layout '%s' is not plain or preshuffled for backend %s",
                                 origin, line_number, fields[4], entry.backend);
      break;
    }
    snprintf(entry.kernel, sizeof entry.kernel, "%s", fields[5]);
    if (!*fields[6] || !strcmp(fields[6], "default")) {
      entry.crossover_m = FP8GEMM_CROSSOVER_DEFAULT;
    } else if (!parse_size(fields[6], &entry.crossover_m) || entry.crossover_m > FP8GEMM_MAX_DIM) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                                 "%s:%zu: crossover_m '%s' is not 'default' or a non-negative "
                                 "integer",
                                 origin, line_number, fields[6]);
      break;
    }
    size_t m_count, plain_count, preshuffled_count;
    if (!count_numbers(fields[7], true, &m_count)) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                                 "%s:%zu: m_values '%s' is not a space-separated list of integers",
                                 origin, line_number, fields[7]);
      break;
    }
    if (!count_numbers(fields[8], false, &plain_count) ||
        !count_numbers(fields[9], false, &preshuffled_count)) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                                 "%s:%zu: plain_us/preshuffled_us must be space-separated "
                                 "non-negative numbers",
                                 origin, line_number);
      break;
    }
    if (plain_count != m_count || preshuffled_count != m_count) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                                 "%s:%zu: %zu m_values but %zu plain_us and %zu preshuffled_us",
                                 origin, line_number, m_count, plain_count, preshuffled_count);
      break;
    }
    for (size_t i = 0; i < table->count; i++) {
      const fp8gemm_tuned_entry *other = &table->entries[i];
      if (!strcmp(other->backend, entry.backend) && !strcmp(other->device, entry.device) &&
          other->N == entry.N && other->K == entry.K) {
        status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE,
                                   "%s:%zu: duplicate row for backend %s device %s N=%zu K=%zu",
                                   origin, line_number, entry.backend, entry.device, entry.N,
                                   entry.K);
        break;
      }
    }
    if (status != FP8GEMM_OK) break;
    if (table->count == capacity) {
      capacity = capacity ? 2 * capacity : 32;
      fp8gemm_tuned_entry *grown = realloc(table->entries, capacity * sizeof *grown);
      if (!grown) {
        status = fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "tuned table: %zu entries", capacity);
        break;
      }
      table->entries = grown;
    }
    table->entries[table->count++] = entry;
  }
  if (status == FP8GEMM_OK && !header_seen)
    status = fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "%s: no header line", origin);
  free(copy);
  if (status != FP8GEMM_OK) fp8gemm_tuned_table_free(table);
  return status;
}

fp8gemm_status fp8gemm_tuned_table_load(const char *path, fp8gemm_tuned_table *table) {
  FP8GEMM_CHECK_NOT_NULL(path);
  FP8GEMM_CHECK_NOT_NULL(table);
  FILE *file = fopen(path, "rb");
  if (!file)
    return fp8gemm_set_error(FP8GEMM_ERROR_IO, "tuned table '%s': %s", path, strerror(errno));
  char *text = NULL;
  size_t length = 0, capacity = 0;
  for (;;) {
    if (capacity - length < 4096) {
      capacity = capacity ? capacity * 2 : 65536;
      if (capacity > ((size_t)64 << 20)) {
        free(text);
        fclose(file);
        return fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "tuned table '%s' is larger than 64 MiB", path);
      }
      char *grown = realloc(text, capacity);
      if (!grown) {
        free(text);
        fclose(file);
        return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "tuned table '%s'", path);
      }
      text = grown;
    }
    size_t got = fread(text + length, 1, capacity - length - 1, file);
    length += got;
    if (got == 0) break;
  }
  const bool read_error = ferror(file);
  fclose(file);
  if (read_error) {
    free(text);
    return fp8gemm_set_error(FP8GEMM_ERROR_IO, "tuned table '%s': read error", path);
  }
  text[length] = '\0';
  if (memchr(text, '\0', length)) {
    free(text);
    return fp8gemm_set_error(FP8GEMM_ERROR_PARSE, "tuned table '%s' holds a NUL byte", path);
  }
  fp8gemm_status status = fp8gemm_tuned_table_parse(text, path, table);
  free(text);
  return status;
}

const fp8gemm_tuned_entry *fp8gemm_tuned_table_find(const fp8gemm_tuned_table *table,
                                                    const char *backend, const char *device,
                                                    size_t N, size_t K) {
  const fp8gemm_tuned_entry *wildcard = NULL;
  for (size_t i = 0; i < table->count; i++) {
    const fp8gemm_tuned_entry *e = &table->entries[i];
    if (e->N != N || e->K != K || strcmp(e->backend, backend)) continue;
    if (!strcmp(e->device, device)) return e;
    if (!strcmp(e->device, "*")) wildcard = e;
  }
  return wildcard;
}
