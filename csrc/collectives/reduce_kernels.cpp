// Reduction kernels; see reduce_kernels.h.
#include "collectives/reduce_kernels.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "core/errors.h"

namespace pcomm::collectives {

float half_to_float(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, sizeof v);
  return static_cast<float>(v);
}

uint16_t float_to_half(float f) {
  auto v = static_cast<_Float16>(f);
  uint16_t h;
  std::memcpy(&h, &v, sizeof h);
  return h;
}

float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(bits >> 16);
}

namespace {

template <typename T>
struct Wide {  // unsigned type of the same width, for wrapping integer arithmetic
  using U = std::make_unsigned_t<T>;
};

template <typename T>
T combine(ReduceOp op, T a, T b) {
  if constexpr (std::is_floating_point_v<T>) {
    switch (op) {
      case ReduceOp::kMin: return a < b ? a : b;
      case ReduceOp::kMax: return a > b ? a : b;
      case ReduceOp::kProd: return a * b;
      default: return a + b;
    }
  } else {
    using U = typename Wide<T>::U;
    switch (op) {
      case ReduceOp::kMin: return a < b ? a : b;
      case ReduceOp::kMax: return a > b ? a : b;
      case ReduceOp::kProd:
        return static_cast<T>(static_cast<U>(static_cast<uint64_t>(static_cast<U>(a)) * static_cast<uint64_t>(static_cast<U>(b))));
      default: return static_cast<T>(static_cast<U>(static_cast<U>(a) + static_cast<U>(b)));
    }
  }
}

// One loop per (type, op) so each compiles to a tight, vectorizable body.
template <typename T, ReduceOp Op>
void reduce_loop(T* out, const T* a, const T* b, size_t n) {
  for (size_t i = 0; i < n; ++i) out[i] = combine<T>(Op, a[i], b[i]);
}

template <typename T>
void reduce_typed(ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  auto* d = static_cast<T*>(dst);
  auto* x = static_cast<const T*>(a);
  auto* y = static_cast<const T*>(b);
  // dst may alias a or b (no __restrict__): the compiler vectorizes with a runtime
  // overlap check, and exact aliasing (dst == a) takes the vector path.
  switch (op) {
    case ReduceOp::kMin: return reduce_loop<T, ReduceOp::kMin>(d, x, y, n);
    case ReduceOp::kMax: return reduce_loop<T, ReduceOp::kMax>(d, x, y, n);
    case ReduceOp::kProd: return reduce_loop<T, ReduceOp::kProd>(d, x, y, n);
    default: return reduce_loop<T, ReduceOp::kSum>(d, x, y, n);
  }
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
void reduce_16(ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  auto* d = static_cast<uint16_t*>(dst);
  auto* x = static_cast<const uint16_t*>(a);
  auto* y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) d[i] = FromF(combine<float>(op, ToF(x[i]), ToF(y[i])));
}

template <typename T>
void divide_typed(void* dst, size_t n, uint64_t divisor) {
  auto* d = static_cast<T*>(dst);
  if constexpr (std::is_floating_point_v<T>) {
    const T k = static_cast<T>(divisor);
    for (size_t i = 0; i < n; ++i) d[i] = d[i] / k;
  } else {
    const auto k = static_cast<int64_t>(divisor);
    for (size_t i = 0; i < n; ++i) d[i] = static_cast<T>(static_cast<int64_t>(d[i]) / k);
  }
}

template <float (*ToF)(uint16_t), uint16_t (*FromF)(float)>
void divide_16(void* dst, size_t n, uint64_t divisor) {
  auto* d = static_cast<uint16_t*>(dst);
  const float k = static_cast<float>(divisor);
  for (size_t i = 0; i < n; ++i) d[i] = FromF(ToF(d[i]) / k);
}

}  // namespace

void reduce(DType dtype, ReduceOp op, void* dst, const void* a, const void* b, size_t n) {
  switch (dtype) {
    case DType::kFloat16: return reduce_16<half_to_float, float_to_half>(op, dst, a, b, n);
    case DType::kBFloat16: return reduce_16<bf16_to_float, float_to_bf16>(op, dst, a, b, n);
    case DType::kFloat32: return reduce_typed<float>(op, dst, a, b, n);
    case DType::kFloat64: return reduce_typed<double>(op, dst, a, b, n);
    case DType::kInt8: return reduce_typed<int8_t>(op, dst, a, b, n);
    case DType::kUInt8: return reduce_typed<uint8_t>(op, dst, a, b, n);
    case DType::kInt16: return reduce_typed<int16_t>(op, dst, a, b, n);
    case DType::kInt32: return reduce_typed<int32_t>(op, dst, a, b, n);
    case DType::kInt64: return reduce_typed<int64_t>(op, dst, a, b, n);
  }
  throw InvalidArgument("reduce: unknown dtype");
}

void divide(DType dtype, void* dst, size_t n, uint64_t divisor) {
  PCOMM_CHECK(divisor > 0, InvalidArgument, "divide by zero peers");
  if (divisor == 1) return;
  switch (dtype) {
    case DType::kFloat16: return divide_16<half_to_float, float_to_half>(dst, n, divisor);
    case DType::kBFloat16: return divide_16<bf16_to_float, float_to_bf16>(dst, n, divisor);
    case DType::kFloat32: return divide_typed<float>(dst, n, divisor);
    case DType::kFloat64: return divide_typed<double>(dst, n, divisor);
    case DType::kInt8: return divide_typed<int8_t>(dst, n, divisor);
    case DType::kUInt8: return divide_typed<uint8_t>(dst, n, divisor);
    case DType::kInt16: return divide_typed<int16_t>(dst, n, divisor);
    case DType::kInt32: return divide_typed<int32_t>(dst, n, divisor);
    case DType::kInt64: return divide_typed<int64_t>(dst, n, divisor);
  }
}

}  // namespace pcomm::collectives
