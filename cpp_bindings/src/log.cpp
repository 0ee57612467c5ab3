#include "log.hpp"

#include <cstdio>
#include <mutex>

#include "tpem/tpem.h"

namespace tpem::detail {
namespace {
std::mutex log_mutex;
tpem_log_fn log_fn = nullptr;
void *log_user = nullptr;
int log_min = LOG_WARNING;
}  // namespace

void set_log(tpem_log_fn fn, void *user, int min_level) {
    std::lock_guard<std::mutex> lock(log_mutex);
    log_fn = fn;
    log_user = user;
    log_min = min_level;
}

void log(int level, const std::string &message) {
    std::lock_guard<std::mutex> lock(log_mutex);
    if (level < log_min) return;
    if (log_fn) {
        log_fn(level, message.c_str(), log_user);
        return;
    }
    static const char *names[] = {"debug", "info", "warning", "error"};
    std::fprintf(stderr, "tpem %s: %s\n", names[level < 0 ? 0 : level > 3 ? 3 : level], message.c_str());
}

}  // namespace tpem::detail
