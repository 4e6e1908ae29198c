// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// A full disk for the tests: RLIMIT_FSIZE makes a write past the limit fail with EFBIG, as writes
// fail with ENOSPC on a full disk. Used by the core robustness tests and the app's export test.
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>

namespace retnet {

// For its scope, every write that would take a file of this process past `bytes` fails with EFBIG,
// as writes fail on a full disk (RLIMIT_FSIZE's soft limit, SIGXFSZ ignored); both are restored after.
class FileSizeLimit {
public:
    explicit FileSizeLimit(rlim_t bytes) {
        ::getrlimit(RLIMIT_FSIZE, &saved_);
        saved_handler_ = ::signal(SIGXFSZ, SIG_IGN);
        rlimit limit = saved_;
        limit.rlim_cur = std::min(bytes, saved_.rlim_max);
        ::setrlimit(RLIMIT_FSIZE, &limit);
    }
    ~FileSizeLimit() {
        ::setrlimit(RLIMIT_FSIZE, &saved_);
        ::signal(SIGXFSZ, saved_handler_);
    }
    FileSizeLimit(const FileSizeLimit&) = delete;
    FileSizeLimit& operator=(const FileSizeLimit&) = delete;

private:
    rlimit saved_{};
    sighandler_t saved_handler_ = SIG_DFL;
};

}  // namespace retnet
