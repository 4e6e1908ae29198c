// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/stack_limit.h"

#include <pthread.h>
#include <sys/resource.h>

#include <algorithm>
#include <string>

#include "retnet/error.h"

namespace retnet {
namespace {

constexpr rlim_t kLeastStack = rlim_t{256} << 10, kUsualStack = rlim_t{8} << 20;

bool enough(const rlimit& limit) { return limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= kLeastStack; }

std::string kib(rlim_t bytes) { return bytes == RLIM_INFINITY ? "unlimited" : std::to_string(bytes >> 10) + " KiB"; }

}  // namespace

void raise_stack_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_STACK, &limit) != 0 || enough(limit)) return;
    const rlim_t target = limit.rlim_max == RLIM_INFINITY ? kUsualStack : std::min(limit.rlim_max, kUsualStack);
    if (target <= limit.rlim_cur) return;
    limit.rlim_cur = target;
    if (::setrlimit(RLIMIT_STACK, &limit) != 0) return;
    pthread_attr_t attr;
    if (::pthread_attr_init(&attr) != 0) return;
    if (::pthread_attr_setstacksize(&attr, target) == 0) ::pthread_setattr_default_np(&attr);
    ::pthread_attr_destroy(&attr);
}

void check_stack_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_STACK, &limit) != 0 || enough(limit)) return;
    throw Error("the stack limit (ulimit -s) is " + kib(limit.rlim_cur) + " and its hard limit " + kib(limit.rlim_max) +
                ": retnet needs at least " + kib(kLeastStack) + " (8192 KiB is usual)");
}

}  // namespace retnet
