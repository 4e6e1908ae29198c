// SPDX-License-Identifier: GPL-3.0-or-later
// ORG/NAME[@REVISION] through a synthetic Hugging Face hub cache laid out as huggingface_hub writes
// it: blobs/<sha> files, snapshots/<commit>/<file> symlinks to ../../blobs/<sha>, refs/<rev> files.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "retnet/error.h"
#include "retnet/model.h"
#include "retnet/model_names.h"
#include "test_robustness_util.h"

namespace retnet {
namespace {
namespace fs = std::filesystem;
using robustness::ScratchDir;

const fs::path kFixtures = fs::path(RETNET_TEST_DATA_DIR) / "reference";
const std::string kCommitA = "0123456789abcdef0123456789abcdef01234567";
const std::string kCommitB = "89abcdef0123456789abcdef0123456789abcdef";

// models--ORG--NAME with the fixture's files as blobs behind symlinks, one snapshot per commit.
fs::path add_cached_repo(const fs::path& cache, const std::string& folder, const fs::path& fixture,
                         const std::vector<std::pair<std::string, std::string>>& refs) {
    const fs::path repo = cache / folder;
    fs::create_directories(repo / "blobs");
    fs::create_directories(repo / "refs");
    for (const auto& [ref, commit] : refs) {
        robustness::spit(repo / "refs" / ref, commit);  // huggingface_hub writes no newline
        const fs::path snapshot = repo / "snapshots" / commit;
        fs::create_directories(snapshot);
        for (const char* file : {"config.json", "model.safetensors"}) {
            const std::string blob = std::string(file) + "-" + commit.substr(0, 8);
            fs::copy_file(fixture / file, repo / "blobs" / blob, fs::copy_options::overwrite_existing);
            fs::create_symlink(fs::path("../../blobs") / blob, snapshot / file);
        }
    }
    return repo;
}

class ModelNames : public ::testing::Test {
protected:
    static constexpr const char* kVariables[] = {"HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME",
                                                 "HOME"};
    // The tests change the environment; the other tests of this process get theirs back.
    void TearDown() override {
        for (const auto& [var, value] : saved_)
            if (value) ::setenv(var, value->c_str(), 1); else ::unsetenv(var);
    }
    void SetUp() override {
        for (const char* var : kVariables) {
            const char* v = std::getenv(var);
            saved_.emplace_back(var, v ? std::optional<std::string>(v) : std::nullopt);
            if (std::string(var) != "HOME") ::unsetenv(var);
        }
        ::setenv("HF_HUB_CACHE", cache_.path().c_str(), 1);
        add_cached_repo(cache_.path(), "models--test-org--retnet-tiny", kFixtures / "fla_small",
                        {{"main", kCommitA}, {"v2", kCommitB}});
        add_cached_repo(cache_.path(), "models--test-org--ts-tiny", kFixtures / "ts_small", {{"main", kCommitA}});
        // Another architecture in the same cache: never listed.
        const fs::path llama = cache_.path() / "models--meta--llama" / "snapshots" / kCommitA;
        fs::create_directories(llama);
        robustness::spit(llama / "config.json", R"({"model_type": "llama", "hidden_size": 64})");
    }
    ScratchDir cache_{"hub_cache"};
    std::vector<std::pair<const char*, std::optional<std::string>>> saved_;
};

TEST(ModelNameParse, AcceptsNamesAndLeavesPathsAlone) {
    const auto plain = parse_model_name("fla-hub/retnet-1.3B-100B");
    ASSERT_TRUE(plain);
    EXPECT_EQ(plain->repo, "fla-hub/retnet-1.3B-100B");
    EXPECT_EQ(plain->revision, "main");
    const auto pinned = parse_model_name("org/name@v1.0");
    ASSERT_TRUE(pinned);
    EXPECT_EQ(pinned->revision, "v1.0");
    for (const char* path : {"/abs/dir", "./rel", "a/b/c", "models", "../x", "org/name@../../etc", ".hidden/x",
                             "org/", "/name", "org/name@", "org/-name", "org/name@-x", "org@x/name", "org/na me"})
        EXPECT_FALSE(parse_model_name(path)) << path;
    const auto branch = parse_model_name("org/name@release/v2_0.1");
    ASSERT_TRUE(branch);
    EXPECT_EQ(branch->revision, "release/v2_0.1");
    // A name of 200,000 characters (a std::regex overflowed the stack on ~26,000).
    const std::string huge(200000, 'a');
    const auto long_name = parse_model_name(huge + "/x");
    ASSERT_TRUE(long_name);
    EXPECT_EQ(long_name->repo.size(), huge.size() + 2);
    EXPECT_FALSE(parse_model_name(huge));
}

TEST_F(ModelNames, CacheDirectoryFollowsHuggingFaceHubPrecedence) {
    EXPECT_EQ(hub_cache_dir(), cache_.path().string());
    // Made-up roots (nothing is read there): only the path arithmetic is checked.
    const std::string root = cache_.path().string();
    ::unsetenv("HF_HUB_CACHE");
    ::setenv("HF_HOME", (root + "/hf").c_str(), 1);
    EXPECT_EQ(hub_cache_dir(), root + "/hf/hub");
    ::unsetenv("HF_HOME");
    ::setenv("XDG_CACHE_HOME", (root + "/xdg").c_str(), 1);
    EXPECT_EQ(hub_cache_dir(), root + "/xdg/huggingface/hub");
    ::unsetenv("XDG_CACHE_HOME");
    ::setenv("HOME", (root + "/home").c_str(), 1);
    EXPECT_EQ(hub_cache_dir(), root + "/home/.cache/huggingface/hub");
}

TEST_F(ModelNames, ResolvesRefsAndCommitsToSnapshots) {
    const fs::path repo = cache_.path() / "models--test-org--retnet-tiny";
    EXPECT_EQ(resolve_model_path("test-org/retnet-tiny"), (repo / "snapshots" / kCommitA).string());
    EXPECT_EQ(resolve_model_path("test-org/retnet-tiny@v2"), (repo / "snapshots" / kCommitB).string());
    EXPECT_EQ(resolve_model_path("test-org/retnet-tiny@" + kCommitB), (repo / "snapshots" / kCommitB).string());
    // Loads through the snapshot's symlinks with the fixture's values.
    const Model cached = load_model(resolve_model_path("test-org/retnet-tiny"));
    const Model direct = load_model((kFixtures / "fla_small").string());
    EXPECT_EQ(cached.weights.embed.data, direct.weights.embed.data);
    // And back: how a resolved snapshot is named again.
    EXPECT_EQ(cached_model_name(resolve_model_path("test-org/retnet-tiny@v2")), "test-org/retnet-tiny");
    EXPECT_EQ(cached_model_name((kFixtures / "fla_small").string()), std::nullopt);
    // An existing path wins, even one shaped like a name.
    EXPECT_EQ(resolve_model_path(kFixtures.string()), kFixtures.string());
}

TEST_F(ModelNames, AbsentNamesSayWhereTheyLookedAndHowToDownload) {
    try {
        resolve_model_path("fla-hub/retnet-1.3B-100B");
        FAIL() << "no error";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find((cache_.path() / "models--fla-hub--retnet-1.3B-100B").string()), std::string::npos) << what;
        EXPECT_NE(what.find("huggingface-cli download fla-hub/retnet-1.3B-100B"), std::string::npos) << what;
    }
    try {
        resolve_model_path("test-org/retnet-tiny@nope");
        FAIL() << "no error";
    } catch (const Error& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("refs/nope"), std::string::npos) << what;
        EXPECT_NE(what.find("huggingface-cli download test-org/retnet-tiny --revision nope"), std::string::npos)
            << what;
    }
    EXPECT_THROW(resolve_model_path("test-org/retnet-tiny@" + std::string(40, 'f')), Error);
}

