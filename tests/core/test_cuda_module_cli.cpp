// SPDX-License-Identifier: GPL-3.0-or-later
// The CUDA backend as a module the CLI loads on first use (retnet/cuda/module.h): a run on the CPU
// never loads it; a module that is missing, broken or from another build is a one-line notice and
// the CPU backend (or a one-line error where there is no CPU fallback: training); the module built
// beside the program loads into it (every engine symbol it needs found in the program).
#include <gtest/gtest.h>

#include <dlfcn.h>
#include <sys/stat.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "test_robustness_util.h"

namespace retnet {
namespace {

using namespace robustness;

#ifdef RETNET_FAKE_CUDA_MODULE

const fs::path& bundled_model() {
    static const fs::path dir = fs::path(RETNET_TEST_DATA_DIR) / ".." / ".." / "resources" / "models" / "default";
    return dir;
}

CliResult generate_on(const std::string& device, std::vector<std::pair<std::string, std::string>> environment) {
    return run_retnet({"generate", "--model", bundled_model().string(), "-p", "ROMEO:", "-n", "2", "--greedy",
                       "--device", device},
                      120, 0, ChildSetup{"", "", 0, std::move(environment)});
}

std::string fallback_notice(const std::string& why) { return "retnet: CUDA unavailable (" + why + "); using the CPU backend\n"; }

TEST(CudaModule, ARunOnTheCpuNeverLoadsIt) {
    ScratchDir dir("cuda_module_mark");
    const fs::path mark = dir.path() / "loaded";
    const std::vector<std::pair<std::string, std::string>> environment = {
        {"RETNET_CUDA_MODULE", RETNET_FAKE_CUDA_MODULE}, {"RETNET_FAKE_MODULE_MARK", mark.string()}};
    const CliResult cpu = generate_on("cpu", environment);
    EXPECT_EQ(cpu.exit_code, 0) << cpu.err;
    EXPECT_EQ(run_retnet({"--version"}, 60, 0, ChildSetup{"", "", 0, environment}).exit_code, 0);
    std::ofstream(dir.path() / "text.txt") << std::string(40, 'a') + "\n" + std::string(2000, 'b');
    const CliResult train = run_retnet(
        {"train", "--device", "cpu", "--config", (bundled_model() / "config.json").string(), "--tokenizer",
         (bundled_model() / "tokenizer.model").string(), "--data", (dir.path() / "text.txt").string(), "--out",
         (dir.path() / "run").string(), "--steps", "1", "--batch", "1", "--seq-len", "16", "--eval-every", "0"},
        120, 0, ChildSetup{"", "", 0, environment});
    EXPECT_EQ(train.exit_code, 0) << train.err;
    EXPECT_FALSE(fs::exists(mark)) << "a command on the CPU loaded the CUDA module";

    const CliResult cuda = generate_on("cuda", environment);
    EXPECT_EQ(cuda.exit_code, 0) << cuda.err;
    EXPECT_TRUE(fs::exists(mark));
    EXPECT_EQ(cuda.err.rfind("retnet: CUDA unavailable (" + std::string(RETNET_FAKE_CUDA_MODULE) +
                                 " is from another build of retnet (build another-build, this program ",
                             0),
              0u)
        << cuda.err;
    EXPECT_NE(cuda.err.find("): rebuild or reinstall both); using the CPU backend\n"), std::string::npos) << cuda.err;
}

TEST(CudaModule, AMissingOrBrokenModuleIsTheCpuWithTheReason) {
    ScratchDir dir("cuda_module_broken");
    const fs::path text = dir.path() / "libretnet-cuda.so";
    std::ofstream(text) << std::string(4096, 'x');  // longer than an ELF header
    // A FIFO blocked dlopen for ever, and a truncated module was SIGBUS (its segments mapped past
    // the end of the file): both are refused before dlopen.
    const fs::path fifo = dir.path() / "fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    const fs::path truncated = dir.path() / "truncated.so";
    {
        std::ifstream real(RETNET_CUDA_MODULE_PATH, std::ios::binary);
        std::string head(100000, '\0');
        real.read(head.data(), static_cast<std::streamsize>(head.size()));
        std::ofstream(truncated, std::ios::binary) << head;
    }
    const std::pair<std::string, std::string> cases[] = {
        {"/nonexistent/libretnet-cuda.so", "/nonexistent/libretnet-cuda.so: No such file or directory"},
        {"", "RETNET_CUDA_MODULE is set but empty"},
        {text.string(), text.string() + ": not an ELF shared object"},
        {"/dev/null", "/dev/null: not a regular file"},
        {"/tmp", "/tmp: not a regular file"},
        {fifo.string(), fifo.string() + ": not a regular file"},
        {truncated.string(), truncated.string() + ": truncated (100000 bytes)"},
        // its entry point's name on data: calling it was a crash
        {RETNET_FAKE_CUDA_MODULE_DATA,
         RETNET_FAKE_CUDA_MODULE_DATA " is not a RetNet CUDA module (its retnet_cuda_module_api is not a function)"},
    };
    for (const auto& [module, why] : cases) {
        const CliResult r = generate_on("cuda-bf16", {{"RETNET_CUDA_MODULE", module}});
        EXPECT_EQ(r.exit_code, 0) << module << ": " << r.err;
        EXPECT_EQ(r.signal, 0);
        EXPECT_EQ(r.err.rfind(fallback_notice(why), 0), 0u) << r.err;
    }
    // The kernel benchmark times the GPU itself: the reason is its one-line error, no fallback.
    const CliResult kernels = run_retnet({"bench", "--model", bundled_model().string(), "--mode", "kernels", "--device", "cuda"},
                                         120, 0, ChildSetup{"", "", 0, {{"RETNET_CUDA_MODULE", "/nonexistent/m.so"}}});
    EXPECT_EQ(kernels.exit_code, 1) << kernels.err;
    EXPECT_EQ(kernels.err, "retnet bench: error: CUDA unavailable (/nonexistent/m.so: No such file or directory)\n");
    // Training has no CPU fallback: the reason, in one line, before any weights are drawn.
    const CliResult train = run_retnet({"train", "--device", "cuda", "--config", (bundled_model() / "config.json").string(),
                                        "--tokenizer", (bundled_model() / "tokenizer.model").string(), "--data",
                                        (bundled_model() / ".." / ".." / "data" / "tinyshakespeare.txt").string(), "--out",
                                        (dir.path() / "run").string(), "--steps", "1"},
                                       120, 0, ChildSetup{"", "", 0, {{"RETNET_CUDA_MODULE", "/nonexistent/m.so"}}});
    EXPECT_EQ(train.exit_code, 1) << train.err;
    EXPECT_EQ(train.err_lines(), 1) << train.err;
    EXPECT_NE(train.err.find("CUDA unavailable (/nonexistent/m.so: No such file or directory)"), std::string::npos)
        << train.err;
}

// --dtype on a GPU that falls back to the CPU: the CPU converts the weights itself (the fall back
// kept them as stored, while the report said the --dtype asked for).
TEST(CudaModule, ADtypeIsAppliedAfterTheFallBackToTheCpu) {
    for (const auto& [dtype, weights] : {std::pair{"fp32", "fp32"}, std::pair{"stored", "bf16"}}) {
        const CliResult r = run_retnet({"bench", "--model", bundled_model().string(), "--device", "cuda", "--dtype", dtype,
                                        "--mode", "prefill", "--lengths", "3", "--repeats", "1", "--json"},
                                       120, 0, ChildSetup{"", "", 0, {{"RETNET_CUDA_MODULE", "/nonexistent/m.so"}}});
        ASSERT_EQ(r.exit_code, 0) << r.err;
        const nlohmann::json report = nlohmann::json::parse(r.out);
        EXPECT_EQ(report["device"], "cpu");
        EXPECT_EQ(report["dtype"], dtype);
        EXPECT_EQ(report["weights"], weights) << dtype;  // the bundled model is stored in bf16
    }
    // cuda-bf16 asks for bf16 weights by its name: the CPU it falls back to computes with them too
    // (before, a float32 model stayed float32 there without a word).
    const std::string fp32_model = std::string(RETNET_TEST_DATA_DIR) + "/reference/fla_small";
    const CliResult r = run_retnet({"bench", "--model", fp32_model, "--device", "cuda-bf16", "--mode", "prefill",
                                    "--lengths", "3", "--repeats", "1", "--json"},
                                   120, 0, ChildSetup{"", "", 0, {{"RETNET_CUDA_MODULE", "/nonexistent/m.so"}}});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out)["weights"], "bf16");
}

