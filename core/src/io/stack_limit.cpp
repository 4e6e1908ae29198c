// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/stack_limit.h"

#include <pthread.h>
#include <sys/resource.h>

#include <string>

#include "retnet/error.h"

namespace retnet {
namespace {

constexpr rlim_t kLeastStack = rlim_t{256} << 10, kUsualStack = rlim_t{8} << 20;

bool enough(rlim_t bytes) { return bytes == RLIM_INFINITY || bytes >= kLeastStack; }

std::string kib(rlim_t bytes) { return bytes == RLIM_INFINITY ? "unlimited" : std::to_string(bytes >> 10) + " KiB"; }

// The stack of every thread created from now on that asks for no size of its own.
void set_default_thread_stack(rlim_t bytes) {
    pthread_attr_t attr;
    if (::pthread_attr_init(&attr) != 0) return;
    if (::pthread_attr_setstacksize(&attr, bytes) == 0) ::pthread_setattr_default_np(&attr);
    ::pthread_attr_destroy(&attr);
}

}  // namespace

void fit_stack_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_STACK, &limit) != 0) return;
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur > kUsualStack) {
        set_default_thread_stack(kUsualStack);
        return;
    }
    // Raised only where the hard limit lets it reach the least: raised to a hard limit below that
    // (16 KiB soft, 64 KiB hard), every thread got 64 KiB, too little for OpenBLAS's to start.
    if (enough(limit.rlim_cur) || !enough(limit.rlim_max)) return;
    limit.rlim_cur = limit.rlim_max == RLIM_INFINITY || limit.rlim_max > kUsualStack ? kUsualStack : limit.rlim_max;
    if (::setrlimit(RLIMIT_STACK, &limit) == 0) set_default_thread_stack(limit.rlim_cur);
}

void check_stack_limit() {
    rlimit limit{};
    if (::getrlimit(RLIMIT_STACK, &limit) != 0 || enough(limit.rlim_cur)) return;
    throw Error("the stack limit (ulimit -s) is " + kib(limit.rlim_cur) + " and its hard limit " + kib(limit.rlim_max) +
                ": retnet needs at least " + kib(kLeastStack) + " (8192 KiB is usual)");
}

}  // namespace retnet
