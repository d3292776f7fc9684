// The one boundary where C++ errors become Python exceptions. Each C++ type maps to the
// class of the same meaning in pcomm.errors (imported lazily, at the first error).
#include <pybind11/pybind11.h>

#include "bindings/register.h"
#include "core/errors.h"

namespace py = pybind11;

namespace pcomm::bindings {

namespace {
void raise_as(const char* name, const char* message) {
  py::object cls = py::module_::import("pcomm.errors").attr(name);
  PyErr_SetString(cls.ptr(), message);
}
}  // namespace

void register_errors(py::module_&) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TimeoutError& e) {
      raise_as("TimeoutError", e.what());
    } catch (const PeerLostError& e) {
      raise_as("PeerLostError", e.what());
    } catch (const CoordinatorLostError& e) {
      raise_as("CoordinatorLostError", e.what());
    } catch (const ProtocolError& e) {
      raise_as("ProtocolError", e.what());
    } catch (const InvalidArgument& e) {
      raise_as("InvalidArgumentError", e.what());
    } catch (const AuthenticationError& e) {
      raise_as("AuthenticationError", e.what());
    } catch (const Aborted& e) {
      raise_as("AbortedError", e.what());
    } catch (const IoError& e) {
      raise_as("IoError", e.what());
    } catch (const Error& e) {
      raise_as("PcommError", e.what());
    }
  });
}

}  // namespace pcomm::bindings
