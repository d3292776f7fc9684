// Core utilities exposed to Python: protocol constants and log level control.
#include <pybind11/pybind11.h>

#include "bindings/register.h"
#include "core/log.h"
#include "proto/wire.h"

namespace py = pybind11;

namespace pcomm::bindings {

void register_core(py::module_& m) {
  m.attr("PROTOCOL_VERSION") = proto::kProtocolVersion;
  m.attr("MAX_CONTROL_PAYLOAD") = proto::kMaxControlPayload;
  m.def("reload_log_level", &reload_log_level, "Re-read PCOMM_LOG_LEVEL from the environment.");
}

}  // namespace pcomm::bindings
