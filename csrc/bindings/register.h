// One registration function per area of the core; module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace pcomm::bindings {

void register_errors(pybind11::module_& m);
void register_core(pybind11::module_& m);
void register_coord(pybind11::module_& m);
void register_collectives(pybind11::module_& m);
void register_peer(pybind11::module_& m);
void register_relay(pybind11::module_& m);
void register_security(pybind11::module_& m);

}  // namespace pcomm::bindings
