// Element-wise reduction kernels. Plain loops over typed pointers, written so the
// compiler vectorizes them (-O3); 16-bit floats are widened to fp32 for each operation
// and rounded once. Integer sum and prod wrap modulo 2^bits (no undefined behaviour).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace pcomm::collectives {

// dst[i] = a[i] op b[i] for n elements. dst may alias a or b. kAvg reduces as kSum (the
// division happens once, in divide()).
void reduce(DType dtype, ReduceOp op, void* dst, const void* a, const void* b, size_t n);

// dst[i] /= divisor (floats: true division; integers: truncation toward zero).
void divide(DType dtype, void* dst, size_t n, uint64_t divisor);

// 16-bit float conversions shared with quantization.
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);
float bf16_to_float(uint16_t h);
uint16_t float_to_bf16(float f);

}  // namespace pcomm::collectives
