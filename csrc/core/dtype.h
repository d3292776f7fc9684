// Element types and reduction operations that cross the wire. The numeric codes are part
// of the protocol (announcements carry them), so they never change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace pcomm {

enum class DType : uint8_t {
  kFloat16 = 1,
  kBFloat16 = 2,
  kFloat32 = 3,
  kFloat64 = 4,
  kInt8 = 5,
  kUInt8 = 6,
  kInt16 = 7,
  kInt32 = 8,
  kInt64 = 9,
};

enum class ReduceOp : uint8_t { kSum = 1, kAvg = 2, kMin = 3, kMax = 4, kProd = 5 };

enum class Quantization : uint8_t { kNone = 0, kMinMaxU8 = 1 };

// Throws InvalidArgument for codes outside the enums (e.g. from a hostile announcement).
DType dtype_from_code(uint8_t code);
ReduceOp reduce_op_from_code(uint8_t code);
Quantization quantization_from_code(uint8_t code);

size_t dtype_size(DType t);
bool dtype_is_float(DType t);
std::string dtype_name(DType t);
std::string reduce_op_name(ReduceOp op);
std::string quantization_name(Quantization q);

}  // namespace pcomm
