// SPDX-License-Identifier: GPL-3.0-or-later
// The end of a forward: the logits' copies to host memory (pinned pieces, each range copied out as
// soon as its piece has arrived) and the device time the backend reports for the forward.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <numeric>
#include <span>
#include <vector>

#include "cuda_test_util.h"
#include "decode_scenario.h"
#include "host_downloads.h"
#include "retnet/cuda/backend_cuda.h"
#include "retnet/model.h"

namespace retnet::cuda::test {
namespace {

struct HostRange {
    size_t device_offset, count;
};

// Every range lands whole and unchanged, whatever the layout: 70 rows of a batch's logits side by
// side (8.96 MB: many pinned pieces), a range straddling piece boundaries with an odd length, one
// apart from its neighbours on the device, an empty one, and ranges of a single value. The same
// downloads are made again (pinned memory and events reused), then with fewer ranges.
TEST_F(CudaTest, HostDownloadsLandEveryRangeWhole) {
    constexpr size_t kRow = 32000, kRows = 70;
    std::vector<float> values(kRows * kRow + 400000);
    std::iota(values.begin(), values.end(), 0.5f);  // distinct and exact (below 2^23)
    const DeviceBuffer<float> device = to_device(values, stream());

    std::vector<HostRange> layout;
    for (size_t r = 0; r < kRows; ++r) layout.push_back({r * kRow, kRow});
    layout.push_back({kRows * kRow + 17, 131073});   // not after the row before it: a run of its own
    layout.push_back({kRows * kRow + 131090, 0});    // empty
    layout.push_back({kRows * kRow + 131090, 1});
    layout.push_back({kRows * kRow + 300000, 1});    // a gap before it
    layout.push_back({kRows * kRow + 300001, 99999});

    HostDownloads downloads;
    for (size_t ranges : {layout.size(), layout.size(), size_t{3}}) {
        std::vector<std::vector<float>> host(ranges);
        for (size_t i = 0; i < ranges; ++i) {
            host[i].assign(layout[i].count, -1.0f);
            downloads.add(device.get() + layout[i].device_offset, host[i].data(), layout[i].count);
        }
        downloads.finish(stream());
        for (size_t i = 0; i < ranges; ++i) {
            const auto first = values.begin() + static_cast<std::ptrdiff_t>(layout[i].device_offset);
            ASSERT_EQ(host[i], std::vector<float>(first, first + static_cast<std::ptrdiff_t>(layout[i].count)))
                << "range " << i << " of " << ranges;
        }
    }
}

// Beyond the pinned buffer's limit (64 MB) the copies go straight to the host's pages.
TEST_F(CudaTest, HostDownloadsOfMoreThanThePinnedLimitLandWhole) {
    const size_t n = (size_t{64} << 20) / sizeof(float) + 12345;
    std::vector<float> values(n);
    for (size_t i = 0; i < n; ++i) values[i] = static_cast<float>(i % 1000003);
    const DeviceBuffer<float> device = to_device(values, stream());
    std::vector<float> host(n, -1.0f);
    HostDownloads downloads;
    downloads.add(device.get(), host.data(), n);
    downloads.finish(stream());
    EXPECT_EQ(host, values);
}

// A forward reports its own device time: none before the first, then a positive one no longer than
// the wall time around the call, eager and replayed alike.
TEST_F(CudaTest, ForwardReportsItsDeviceTime) {
    auto model = std::make_shared<const Model>(make_random_model(small_decode_config(Family::Fla), 3));
    for (bool graphs : {false, true}) {
        CudaOptions options;
        options.cuda_graphs = graphs;
        auto backend = make_cuda_backend(model, options);
        EXPECT_LT(backend->last_forward_device_ms(), 0.0);
        const std::vector<int32_t> prompt = tokens_of(5, 1);
        ForwardOptions step;
        step.form = Form::Recurrent;
        for (int i = 0; i < 4; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            const std::vector<Tensor> logits = backend->forward_batch(
                std::vector<SequenceRequest>{{std::span(prompt).subspan(static_cast<size_t>(i), 1), 0, LogitRows::Last}}, step);
            const double wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
            ASSERT_EQ(logits.size(), 1u);
            const double device_ms = backend->last_forward_device_ms();
            EXPECT_GT(device_ms, 0.0) << "step " << i << (graphs ? " (graphs)" : "");
            EXPECT_LE(device_ms, wall_ms) << "step " << i << (graphs ? " (graphs)" : "");
        }
    }
}

}  // namespace
}  // namespace retnet::cuda::test