TEST(CudaModule, TheBuiltModuleLoadsIntoTheProgram) {
    // Named explicitly: loaded with every symbol bound at once, so an engine symbol the program does
    // not export would be "undefined symbol" here. What remains to say is the machine's (no GPU, no
    // driver), or nothing where a GPU is present.
    const CliResult r = generate_on("cuda", {{"RETNET_CUDA_MODULE", RETNET_CUDA_MODULE_PATH}});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    for (const char* loader_problem : {"libretnet-cuda", "undefined symbol", "another build", "cannot open"})
        EXPECT_EQ(r.err.find(loader_problem), std::string::npos) << r.err;
}

// The module beside the program is loaded only where the NVIDIA driver library loads and reports a
// device: on a machine without a driver the notice is the driver's, and the module (with cuBLAS,
// ~200 MB of mappings) is never mapped. Where there is a driver, the module loads as above.
TEST(CudaModule, WithoutADriverTheModuleBesideTheProgramIsNotLoaded) {
    if (void* driver = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL)) {
        dlclose(driver);
        const CliResult r = generate_on("cuda", {});
        EXPECT_EQ(r.exit_code, 0) << r.err;
        for (const char* loader_problem : {"libretnet-cuda", "undefined symbol", "another build"})
            EXPECT_EQ(r.err.find(loader_problem), std::string::npos) << r.err;
        GTEST_SKIP() << "this machine has an NVIDIA driver: the module was loaded";
    }
    const CliResult r = generate_on("cuda", {});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.err.rfind(fallback_notice("no usable CUDA driver (libcuda.so.1: cannot open shared object file: No "
                                          "such file or directory)"),
                          0),
              0u)
        << r.err;
}

#endif  // RETNET_FAKE_CUDA_MODULE

}  // namespace
}  // namespace retnet
