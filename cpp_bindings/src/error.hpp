// The one exception type inside libtpem: a status and a one-line message for the C ABI.
#pragma once

#include <stdexcept>
#include <string>

#include "tpem/tpem.h"

namespace tpem::detail {

struct Error : std::runtime_error {
    tpem_status status;
    Error(tpem_status s, const std::string &message) : std::runtime_error(message), status(s) {}
};

[[noreturn]] inline void fail(tpem_status s, const std::string &message) { throw Error(s, message); }

}  // namespace tpem::detail
