// minmax_u8 wire quantization: a chunk of n elements travels as
//   f32 min, f32 max (little-endian), then n u8 codes,
// where code = round((v - min) / scale), scale = (max - min) / 255, and a receiver
// reconstructs v' = min + code * scale in fp32, then converts to the element type.
// Every peer computes v' with the same formula from the same bytes, so results stay
// bit-identical. The error per element is at most scale / 2 (plus fp32 rounding).
// Non-finite inputs make the whole chunk NaN.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace pcomm::collectives {

inline constexpr size_t kQuantHeader = 8;
inline size_t quantized_size(size_t n) { return kQuantHeader + n; }

void quantize_minmax_u8(DType dtype, const void* src, size_t n, uint8_t* out);
// dst = dequantized values (in dtype). `in` comes from the wire: any bytes are safe.
void dequantize_minmax_u8(DType dtype, const uint8_t* in, size_t n, void* dst);

}  // namespace pcomm::collectives
