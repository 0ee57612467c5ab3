// Log lines of libtpem, sent to the callback set with tpem_set_log (default: stderr from warnings).
#pragma once

#include <string>

#include "tpem/tpem.h"

namespace tpem::detail {

enum LogLevel { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARNING = 2, LOG_ERROR = 3 };

void log(int level, const std::string &message);

// Where log lines go from now on (fn NULL: stderr), and from which level.
void set_log(tpem_log_fn fn, void *user, int min_level);

}  // namespace tpem::detail
