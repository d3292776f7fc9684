// Address parsing and resolution; see address.h.
#include "net/address.h"

#include <arpa/inet.h>
#include <netdb.h>

#include <cctype>
#include <cstring>

#include "core/errors.h"

namespace pcomm::net {

HostPort parse_host_port(const std::string& text, bool allow_port_zero) {
  auto fail = [&](const std::string& why) -> HostPort {
    throw InvalidArgument("invalid address '" + text + "': " + why +
                          " (expected HOST:PORT, for example 127.0.0.1:29500)");
  };
  if (text.empty()) return fail("it is empty");
  if (text.front() == '[') return fail("IPv6 addresses are not supported yet");
  auto colon = text.rfind(':');
  if (colon == std::string::npos) return fail("no ':' before the port");
  std::string host = text.substr(0, colon);
  std::string port_text = text.substr(colon + 1);
  if (host.empty()) return fail("the host is empty");
  if (host.find(':') != std::string::npos) return fail("more than one ':'");
  for (char c : host) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
    if (!ok) return fail("the host contains '" + std::string(1, c) + "'");
  }
  if (port_text.empty() || port_text.size() > 5) return fail("the port must be 1 to 5 digits");
  unsigned long port = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9') return fail("the port '" + port_text + "' is not a number");
    port = port * 10 + static_cast<unsigned long>(c - '0');
  }
  if (port > 65535) return fail("the port " + port_text + " is above 65535");
  if (port == 0 && !allow_port_zero) return fail("port 0 is only valid for listening");
  return HostPort{host, static_cast<uint16_t>(port)};
}

sockaddr_in resolve(const HostPort& hp) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(hp.port);
  if (inet_pton(AF_INET, hp.host.c_str(), &addr.sin_addr) == 1) return addr;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* result = nullptr;
  int rc = getaddrinfo(hp.host.c_str(), nullptr, &hints, &result);
  if (rc != 0 || result == nullptr) {
    throw IoError("cannot resolve host '" + hp.host + "': " + gai_strerror(rc));
  }
  std::memcpy(&addr.sin_addr, &reinterpret_cast<sockaddr_in*>(result->ai_addr)->sin_addr,
              sizeof addr.sin_addr);
  freeaddrinfo(result);
  return addr;
}

std::string format_sockaddr(const sockaddr_in& addr) {
  char buf[INET_ADDRSTRLEN] = {0};
  inet_ntop(AF_INET, &addr.sin_addr, buf, sizeof buf);
  return std::string(buf) + ":" + std::to_string(ntohs(addr.sin_port));
}

}  // namespace pcomm::net
