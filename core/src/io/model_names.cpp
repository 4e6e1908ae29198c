// SPDX-License-Identifier: GPL-3.0-or-later
// ORG/NAME[@REVISION] → a snapshot directory of the Hugging Face hub cache. The cache layout
// (huggingface_hub's file_download.py): <cache>/models--ORG--NAME/{refs/<rev>, snapshots/<commit>/,
// blobs/}, where refs/<rev> holds the commit hash and the snapshot's files are symlinks into blobs/.
#include "retnet/model_names.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "retnet/files.h"
#include "retnet/config.h"
#include "retnet/error.h"

namespace retnet {

namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
    const char* v = std::getenv(name);
    return v ? std::string(v) : std::string();
}

bool is_commit_hash(const std::string& s) {
    return s.size() == 40 && std::all_of(s.begin(), s.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

std::string repo_folder(const std::string& repo) {
    std::string folder = "models--" + repo;
    folder.replace(folder.find('/'), 1, "--");
    return folder;
}

std::string download_hint(const ModelName& name) {
    return "download it with: huggingface-cli download " + name.repo +
           (name.revision == "main" ? std::string() : " --revision " + name.revision);
}

// The commit a ref names; "" when refs/<rev> is absent. A ref that holds anything but a commit
// hash (a damaged cache, or a path that would lead outside snapshots/) is refused by name.
std::string read_ref(const fs::path& repo_dir, const std::string& revision) {
    const fs::path ref = repo_dir / "refs" / revision;
    std::error_code ec;
    if (!fs::exists(ref, ec)) return {};
    std::string commit = read_regular_file(ref.string(), 4096);
    while (!commit.empty() && std::isspace(static_cast<unsigned char>(commit.back()))) commit.pop_back();
    if (!is_commit_hash(commit))
        throw Error(ref.string() + " does not hold a commit hash (40 hex digits); the cache is damaged: "
                    "download the model again");
    return commit;
}

// models--ORG--NAME → ORG/NAME (huggingface_hub replaces every "/" of the repo id by "--").
std::optional<std::string> repo_of_folder(const std::string& folder) {
    if (folder.rfind("models--", 0) != 0 || folder.size() == 8) return std::nullopt;
    std::string name;
    for (size_t i = 8; i < folder.size(); ++i) {
        const bool separator = folder.compare(i, 2, "--") == 0;
        name += separator ? '/' : folder[i];
        i += separator ? 1 : 0;
    }
    return name;
}

// The snapshot to list for a repo: refs/main's, else the only one.
std::optional<fs::path> listed_snapshot(const fs::path& repo_dir) {
    std::error_code ec;
    try {
        if (const std::string commit = read_ref(repo_dir, "main"); !commit.empty()) {
            const fs::path dir = repo_dir / "snapshots" / commit;
            if (fs::is_directory(dir, ec)) return dir;
        }
    } catch (const Error&) {
        // A damaged refs/main: fall back to the only snapshot, as for a cache without refs.
    }
    std::vector<fs::path> snapshots;
    for (fs::directory_iterator it(repo_dir / "snapshots", ec), end; !ec && it != end; it.increment(ec))
        if (it->is_directory(ec)) snapshots.push_back(it->path());
    if (snapshots.size() == 1) return snapshots[0];
    return std::nullopt;
}

}  // namespace

std::string hub_cache_dir() {
    for (const char* var : {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"})
        if (std::string v = env(var); !v.empty()) return v;
    if (std::string home = env("HF_HOME"); !home.empty()) return (fs::path(home) / "hub").string();
    if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty())
        return (fs::path(xdg) / "huggingface" / "hub").string();
    return (fs::path(env("HOME")) / ".cache" / "huggingface" / "hub").string();
}

namespace {
bool ascii_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
// [A-Za-z0-9_] then [A-Za-z0-9_.-]*: a hub ORG or NAME. (A std::regex recursed once a character and
// overflowed the stack on a --model of ~26,000 characters.)
bool repo_part(std::string_view s) {
    const auto word = [](char c) { return ascii_alnum(c) || c == '_'; };
    if (s.empty() || !word(s.front())) return false;
    return std::all_of(s.begin(), s.end(), [&](char c) { return word(c) || c == '.' || c == '-'; });
}
// [A-Za-z0-9_.] then [A-Za-z0-9_./-]*: a branch, tag or commit
bool revision_part(std::string_view s) {
    const auto word = [](char c) { return ascii_alnum(c) || c == '_' || c == '.'; };
    if (s.empty() || !word(s.front())) return false;
    return std::all_of(s.begin(), s.end(), [&](char c) { return word(c) || c == '/' || c == '-'; });
}
}  // namespace

std::optional<ModelName> parse_model_name(const std::string& text) {
    // Hub repo ids ORG/NAME[@REVISION]: ORG and NAME of letters, digits, '-', '_', '.', not starting
    // with '.' or '-'.
    const std::string_view all(text);
    const size_t slash = all.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    const std::string_view org = all.substr(0, slash), rest = all.substr(slash + 1);
    const size_t at = rest.find('@');
    const std::string_view repo = rest.substr(0, at);
    if (!repo_part(org) || !repo_part(repo)) return std::nullopt;
    ModelName name{std::string(org) + "/" + std::string(repo), "main"};
    if (at != std::string_view::npos) {
        const std::string_view revision = rest.substr(at + 1);
        if (!revision_part(revision)) return std::nullopt;
        name.revision = std::string(revision);
    }
    if (name.revision.find("..") != std::string::npos) return std::nullopt;  // no escaping refs/
    return name;
}

std::string resolve_model_path(const std::string& path_or_name) {
    std::error_code ec;
    if (fs::exists(path_or_name, ec)) return path_or_name;
    const std::optional<ModelName> name = parse_model_name(path_or_name);
    if (!name) {
        // ORG/NAME@<something refused>: say so, not "ORG/NAME@../x/config.json: cannot open".
        const size_t at = path_or_name.find('@');
        if (at != std::string::npos && parse_model_name(path_or_name.substr(0, at)))
            throw Error(path_or_name + " is not a directory, and '" + path_or_name.substr(at + 1) +
                        "' is not a revision (a branch or tag of letters, digits, '.', '_', '-', '/' without '..', "
                        "or a commit hash)");
        return path_or_name;
    }

    const fs::path repo_dir = fs::path(hub_cache_dir()) / repo_folder(name->repo);
    const std::string where = path_or_name + " is neither a directory nor in the Hugging Face cache";
    if (!fs::is_directory(repo_dir, ec))
        throw Error(where + " (looked for " + repo_dir.string() + "); " + download_hint(*name));
    std::string commit = name->revision;
    if (!is_commit_hash(commit)) {
        commit = read_ref(repo_dir, name->revision);
        if (commit.empty())
            throw Error(where + " at revision '" + name->revision + "' (no " +
                        (repo_dir / "refs" / name->revision).string() + "); " + download_hint(*name));
    }
    const fs::path snapshot = repo_dir / "snapshots" / commit;
    if (!fs::is_directory(snapshot, ec))
        throw Error(where + " at revision '" + name->revision + "' (no snapshot " + snapshot.string() + "); " +
                    download_hint(*name));
    if (!fs::exists(snapshot / "config.json", ec))
        throw Error(snapshot.string() + " (" + path_or_name + ") has no config.json: the download is incomplete; " +
                    download_hint(*name));
    return snapshot.string();
}

std::optional<std::string> cached_model_name(const std::string& directory) {
    const fs::path p = fs::path(directory).lexically_normal();
    const fs::path snapshot = p.filename().empty() ? p.parent_path() : p;
    if (snapshot.parent_path().filename() != "snapshots") return std::nullopt;
    return repo_of_folder(snapshot.parent_path().parent_path().filename().string());
}

std::vector<CachedModel> list_cached_models(const std::string& cache_dir) {
    std::vector<CachedModel> out;
    std::error_code ec;
    for (fs::directory_iterator it(cache_dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::optional<std::string> name = repo_of_folder(it->path().filename().string());
        if (!name) continue;
        const std::optional<fs::path> snapshot = listed_snapshot(it->path());
        if (!snapshot) continue;
        try {
            const ModelConfig config = load_config((*snapshot / "config.json").string());
            out.push_back({*name, snapshot->string(), family_name(config.family)});
        } catch (const Error&) {
            // Not a RetNet (or an incomplete download): not something we can open.
        }
    }
    std::sort(out.begin(), out.end(), [](const CachedModel& a, const CachedModel& b) { return a.name < b.name; });
    return out;
}

}  // namespace retnet
