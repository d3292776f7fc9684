// pcomm._pcomm: the private extension module. This file only registers the areas; each
// area's bindings live in register_<area>.cpp. The public API is python/pcomm.
#include <pybind11/pybind11.h>

#include "bindings/register.h"

PYBIND11_MODULE(_pcomm, m) {
  m.doc() = "pcomm C++ core (private; use the pcomm package)";
  pcomm::bindings::register_errors(m);
  pcomm::bindings::register_core(m);
  pcomm::bindings::register_coord(m);
  pcomm::bindings::register_collectives(m);
  pcomm::bindings::register_peer(m);
  pcomm::bindings::register_relay(m);
  pcomm::bindings::register_security(m);
}
