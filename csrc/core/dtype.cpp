// Names, sizes and validation of DType, ReduceOp and Quantization; see dtype.h.
#include "core/dtype.h"

#include "core/errors.h"

namespace pcomm {

DType dtype_from_code(uint8_t code) {
  if (code < 1 || code > 9) throw InvalidArgument("unknown dtype code " + std::to_string(code));
  return static_cast<DType>(code);
}

ReduceOp reduce_op_from_code(uint8_t code) {
  if (code < 1 || code > 5) throw InvalidArgument("unknown reduce op code " + std::to_string(code));
  return static_cast<ReduceOp>(code);
}

Quantization quantization_from_code(uint8_t code) {
  if (code > 1) throw InvalidArgument("unknown quantization code " + std::to_string(code));
  return static_cast<Quantization>(code);
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kInt8:
    case DType::kUInt8: return 1;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16: return 2;
    case DType::kFloat32:
    case DType::kInt32: return 4;
    case DType::kFloat64:
    case DType::kInt64: return 8;
  }
  return 0;
}

bool dtype_is_float(DType t) {
  return t == DType::kFloat16 || t == DType::kBFloat16 || t == DType::kFloat32 || t == DType::kFloat64;
}

std::string dtype_name(DType t) {
  switch (t) {
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kInt8: return "int8";
    case DType::kUInt8: return "uint8";
    case DType::kInt16: return "int16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "?";
}

std::string reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return "sum";
    case ReduceOp::kAvg: return "avg";
    case ReduceOp::kMin: return "min";
    case ReduceOp::kMax: return "max";
    case ReduceOp::kProd: return "prod";
  }
  return "?";
}

std::string quantization_name(Quantization q) {
  return q == Quantization::kMinMaxU8 ? "minmax_u8" : "none";
}

}  // namespace pcomm
