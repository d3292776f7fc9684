// Test hooks for authentication (private, underscore names): a TLS client that tests use
// as an attacker would, with a key and PSK identity of their choosing.
#include <pybind11/pybind11.h>

#include <cstring>

#include "bindings/register.h"
#include "core/errors.h"
#include "net/address.h"
#include "net/run_keys.h"
#include "net/socket.h"
#include "net/tcp_link.h"
#include "net/tls_link.h"

namespace py = pybind11;

namespace pcomm::bindings {

void register_security(py::module_& m) {
  // Dials address and runs a TLS handshake presenting identity with key (32 bytes);
  // raises IoError (or TimeoutError) when the server refuses it.
  m.def(
      "_tls_probe",
      [](const std::string& address, const std::string& identity, const py::bytes& key_bytes, double timeout) {
        std::string raw = key_bytes;
        if (raw.size() != net::kKeyBytes) throw InvalidArgument("a key is 32 bytes");
        net::Key key{};
        std::memcpy(key.data(), raw.data(), key.size());
        py::gil_scoped_release release;
        Deadline deadline(seconds_to_duration(timeout));
        auto sock = net::Socket::connect_blocking(net::resolve(net::parse_host_port(address, false)), deadline);
        auto link = net::TlsLink::client(std::make_shared<net::TcpLink>(std::move(sock), net::LinkKind::kDirect),
                                         identity, key);
        link->handshake(Clock::now() + deadline.remaining());
        // TLS 1.3: the client finishes before the server checked its Finished; a refused
        // client learns it on its first read. Wait for that, or for the server's silence.
        uint8_t byte = 0;
        try {
          link->recv_all(&byte, 1, Clock::now() + Millis(300));
        } catch (const TimeoutError&) {
          return;  // accepted: the server waits for us to speak
        }
      },
      py::arg("address"), py::arg("identity"), py::arg("key"), py::arg("timeout") = 5.0);
  m.def("_derive_key", [](const py::bytes& secret, const std::string& purpose) {
    auto k = net::derive_key(std::string(secret), purpose);
    return py::bytes(reinterpret_cast<const char*>(k.data()), k.size());
  });
}

}  // namespace pcomm::bindings
