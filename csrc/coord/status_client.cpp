// query_status; see status_client.h.
#include "coord/status_client.h"

#include "core/errors.h"
#include "net/address.h"
#include "net/link_frames.h"
#include "net/socket.h"
#include "net/tcp_link.h"
#include "net/tls_link.h"

namespace pcomm::coord {

proto::StatusReply query_status(const std::string& address, const std::string& secret, Duration timeout,
                                const proto::StatusRequest& request) {
  Deadline deadline(timeout);
  auto sock = net::Socket::connect_blocking(net::resolve(net::parse_host_port(address, false)), deadline);
  auto link = net::coordinator_client(std::make_shared<net::TcpLink>(std::move(sock), net::LinkKind::kDirect),
                                      secret, deadline.at());
  net::send_frame(*link, static_cast<uint16_t>(proto::MsgType::kStatusRequest), proto::encode_fields(request),
                  deadline.at());
  uint16_t type = 0;
  auto payload = net::read_frame(*link, &type, proto::kMaxControlPayload, deadline.at());
  link->shutdown();
  if (type == static_cast<uint16_t>(proto::MsgType::kError)) {
    auto err = proto::ErrorMsg::decode(payload.data(), payload.size());
    if (err.code == proto::ErrorCode::kUnauthenticated) throw AuthenticationError(err.text);
    throw ProtocolError("the coordinator at " + address + " refused: " + err.text);
  }
  if (type != static_cast<uint16_t>(proto::MsgType::kStatusReply)) {
    throw ProtocolError("the coordinator at " + address + " answered with message type " + std::to_string(type));
  }
  return proto::decode_fields<proto::StatusReply>(payload.data(), payload.size());
}

}  // namespace pcomm::coord