// A ref holding anything but a commit hash (binary junk, a path leading out of snapshots/, nothing)
// is named as a damaged cache: never followed, never printed.
TEST_F(ModelNames, DamagedRefsAreRefusedNotFollowed) {
    const fs::path refs = cache_.path() / "models--test-org--retnet-tiny" / "refs";
    for (const std::string& junk : {std::string("../../models--test-org--ts-tiny/snapshots/") + kCommitA,
                                    std::string("\xff\xfe\x01garbage\n"), std::string()}) {
        robustness::spit(refs / "v2", junk);
        SCOPED_TRACE(junk);
        try {
            resolve_model_path("test-org/retnet-tiny@v2");
            FAIL() << "no error";
        } catch (const Error& e) {
            const std::string what = e.what();
            EXPECT_NE(what.find((refs / "v2").string() + " does not hold a commit hash"), std::string::npos) << what;
            EXPECT_EQ(what.find("garbage"), std::string::npos) << what;
        }
    }
    // A trailing newline (a hand-edited ref) is fine.
    robustness::spit(refs / "v2", kCommitB + "\n");
    EXPECT_EQ(resolve_model_path("test-org/retnet-tiny@v2"),
              (cache_.path() / "models--test-org--retnet-tiny" / "snapshots" / kCommitB).string());
    // A directory where the ref should be is named too.
    fs::remove(refs / "v2");
    fs::create_directory(refs / "v2");
    EXPECT_THROW(resolve_model_path("test-org/retnet-tiny@v2"), Error);
    // A damaged refs/main does not hide the model from the list when its only snapshot is there.
    robustness::spit(cache_.path() / "models--test-org--ts-tiny" / "refs" / "main", "nonsense");
    bool listed = false;
    for (const CachedModel& m : list_cached_models()) listed |= m.name == "test-org/ts-tiny";
    EXPECT_TRUE(listed);
}

