/* libFuzzer harness over the safetensors reader: any input either is
 * refused with an error, or yields views that all lie inside the input,
 * agree with each other (name lookup, sizes, tiling) and can be read. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fp8gemm.h"

#define REQUIRE(cond) \
  do {                \
    if (!(cond)) abort(); \
  } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fp8gemm_safetensors *file = NULL;
  fp8gemm_status status = fp8gemm_safetensors_open_memory(data, size, &file);
  if (status != FP8GEMM_OK) {
    REQUIRE(file == NULL);
    REQUIRE(fp8gemm_last_error()[0] != '\0');
    return 0;
  }
  const uint8_t *end = data + size;
  size_t count = fp8gemm_safetensors_count(file), covered = 0;
  volatile uint8_t sink = 0;
  for (size_t i = 0; i < count; i++) {
    fp8gemm_tensor_view v;
    REQUIRE(fp8gemm_safetensors_tensor(file, i, &v) == FP8GEMM_OK);
    const uint8_t *bytes = v.data;
    REQUIRE(bytes >= data && bytes <= end && v.bytes <= (size_t)(end - bytes));
    REQUIRE(v.elements * fp8gemm_st_dtype_size(v.dtype) == v.bytes);
    REQUIRE(v.offset == covered); /* tensors tile the data section in order */
    covered += v.bytes;
    if (v.bytes) sink ^= bytes[0] ^ bytes[v.bytes - 1];
    size_t elements = 1;
    for (size_t d = 0; d < v.rank; d++) elements *= v.shape[d];
    REQUIRE(elements == v.elements);
    fp8gemm_tensor_view w;
    REQUIRE(fp8gemm_safetensors_find(file, v.name, &w) == FP8GEMM_OK);
    REQUIRE(w.data == v.data && w.bytes == v.bytes);
    fp8gemm_layout layout;
    status = fp8gemm_safetensors_tensor_layout(file, v.name, &layout);
    REQUIRE(status == FP8GEMM_OK || status == FP8GEMM_ERROR_PARSE);
  }
  REQUIRE(covered <= size);
  for (size_t i = 0; i < fp8gemm_safetensors_metadata_count(file); i++) {
    const char *key, *value;
    REQUIRE(fp8gemm_safetensors_metadata_at(file, i, &key, &value) == FP8GEMM_OK);
    REQUIRE(value != NULL && fp8gemm_safetensors_metadata(file, key) == value);
  }
  (void)sink;
  fp8gemm_safetensors_close(file);
  return 0;
}
