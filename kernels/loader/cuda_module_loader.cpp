// SPDX-License-Identifier: GPL-3.0-or-later
// Finds and loads libretnet-cuda.so (retnet/cuda/module.h). Plain C++ and POSIX: this part is
// linked into the CLI and the app, which then never link cuBLAS themselves.
#include <dlfcn.h>
#include <elf.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "retnet/cuda/module.h"
#include "retnet/error.h"
#include "retnet/forward.h"
#include "retnet/train_device.h"

namespace retnet::cuda {
namespace {
namespace fs = std::filesystem;

constexpr const char* kModuleFile = "libretnet-cuda.so";

struct Loaded {
    const ModuleApi* api = nullptr;
    std::string why;  // when api is null
};

// dlerror()'s text (retnet::Error escapes what could break its line).
std::string loader_error() {
    const char* text = dlerror();
    return text ? text : "unknown dlopen error";
}

// Why `path` cannot be given to dlopen, or "". dlopen blocks for ever on a FIFO, and maps the
// segments of a truncated file past its end: the first touch of those pages is SIGBUS. So the file
// must be a regular 64-bit ELF file whose loadable segments lie within it.
std::string unloadable(const fs::path& path) {
    std::error_code ec;
    const fs::file_status status = fs::status(path, ec);
    if (ec) return path.string() + ": " + ec.message();
    if (!fs::is_regular_file(status)) return path.string() + ": not a regular file";
    const uintmax_t size = fs::file_size(path, ec);
    std::ifstream in(path, std::ios::binary);
    Elf64_Ehdr header{};
    if (ec || !in.read(reinterpret_cast<char*>(&header), sizeof header))
        return path.string() + ": not an ELF shared object (too short or unreadable)";
    if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) return path.string() + ": not an ELF shared object";
    if (header.e_ident[EI_CLASS] != ELFCLASS64 || header.e_phentsize != sizeof(Elf64_Phdr))
        return path.string() + ": not a 64-bit ELF shared object";
    const std::string truncated = path.string() + ": truncated (" + std::to_string(size) + " bytes)";
    if (header.e_phoff > size || header.e_phnum > (size - header.e_phoff) / sizeof(Elf64_Phdr)) return truncated;
    in.seekg(static_cast<std::streamoff>(header.e_phoff));
    for (int i = 0; i < header.e_phnum; ++i) {
        Elf64_Phdr segment{};
        if (!in.read(reinterpret_cast<char*>(&segment), sizeof segment)) return truncated;
        if (segment.p_type == PT_LOAD && (segment.p_offset > size || segment.p_filesz > size - segment.p_offset))
            return truncated;
    }
    return "";
}

// Whether the loaded symbol at `address` is a function (its ELF symbol's type).
bool is_function(void* address) {
    Dl_info info{};
    void* entry = nullptr;  // its Elf64_Sym
    if (!dladdr1(address, &info, &entry, RTLD_DL_SYMENT) || !entry) return false;
    return ELF64_ST_TYPE(static_cast<const Elf64_Sym*>(entry)->st_info) == STT_FUNC;
}

Loaded load_from(const fs::path& path) {
    if (std::string why = unloadable(path); !why.empty()) return {nullptr, why};
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) return {nullptr, loader_error()};
    using Entry = const ModuleApi* (*)();
    void* symbol = dlsym(handle, "retnet_cuda_module_api");
    if (!symbol) {
        dlclose(handle);
        return {nullptr, path.string() + " is not a RetNet CUDA module"};
    }
    if (!is_function(symbol)) {  // calling data of that name would jump into it
        dlclose(handle);
        return {nullptr, path.string() + " is not a RetNet CUDA module (its retnet_cuda_module_api is not a function)"};
    }
    const auto entry = reinterpret_cast<Entry>(symbol);
    const ModuleApi* api = entry();
    const std::string build = api && api->build_id ? api->build_id : "?";  // copied: dlclose unmaps it
    if (build != RETNET_BUILD_ID) {
        // The module runs on this program's classes: one from another build could misread them.
        dlclose(handle);
        return {nullptr, path.string() + " is from another build of retnet (build " + build +
                             ", this program " RETNET_BUILD_ID "): rebuild or reinstall both"};
    }
    return {api, ""};  // kept loaded for the life of the process
}

