// Bindings for collectives: the handle of an operation in flight, and the reduce and
// quantization kernels (exposed so tests can check them against numpy directly).
#include <pybind11/pybind11.h>

#include "bindings/register.h"
#include "collectives/quantize.h"
#include "collectives/reduce_kernels.h"
#include "peer/collective_op.h"
#include "state/hash.h"

namespace py = pybind11;

namespace pcomm::bindings {

void register_collectives(py::module_& m) {
  py::class_<peer::CollectiveOp, std::shared_ptr<peer::CollectiveOp>>(m, "OpHandle")
      // Waits for the outcome with the GIL released (the worker and loop threads never
      // need it). Returns (world_size, bytes_sent, bytes_received, seconds).
      .def("wait",
           [](peer::CollectiveOp& op, double timeout) {
             peer::ReduceInfo info;
             {
               py::gil_scoped_release release;
               info = op.wait(seconds_to_duration(timeout));
             }
             return py::make_tuple(info.world_size, info.bytes_sent, info.bytes_received, info.seconds);
           },
           py::arg("timeout"))
      .def("done", &peer::CollectiveOp::done)
      .def("wait_done",
           [](const peer::CollectiveOp& op, double seconds) {
             py::gil_scoped_release release;
             return op.wait_done(seconds_to_duration(seconds));
           },
           py::arg("seconds"))
      .def_property_readonly("tag", [](const peer::CollectiveOp& op) { return op.request().tag; });

  m.def("_reduce",
        [](uint8_t dtype, uint8_t op, uintptr_t dst, uintptr_t a, uintptr_t b, size_t n) {
          collectives::reduce(dtype_from_code(dtype), reduce_op_from_code(op), reinterpret_cast<void*>(dst),
                              reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(b), n);
        },
        "Kernel test hook: dst = a op b.");
  m.def("hash_bytes",
        [](py::buffer b, uint64_t seed) {
          py::buffer_info info = b.request();
          uint64_t h;
          {
            py::gil_scoped_release release;
            h = state::hash_bytes(info.ptr, static_cast<size_t>(info.size * info.itemsize), seed);
          }
          return h;
        },
        py::arg("data"), py::arg("seed") = 0,
        "pcomm's 64-bit content hash of a contiguous buffer (the one shared state uses).");
  m.def("_quantize_roundtrip",
        [](uint8_t dtype, uintptr_t src, uintptr_t dst, size_t n) {
          std::vector<uint8_t> wire(collectives::quantized_size(n));
          collectives::quantize_minmax_u8(dtype_from_code(dtype), reinterpret_cast<const void*>(src), n, wire.data());
          collectives::dequantize_minmax_u8(dtype_from_code(dtype), wire.data(), n, reinterpret_cast<void*>(dst));
        },
        "Kernel test hook: dst = dequantize(quantize(src)).");
}

}  // namespace pcomm::bindings
