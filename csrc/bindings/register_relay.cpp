// Bindings for the relay (net/relay.h): start, stop, address, counters.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/register.h"
#include "net/relay.h"

namespace py = pybind11;

namespace pcomm::bindings {

void register_relay(py::module_& m) {
  py::class_<net::Relay>(m, "Relay")
      .def(py::init([](const std::string& listen, uint32_t max_circuits, uint32_t max_circuits_per_peer,
                       uint32_t max_per_source, double idle_timeout, uint64_t rate_bytes_per_second,
                       const py::bytes& secret, bool insecure) {
             net::RelayOptions o;
             o.secret = std::string(secret);
             o.insecure = insecure;
             o.listen = listen;
             o.max_circuits = max_circuits;
             o.max_circuits_per_peer = max_circuits_per_peer;
             o.max_per_source = max_per_source;
             o.idle_timeout = seconds_to_duration(idle_timeout);
             o.rate_bytes_per_second = rate_bytes_per_second;
             return std::make_unique<net::Relay>(o);
           }),
           py::arg("listen"), py::arg("max_circuits"), py::arg("max_circuits_per_peer"), py::arg("max_per_source"),
           py::arg("idle_timeout"), py::arg("rate_bytes_per_second"), py::arg("secret"), py::arg("insecure"))
      .def("start", &net::Relay::start)
      // stop() joins the loop and circuit threads, which never need the GIL.
      .def("stop", &net::Relay::stop, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("address", &net::Relay::address)
      .def_property_readonly("running", &net::Relay::running)
      .def("stats", [](const net::Relay& r) {
        auto s = r.stats();
        py::dict d;
        d["circuits_open"] = s.circuits_open;
        d["circuits_total"] = s.circuits_total;
        d["bytes_forwarded"] = s.bytes_forwarded;
        d["refused"] = s.refused;
        return d;
      });
}

}  // namespace pcomm::bindings