// Why no GPU can be used, asked of the NVIDIA driver library itself before the module is loaded
// (the module brings cuBLAS: ~200 MB of mappings and ~60 ms that a machine without a GPU would pay
// for a notice), or "" when there is a device or the driver's own error is better told by the
// module (which names it). Only the driver's C entry points, by dlsym: no CUDA headers here. The
// driver stays loaded: it is not unloaded safely once initialized.
std::string no_gpu_here() {
    void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!driver) return "no usable CUDA driver (" + loader_error() + ")";
    using Init = int (*)(unsigned);
    using DeviceCount = int (*)(int*);
    const auto init = reinterpret_cast<Init>(dlsym(driver, "cuInit"));
    const auto device_count = reinterpret_cast<DeviceCount>(dlsym(driver, "cuDeviceGetCount"));
    if (!init || !device_count) return "";
    constexpr int kSuccess = 0, kNoDevice = 100;  // CUDA_SUCCESS, CUDA_ERROR_NO_DEVICE
    const int status = init(0);
    int count = 0;
    if (status == kNoDevice || (status == kSuccess && device_count(&count) == kSuccess && count == 0))
        return "no CUDA device found";
    return "";
}

Loaded load() {
    if (const char* chosen = std::getenv("RETNET_CUDA_MODULE")) {
        if (*chosen == '\0') return {nullptr, "RETNET_CUDA_MODULE is set but empty"};
        std::error_code ec;
        const fs::path path = fs::absolute(chosen, ec);  // dlopen searches the library path for a bare name
        if (ec) return {nullptr, "RETNET_CUDA_MODULE: " + ec.message()};
        return load_from(path);
    }
    if (std::string why = no_gpu_here(); !why.empty()) return {nullptr, why};
    std::error_code ec;
    const fs::path program = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return {nullptr, std::string("cannot find this program's directory (/proc/self/exe: ") + ec.message() + ")"};
    // Beside the program (the build tree), then the install's library directory.
    const std::vector<fs::path> places = {program.parent_path() / kModuleFile,
                                          (program.parent_path() / RETNET_CUDA_MODULE_INSTALL_REL / kModuleFile)
                                              .lexically_normal()};
    for (const fs::path& place : places)
        if (fs::exists(place, ec)) return load_from(place);
    return {nullptr, std::string(kModuleFile) + " was found neither beside this program nor in " +
                         places.back().parent_path().string()};
}

const Loaded& loaded() {
    static const Loaded once = load();  // thread-safe initialization
    return once;
}

void register_stand_ins(const std::string& why) {
    const std::string reason = "CUDA unavailable (" + why + ")";
    for (const char* name : kCudaBackends)
        register_backend(name, [reason](std::shared_ptr<const Model>) -> std::unique_ptr<Backend> { throw Error(reason); });
    for (const char* name : kCudaTrainDevices)
        train::register_train_device(name, [reason](const ModelConfig&, const train::ParamLayout&,
                                                    const train::TrainDeviceOptions&) -> std::unique_ptr<train::TrainDevice> {
            throw Error(reason);
        });
}

}  // namespace

const ModuleApi* cuda_module(std::string* why) {
    const Loaded& l = loaded();
    if (!l.api && why) *why = l.why;
    return l.api;
}

const ModuleApi& cuda_module_or_throw() {
    std::string why;
    if (const ModuleApi* api = cuda_module(&why)) return *api;
    throw Error("CUDA unavailable (" + why + ")");
}

void install_cuda_module_loader() {
    set_device_loader([] {
        std::string why;
        if (const ModuleApi* api = cuda_module(&why)) api->register_devices();
        else register_stand_ins(why);
    });
}

}  // namespace retnet::cuda
