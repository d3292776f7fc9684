// "host:port" addresses: parsing with clear errors, resolution, formatting.
// IPv4 only for now ("[v6]:port" is refused with a message saying so); hostnames are
// resolved with getaddrinfo.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>

namespace pcomm::net {

struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
};

// Parses "host:port"; throws InvalidArgument naming what is wrong. Port 0 is accepted only
// when allow_port_zero (listen addresses: "pick a free port").
HostPort parse_host_port(const std::string& text, bool allow_port_zero);

// Resolves to an IPv4 socket address; throws IoError when the host cannot be resolved.
sockaddr_in resolve(const HostPort& hp);

// Formats a socket address as "a.b.c.d:port".
std::string format_sockaddr(const sockaddr_in& addr);

}  // namespace pcomm::net
