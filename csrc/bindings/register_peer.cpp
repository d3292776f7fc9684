// Bindings for the peer side: Communicator. Timeouts cross as seconds (float); the
// Python wrapper resolves None to the communicator's default.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/register.h"
#include "core/errors.h"
#include "peer/communicator.h"

namespace py = pybind11;

namespace pcomm::bindings {

namespace {
// Runs a blocking call without the GIL; if the interrupt check stopped it, re-raises the
// Python exception the check left pending (KeyboardInterrupt).
template <typename F>
void interruptible(F&& call) {
  bool interrupted = false;
  {
    py::gil_scoped_release release;
    try {
      call();
    } catch (const Interrupted&) {
      interrupted = true;
    }
  }
  if (interrupted) {
    if (PyErr_Occurred()) throw py::error_already_set();
    throw Aborted("interrupted");
  }
}
}  // namespace

void register_peer(py::module_& m) {
  py::class_<peer::Communicator>(m, "Communicator")
      .def(py::init([](const std::string& coordinator, const std::string& run, uint32_t connections_per_peer,
                       double timeout, const std::string& data_listen, const py::bytes& secret,
                       const std::vector<std::string>& more_coordinators, double coordinator_grace,
                       const py::object& find_coordinator) {
             peer::CommunicatorOptions o;
             o.secret = std::string(secret);
             o.coordinator = coordinator;
             o.more_coordinators = more_coordinators;
             o.coordinator_grace = seconds_to_duration(coordinator_grace);
             if (!find_coordinator.is_none()) {
               // Called from the reconnect thread: take the GIL, and let go of the
               // function only with the GIL held.
               std::shared_ptr<py::object> f(new py::object(find_coordinator), [](py::object* p) {
                 py::gil_scoped_acquire gil;
                 delete p;
               });
               o.find_coordinator = [f]() -> std::string {
                 py::gil_scoped_acquire gil;
                 try {
                   py::object r = (*f)();
                   return r.is_none() ? std::string() : r.cast<std::string>();
                 } catch (py::error_already_set& e) {
                   throw IoError(e.what());
                 }
               };
             }
             o.run = run;
             o.connections_per_peer = connections_per_peer;
             o.timeout = seconds_to_duration(timeout);
             o.data_listen = data_listen;
             auto c = std::make_unique<peer::Communicator>(o);
             // Ctrl-C while connect() or update_topology() waits: PyErr_CheckSignals runs
             // the handler (main thread only) and leaves KeyboardInterrupt pending.
             c->set_interrupt_check([] {
               py::gil_scoped_acquire gil;
               return PyErr_CheckSignals() != 0;
             });
             return c;
           }),
           py::arg("coordinator"), py::arg("run"), py::arg("connections_per_peer"), py::arg("timeout"),
           py::arg("data_listen"), py::arg("secret"), py::arg("more_coordinators"), py::arg("coordinator_grace"),
           py::arg("find_coordinator"))
      // Blocking calls wait on the network and the loop thread: release the GIL so other
      // Python threads (and other communicators in this process) keep running.
      .def("connect", [](peer::Communicator& c, double timeout) {
             interruptible([&] { c.connect(seconds_to_duration(timeout)); });
           }, py::arg("timeout"))
      .def("update_topology", [](peer::Communicator& c, double timeout) {
             interruptible([&] { c.update_topology(seconds_to_duration(timeout)); });
           }, py::arg("timeout"))
      .def("close", &peer::Communicator::close, py::call_guard<py::gil_scoped_release>())
      // Tensors cross as raw pointers (the Python layer validated them and keeps them
      // alive until the op completes): no copies.
      .def("all_reduce_start",
           [](peer::Communicator& c, uintptr_t data, uintptr_t out, size_t count, uint8_t dtype, uint8_t op,
              uint8_t quantization, uint32_t tag, double timeout) {
             peer::AllReduceRequest r;
             r.data = reinterpret_cast<void*>(data);
             r.out = reinterpret_cast<void*>(out);
             r.count = count;
             r.dtype = dtype_from_code(dtype);
             r.op = reduce_op_from_code(op);
             r.quantization = quantization_from_code(quantization);
             r.tag = tag;
             r.timeout = seconds_to_duration(timeout);
             // It may wait for a coordinator to take this peer back: without the GIL.
             py::gil_scoped_release release;
             return c.all_reduce(r);
           },
           py::arg("data"), py::arg("out"), py::arg("count"), py::arg("dtype"), py::arg("op"),
           py::arg("quantization"), py::arg("tag"), py::arg("timeout"))
      // Tensors cross as (name, pointer, nbytes, dtype code, shape); the Python layer
      // validated them and keeps them alive. Returns (tensors received, bytes received,
      // bytes sent, revision, content hash).
      .def("sync_shared_state",
           [](peer::Communicator& c, const std::vector<std::tuple<std::string, uintptr_t, uint64_t, uint8_t,
                                                                   std::vector<uint64_t>>>& items,
              uint64_t revision, uint8_t strategy, double timeout) {
             std::vector<peer::StateTensor> tensors;
             for (const auto& [name, ptr, nbytes, dtype, shape] : items) {
               tensors.push_back(peer::StateTensor{name, dtype, shape, reinterpret_cast<void*>(ptr), nbytes});
             }
             if (strategy > proto::kLastSyncStrategy) throw InvalidArgument("unknown sync strategy");
             peer::SyncResult r;
             // Hashing, transfer and waits need no Python: run without the GIL.
             interruptible([&] {
               r = c.sync_shared_state(tensors, revision, static_cast<proto::SyncStrategy>(strategy),
                                       seconds_to_duration(timeout));
             });
             return py::make_tuple(r.tensors_received, r.bytes_received, r.bytes_sent, r.revision, r.content_hash);
           },
           py::arg("tensors"), py::arg("revision"), py::arg("strategy"), py::arg("timeout"))
      .def_property_readonly("world_size", &peer::Communicator::world_size)
      .def_property_readonly("rank", &peer::Communicator::rank)
      .def_property_readonly("epoch", &peer::Communicator::epoch)
      .def_property_readonly("peer_id", &peer::Communicator::peer_id)
      .def_property_readonly("run_id", &peer::Communicator::run_id)
      .def_property_readonly("term", &peer::Communicator::term)
      .def_property_readonly("coordinator", &peer::Communicator::coordinator)
      .def("set_step", &peer::Communicator::set_step, py::arg("step"))
      .def_property_readonly("peers", &peer::Communicator::peers)
      .def_property_readonly("pending_peers", &peer::Communicator::pending_peers)
      .def_property_readonly("connected", &peer::Communicator::connected)
      .def_property_readonly("data_address", &peer::Communicator::data_address)
      .def("links", [](const peer::Communicator& c) {
        py::list out;
        for (const auto& l : c.links()) {
          py::dict d;
          d["peer_id"] = l.peer_id;
          d["kind"] = l.kind;
          d["remote"] = l.remote;
          d["connections"] = l.connections;
          d["rtt"] = l.rtt_seconds;
          out.append(d);
        }
        return out;
      });
}

}  // namespace pcomm::bindings
