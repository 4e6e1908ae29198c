// SPDX-License-Identifier: GPL-3.0-or-later
#include "retnet/json_text.h"

#include <string>

#include "retnet/memory_limit.h"

namespace retnet {

using json = nlohmann::json;

bool nests_too_deep(std::string_view text) {
    DepthBoundedSax scan;
    json::sax_parse(text, &scan);
    return scan.too_deep;
}

std::string json_error_text(const json::exception& e) {
    std::string what = e.what();
    if (what.starts_with("[json.exception.")) {
        const auto tag_end = what.find("] ");
        if (tag_end != std::string::npos) what.erase(0, tag_end + 2);
    }
    if (what.size() > 200) what.resize(200);
    return what;
}

json parse_json_bounded(std::string_view text) {
    // nlohmann's tree of a document takes up to ~8 times its text (a cost report of 52 MiB: 424 MB),
    // and frees itself with allocations: run out of memory while it is built, and the second
    // bad_alloc, in its destructor, ends the process. So the room is asked for first.
    check_memory_room(saturating_product({static_cast<uint64_t>(text.size()), kJsonTreeBytesPerTextByte}),
                      "a JSON document of " + format_bytes(text.size()));
    if (nests_too_deep(text))
        throw json::other_error::create(
            501, "arrays and objects nested more than " + std::to_string(kMaxJsonDepth) + " levels deep",
            static_cast<const json*>(nullptr));
    return json::parse(text);
}

}  // namespace retnet
