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
  // raises IoError (or TimeoutError) when the server refuses it. With `send`, sends those
  // bytes after the handshake and returns what the server answers before it closes (or
  // goes quiet for half a second).
  m.def(
      "_tls_probe",
      [](const std::string& address, const std::string& identity, const py::bytes& key_bytes, double timeout,
         const py::bytes& send_bytes) {
        std::string to_send = send_bytes;
        std::string raw = key_bytes;
        if (raw.size() != net::kKeyBytes) throw InvalidArgument("a key is 32 bytes");
        net::Key key{};
        std::memcpy(key.data(), raw.data(), key.size());
        std::string got;
        {  // the network part, without the GIL
          py::gil_scoped_release release;
          Deadline deadline(seconds_to_duration(timeout));
          auto sock = net::Socket::connect_blocking(net::resolve(net::parse_host_port(address, false)), deadline);
          auto link = net::TlsLink::client(std::make_shared<net::TcpLink>(std::move(sock), net::LinkKind::kDirect),
                                           identity, key);
          link->handshake(Clock::now() + deadline.remaining());
          if (!to_send.empty()) link->send_all(to_send.data(), to_send.size(), Clock::now() + deadline.remaining());
          // TLS 1.3: the client finishes before the server checked its Finished; a refused
          // client learns it on its first read. Wait for that, or for the server's silence.
          for (;;) {
            uint8_t buf[4096];
            size_t n = 0;
            try {
              n = link->recv_some(buf, sizeof buf);
            } catch (const IoError&) {
              if (to_send.empty() || got.empty()) throw;  // refused
              break;                                      // answered, then closed
            }
            if (n > 0) {
              got.append(reinterpret_cast<char*>(buf), n);
              continue;
            }
            try {
              auto quiet = Clock::now() + Millis(to_send.empty() ? 300 : 500);
              net::wait_links({{link.get(), false, true}}, quiet, quiet + Millis(1), nullptr, "probe");
            } catch (const TimeoutError&) {
              break;  // quiet: accepted (no send), or the answer is complete
            }
          }
        }
        return py::bytes(got);
      },
      py::arg("address"), py::arg("identity"), py::arg("key"), py::arg("timeout") = 5.0, py::arg("send") = py::bytes());
  m.def("_derive_key", [](const py::bytes& secret, const std::string& purpose) {
    auto k = net::derive_key(std::string(secret), purpose);
    return py::bytes(reinterpret_cast<const char*>(k.data()), k.size());
  });
}

}  // namespace pcomm::bindings
