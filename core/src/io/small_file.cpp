// SPDX-License-Identifier: GPL-3.0-or-later
#include "small_file.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "retnet/error.h"

namespace retnet::io {

namespace fs = std::filesystem;

std::string read_small_file(const std::string& path, uint64_t max_bytes) {
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);  // follows symlinks, opens nothing
    if (ec) throw Error(path + ": cannot open (" + ec.message() + ")");
    if (fs::is_directory(status)) throw Error(path + ": is a directory, not a file");
    if (!fs::is_regular_file(status)) throw Error(path + ": not a regular file (a FIFO, socket or device)");
    const uint64_t size = fs::file_size(path, ec);
    if (ec) throw Error(path + ": cannot read its size (" + ec.message() + ")");
    if (size > max_bytes)
        throw Error(path + ": " + std::to_string(size) + " bytes, more than the " + std::to_string(max_bytes) +
                    " such a file can have");
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    std::ostringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

}  // namespace retnet::io
