// minmax_u8 quantization kernels; see quantize.h.
#include "collectives/quantize.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "collectives/reduce_kernels.h"

namespace pcomm::collectives {

namespace {

// Converts an fp32 reconstruction to the element type (integers round to nearest and
// saturate, so a hostile min/max cannot cause an out-of-range conversion).
template <typename T>
T store(float v) {
  if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(v);
  } else {
    if (std::isnan(v)) return 0;
    float r = std::nearbyint(v);
    if (r <= static_cast<float>(std::numeric_limits<T>::min())) return std::numeric_limits<T>::min();
    if (r >= static_cast<float>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(r);
  }
}

struct Range {
  float lo, hi;
};

template <typename F>
Range range_of(size_t n, F at) {
  float lo = std::numeric_limits<float>::infinity();
  float hi = -std::numeric_limits<float>::infinity();
  bool finite = true;
  for (size_t i = 0; i < n; ++i) {
    float v = at(i);
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    finite = finite && std::isfinite(v);
  }
  if (n == 0) return {0.0f, 0.0f};
  if (!finite) return {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::quiet_NaN()};
  return {lo, hi};
}

template <typename F>
void encode(size_t n, F at, uint8_t* out) {
  Range r = range_of(n, at);
  std::memcpy(out, &r.lo, 4);
  std::memcpy(out + 4, &r.hi, 4);
  const float scale = (r.hi - r.lo) / 255.0f;
  const float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
  uint8_t* codes = out + kQuantHeader;
  for (size_t i = 0; i < n; ++i) {
    float q = (at(i) - r.lo) * inv;
    q = q < 0.0f ? 0.0f : (q > 255.0f ? 255.0f : q);
    codes[i] = static_cast<uint8_t>(q + 0.5f);  // q is non-negative: +0.5 and truncate rounds
  }
}

template <typename S>
void decode(const uint8_t* in, size_t n, S put) {
  float lo, hi;
  std::memcpy(&lo, in, 4);
  std::memcpy(&hi, in + 4, 4);
  const float scale = (hi - lo) / 255.0f;
  const uint8_t* codes = in + kQuantHeader;
  for (size_t i = 0; i < n; ++i) put(i, lo + static_cast<float>(codes[i]) * scale);
}

template <typename T>
void quantize_typed(const void* src, size_t n, uint8_t* out) {
  auto* p = static_cast<const T*>(src);
  encode(n, [p](size_t i) { return static_cast<float>(p[i]); }, out);
}

template <typename T>
void dequantize_typed(const uint8_t* in, size_t n, void* dst) {
  auto* d = static_cast<T*>(dst);
  decode(in, n, [d](size_t i, float v) { d[i] = store<T>(v); });
}

}  // namespace

void quantize_minmax_u8(DType dtype, const void* src, size_t n, uint8_t* out) {
  auto* h = static_cast<const uint16_t*>(src);
  switch (dtype) {
    case DType::kFloat16: return encode(n, [h](size_t i) { return half_to_float(h[i]); }, out);
    case DType::kBFloat16: return encode(n, [h](size_t i) { return bf16_to_float(h[i]); }, out);
    case DType::kFloat32: return quantize_typed<float>(src, n, out);
    case DType::kFloat64: return quantize_typed<double>(src, n, out);
    case DType::kInt8: return quantize_typed<int8_t>(src, n, out);
    case DType::kUInt8: return quantize_typed<uint8_t>(src, n, out);
    case DType::kInt16: return quantize_typed<int16_t>(src, n, out);
    case DType::kInt32: return quantize_typed<int32_t>(src, n, out);
    case DType::kInt64: return quantize_typed<int64_t>(src, n, out);
  }
}

void dequantize_minmax_u8(DType dtype, const uint8_t* in, size_t n, void* dst) {
  auto* h = static_cast<uint16_t*>(dst);
  switch (dtype) {
    case DType::kFloat16: return decode(in, n, [h](size_t i, float v) { h[i] = float_to_half(v); });
    case DType::kBFloat16: return decode(in, n, [h](size_t i, float v) { h[i] = float_to_bf16(v); });
    case DType::kFloat32: return dequantize_typed<float>(in, n, dst);
    case DType::kFloat64: return dequantize_typed<double>(in, n, dst);
    case DType::kInt8: return dequantize_typed<int8_t>(in, n, dst);
    case DType::kUInt8: return dequantize_typed<uint8_t>(in, n, dst);
    case DType::kInt16: return dequantize_typed<int16_t>(in, n, dst);
    case DType::kInt32: return dequantize_typed<int32_t>(in, n, dst);
    case DType::kInt64: return dequantize_typed<int64_t>(in, n, dst);
  }
}

}  // namespace pcomm::collectives