// A name whose revision is refused (escaping refs/, empty, odd characters) says so instead of
// failing later as a path ("…@../../x/config.json: cannot open").
TEST_F(ModelNames, RefusedRevisionsAreNamed) {
    for (const std::string& text : {std::string("test-org/retnet-tiny@../../x"), std::string("test-org/retnet-tiny@"),
                                    std::string("test-org/retnet-tiny@a b"), std::string("test-org/retnet-tiny@main@v2")}) {
        SCOPED_TRACE(text);
        try {
            resolve_model_path(text);
            FAIL() << "no error";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find("' is not a revision"), std::string::npos) << e.what();
        }
    }
}

TEST_F(ModelNames, ListsOnlyRetNetModels) {
    const std::vector<CachedModel> models = list_cached_models();
    ASSERT_EQ(models.size(), 2u);
    EXPECT_EQ(models[0].name, "test-org/retnet-tiny");
    EXPECT_EQ(models[0].family, "fla");
    EXPECT_EQ(models[0].directory,
              (cache_.path() / "models--test-org--retnet-tiny" / "snapshots" / kCommitA).string());
    EXPECT_EQ(models[1].name, "test-org/ts-tiny");
    EXPECT_EQ(models[1].family, "torchscale");
}

TEST_F(ModelNames, CliTakesNamesForModel) {
    const auto ok = robustness::run_retnet({"info", "--model", "test-org/ts-tiny"});
    EXPECT_EQ(ok.exit_code, 0) << ok.err;
    EXPECT_NE(ok.out.find("torchscale"), std::string::npos) << ok.out;
    const auto eq = robustness::run_retnet({"info", "--model=test-org/retnet-tiny@v2"});
    EXPECT_EQ(eq.exit_code, 0) << eq.err;
    const auto missing = robustness::run_retnet({"info", "--model", "fla-hub/retnet-1.3B-100B"});
    EXPECT_EQ(missing.exit_code, 1);
    EXPECT_EQ(missing.err_lines(), 1) << missing.err;
    EXPECT_NE(missing.err.find("huggingface-cli download fla-hub/retnet-1.3B-100B"), std::string::npos)
        << missing.err;
}

}  // namespace
}  // namespace retnet
