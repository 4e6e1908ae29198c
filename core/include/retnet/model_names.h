// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Model names as Hugging Face writes them, `ORG/NAME[@REVISION]`, resolved through the local
// Hugging Face hub cache (what `huggingface-cli download` and transformers fill) to the snapshot
// directory that holds the files. Nothing is ever downloaded. See docs/model-format.md.
#include <optional>
#include <string>
#include <vector>

namespace retnet {

// The hub cache directory, as huggingface_hub chooses it: $HF_HUB_CACHE, else the legacy
// $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub. The directory need not exist.
std::string hub_cache_dir();

struct ModelName {
    std::string repo;      // "fla-hub/retnet-1.3B-100B"
    std::string revision;  // "main" when none is given; a branch, tag or 40-hex commit
};

// Parses `ORG/NAME[@REVISION]`; nullopt when `text` does not have that shape (e.g. "./dir", "/x/y",
// "a/b/c"), so that ordinary paths are never taken for names.
std::optional<ModelName> parse_model_name(const std::string& text);

// `path_or_name` unchanged when it exists on disk or is not shaped like a name; otherwise the
// cache's snapshot directory for that name (refs/<revision> → snapshots/<commit>, or a 40-hex
// revision directly). Throws retnet::Error with one line naming where it looked and the
// `huggingface-cli download` command when the name is not in the cache.
std::string resolve_model_path(const std::string& path_or_name);

// "ORG/NAME" when `directory` is a snapshot of the cache (…/models--ORG--NAME/snapshots/<commit>),
// else nullopt: how a resolved name is shown again (e.g. `retnet serve`'s model id).
std::optional<std::string> cached_model_name(const std::string& directory);

struct CachedModel {
    std::string name;       // "ORG/NAME"
    std::string directory;  // the snapshot of refs/main (or of the only snapshot)
    std::string family;     // "fla" or "torchscale"
};

// The RetNet models in the cache (those whose config.json parses as either family), sorted by
// name; models of other architectures and incomplete downloads are left out.
std::vector<CachedModel> list_cached_models(const std::string& cache_dir = hub_cache_dir());

}  // namespace retnet
