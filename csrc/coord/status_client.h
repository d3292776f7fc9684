// The client side of `pcomm status`: asks a coordinator for its run's status (a
// StatusRequest as the first frame, over TLS keyed by the secret when one is given).
#pragma once

#include <string>

#include "core/clock.h"
#include "proto/status_messages.h"

namespace pcomm::coord {

// Throws AuthenticationError (wrong or missing secret), IoError, TimeoutError, ProtocolError.
// A coordinator watching another passes its term and address in `request`.
proto::StatusReply query_status(const std::string& address, const std::string& secret, Duration timeout,
                                const proto::StatusRequest& request = {});

}  // namespace pcomm::coord
