// SPDX-License-Identifier: GPL-3.0-or-later
// On-device sampling against a host twin of the same definition: candidates sorted by logit
// (ties: smaller id first), top-k, the shortest nucleus reaching top_p, inverse CDF with the given
// uniform u; greedy picks the smallest index of the maximum. The twin forms the exponent in float
// and sums in double exactly as the kernel does, so the chosen ids must be equal.
#include <gtest/gtest.h>

#include <numeric>

#include "cuda_test_util.h"
#include "ops.h"

namespace retnet::cuda::test {
namespace {

int sample_twin(const std::vector<float>& logits, float temperature, int top_k, float top_p, float u) {
    const int V = static_cast<int>(logits.size());
    const float max_logit = *std::max_element(logits.begin(), logits.end());
    if (temperature <= 0.0f) return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    const float inv_temp = 1.0f / temperature;
    auto weight = [&](int i) { return std::exp(static_cast<double>((logits[i] - max_logit) * inv_temp)); };
    if (top_k <= 0 && top_p >= 1.0f && V > 1024) {
        double Z = 0;
        for (int i = 0; i < V; ++i) Z += weight(i);
        double cum = 0;
        for (int i = 0; i < V; ++i) {
            cum += weight(i);
            if (cum > u * Z) return i;
        }
        return V - 1;
    }
    std::vector<int> order(static_cast<size_t>(V));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
    const int K = std::min({top_k > 0 ? top_k : 1024, 1024, V});
    double Z = 0;
    for (int i = 0; i < K; ++i) Z += weight(order[i]);
    int keep = K;
    if (top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < K; ++i) {
            cum += weight(order[i]);
            if (cum >= double(top_p) * Z) {
                keep = i + 1;
                break;
            }
        }
    }
    double Zk = 0;
    for (int i = 0; i < keep; ++i) Zk += weight(order[i]);
    double cum = 0;
    for (int i = 0; i < keep; ++i) {
        cum += weight(order[i]);
        if (cum > u * Zk) return order[i];
    }
    return order[keep - 1];
}

class SamplingTest : public CudaTest {
protected:
    int sample(const DeviceBuffer<float>& d_logits, int V, float temperature, int top_k, float top_p, float u) {
        DeviceBuffer<int32_t> d_token(1);
        launch_sample_top_k_top_p(d_logits.get(), V, temperature, top_k, top_p, u, d_token.get(), stream());
        return to_host(d_token, stream())[0];
    }
};

TEST_F(SamplingTest, MatchesTwinOverSettingsAndDraws) {
    for (int V : {100, 32000}) {
        std::mt19937_64 rng(static_cast<uint64_t>(V));
        std::normal_distribution<float> dist(0.0f, 3.0f);
        std::vector<float> logits(static_cast<size_t>(V));
        for (float& l : logits) l = dist(rng);
        auto d_logits = to_device(logits, stream());
        struct Setting {
            float temperature;
            int top_k;
            float top_p;
        };
        for (const Setting s : {Setting{0.0f, 0, 1.0f}, Setting{1.0f, 1, 1.0f}, Setting{0.8f, 50, 1.0f},
                                Setting{1.0f, 0, 0.9f}, Setting{1.3f, 40, 0.5f}, Setting{1.0f, 0, 1.0f},
                                Setting{0.7f, 2000, 0.95f}}) {
            for (float u : {0.001f, 0.25f, 0.5f, 0.77f, 0.999f}) {
                const int expected = sample_twin(logits, s.temperature, s.top_k, s.top_p, u);
                EXPECT_EQ(sample(d_logits, V, s.temperature, s.top_k, s.top_p, u), expected)
                    << "V=" << V << " T=" << s.temperature << " k=" << s.top_k << " p=" << s.top_p << " u=" << u;
            }
        }
    }
}

TEST_F(SamplingTest, GreedyTiesPickTheSmallestIndexAndTopKStaysInTopK) {
    std::vector<float> logits(5000, -1.0f);
    logits[4000] = 3.0f;
    logits[1234] = 3.0f;
    logits[17] = 2.5f;
    auto d_logits = to_device(logits, stream());
    EXPECT_EQ(sample(d_logits, 5000, 0.0f, 0, 1.0f, 0.5f), 1234);
    for (float u : {0.0f, 0.3f, 0.6f, 0.9999f}) {
        const int id = sample(d_logits, 5000, 1.0f, 3, 1.0f, u);
        EXPECT_TRUE(id == 1234 || id == 4000 || id == 17) << id;
    }
}

}  // namespace
}  // namespace retnet::cuda::test
