// SPDX-License-Identifier: GPL-3.0-or-later
// The Transformer twin's attention kernels (kernels/src/attention.h) against a naive double twin:
// the rotated rows they append to the KV cache, the prefill's causal attention (one row, odd T,
// T across several partial blocks, a cache already holding keys), the batched split-K decode
// (sequences of different lengths in one call, ranges shorter than, equal to and longer than one
// step of a CTA, many empty splits), decode after prefill against prefill of the whole sequence,
// and a CUDA graph replay of the decode step against eager launches, bit for bit.
//
// Errors are measured as max|o − o_ref| / max|v|: an output row is a convex combination of value
// rows, so max|v| is its natural scale (and does not shrink as attention spreads over more keys).
#include <gtest/gtest.h>

#include <cuda_bf16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "attention.h"
#include "cuda_test_util.h"
#include "naive_ops.h"

namespace retnet::cuda::test {
namespace {

// fp32 arithmetic against the double twin: a score is a dot product of D ≤ 256 terms of size
// ~|q|·|k|·scale ≤ 4/√D, whose rounding error is ~u·√D·(typical partial sum) ≈ 1e-6 at u = 2⁻²⁴;
// it moves p by the same relative amount, and the sums over keys and splits add a few u more.
// 2e-5 leaves an order of magnitude of margin yet fails on any indexing or masking slip (O(0.1)).
constexpr double kF32Tol = 2e-5;
// bf16 prefill: P is rounded to bf16 (unit roundoff u = 2⁻⁸) before P·V, so each term p_j·v_j
// moves by at most u·p_j·|v_j| and the output by at most u·Σp_j·max|v| = u·max|v| (Σp_j = 1),
// plus the fp32 terms above. The inputs the twin sees (cache rows, bf16-rounded q) are the
// kernels' own, so nothing else differs.
constexpr double kBf16PTol = 1.0 / 256 + kF32Tol;
constexpr float kSentinel = 1024.0f;  // exact in bf16: a cache row no kernel should have written
constexpr float kQueryRange = 4.0f;   // q ∈ [−4, 4]: scores of std ≈ 1.3, attention neither flat nor one-hot

using bf16 = __nv_bfloat16;

const char* dtype_name(KvDtype d) { return d == KvDtype::BF16 ? "bf16" : "fp32"; }

std::vector<float> llama_theta(int D) {  // θ_i = 10000^(−2i/D)
    std::vector<float> theta(static_cast<size_t>(D / 2));
    for (int i = 0; i < D / 2; ++i) theta[static_cast<size_t>(i)] = static_cast<float>(std::pow(10000.0, -2.0 * i / D));
    return theta;
}

// Rows (T, H·D) rotated at positions pos0 + t, Llama's pairs (i, i + D/2), in double.
naive::Vec rotate_rows(const std::vector<float>& x, const std::vector<float>& theta, int T, int H, int D,
                       int64_t pos0) {
    naive::Vec y(x.size());
    const int half = D / 2;
    for (int t = 0; t < T; ++t)
        for (int h = 0; h < H; ++h)
            for (int i = 0; i < half; ++i) {
                const size_t a = (static_cast<size_t>(t) * H + h) * D + i, b = a + half;
                const float angle = static_cast<float>(pos0 + t) * theta[static_cast<size_t>(i)];
                const double c = std::cos(double(angle)), s = std::sin(double(angle));
                y[a] = x[a] * c - x[b] * s;
                y[b] = x[b] * c + x[a] * s;
            }
    return y;
}

// What the kernels score with: the rotation rounded to float, and to bf16 for bf16 caches.
std::vector<float> as_operand(const naive::Vec& x, KvDtype dtype) {
    std::vector<float> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        y[i] = static_cast<float>(x[i]);
        if (dtype == KvDtype::BF16) y[i] = round_to_bf16(y[i]);
    }
    return y;
}

// o (R, H·D): row r attends cache rows [0, keys[r]) of K, V (rows of H·D), scores q·k·scale.
naive::Vec attention_twin(const std::vector<float>& q, const std::vector<float>& K, const std::vector<float>& V,
                          const std::vector<int64_t>& keys, int H, int D, double scale) {
    const size_t HD = static_cast<size_t>(H) * D;
    naive::Vec o(keys.size() * HD, 0.0);
    for (size_t r = 0; r < keys.size(); ++r)
        for (int h = 0; h < H; ++h) {
            const size_t off = static_cast<size_t>(h) * D;
            std::vector<double> s(static_cast<size_t>(keys[r]));
            double m = -INFINITY, L = 0.0;
            for (size_t j = 0; j < s.size(); ++j) {
                double dot = 0.0;
                for (int d = 0; d < D; ++d) dot += double(q[r * HD + off + d]) * K[j * HD + off + d];
                s[j] = dot * scale;
                m = std::max(m, s[j]);
            }
            for (size_t j = 0; j < s.size(); ++j) {
                const double w = std::exp(s[j] - m);
                L += w;
                for (int d = 0; d < D; ++d) o[r * HD + off + d] += w * V[j * HD + off + d];
            }
            for (int d = 0; d < D; ++d) o[r * HD + off + d] /= L;
        }
    return o;
}

// max|got − ref| / max|v| (see the top of the file)
double attention_error(const std::vector<float>& got, const naive::Vec& ref, const std::vector<float>& V) {
    double err = 0.0, scale = 0.0;
    EXPECT_EQ(got.size(), ref.size());
    for (size_t i = 0; i < std::min(got.size(), ref.size()); ++i) {
        if (!std::isfinite(got[i])) return INFINITY;
        err = std::max(err, std::abs(double(got[i]) - ref[i]));
    }
    for (float x : V) scale = std::max(scale, double(std::abs(x)));
    return err / scale;
}

// One sequence's K and V caches on the device, (capacity, H, D) each in `dtype`: rows [0, filled)
// random (exact in the dtype), the rest the sentinel.
class Cache {
public:
    Cache(KvDtype dtype, int64_t capacity, int H, int D, int64_t filled, uint64_t seed, cudaStream_t stream)
        : dtype_(dtype), row_(static_cast<size_t>(H) * D), rows_(static_cast<size_t>(capacity)) {
        for (int which = 0; which < 2; ++which) {
            std::vector<float> host(rows_ * row_, kSentinel);
            const auto fill = random_vector(static_cast<size_t>(filled) * row_, seed + which);
            for (size_t i = 0; i < fill.size(); ++i) host[i] = dtype == KvDtype::BF16 ? round_to_bf16(fill[i]) : fill[i];
            initial_[which] = host;
            buffers_[which].resize(host.size() * kv_dtype_bytes(dtype));
            const std::vector<unsigned char> bytes = encode(host);
            buffers_[which].upload(bytes, stream);
        }
    }
    void* k() { return buffers_[0].get(); }
    void* v() { return buffers_[1].get(); }
    const std::vector<float>& initial(int which) const { return initial_[which]; }
    std::vector<float> read(int which, cudaStream_t stream) const { return decode(to_host(buffers_[which], stream)); }

private:
    std::vector<unsigned char> encode(const std::vector<float>& x) const {
        std::vector<unsigned char> bytes(x.size() * kv_dtype_bytes(dtype_));
        for (size_t i = 0; i < x.size(); ++i) {
            if (dtype_ == KvDtype::BF16) {
                const bf16 b = __float2bfloat16_rn(x[i]);
                std::memcpy(bytes.data() + 2 * i, &b, 2);
            } else {
                std::memcpy(bytes.data() + 4 * i, &x[i], 4);
            }
        }
        return bytes;
    }
    std::vector<float> decode(const std::vector<unsigned char>& bytes) const {
        std::vector<float> x(bytes.size() / kv_dtype_bytes(dtype_));
        for (size_t i = 0; i < x.size(); ++i) {
            if (dtype_ == KvDtype::BF16) {
                bf16 b;
                std::memcpy(&b, bytes.data() + 2 * i, 2);
                x[i] = __bfloat162float(b);
            } else {
                std::memcpy(&x[i], bytes.data() + 4 * i, 4);
            }
        }
        return x;
    }

    KvDtype dtype_;
    size_t row_, rows_;
    DeviceBuffer<unsigned char> buffers_[2];
    std::vector<float> initial_[2];
};

// The cache after appending T rows at pos0: rows before are unchanged, the new k rows are the
// twin's rotation (to the dtype's rounding), the new v rows the values exactly as stored, and the
// rows after still the sentinel.
void expect_appended(const Cache& cache, const std::vector<float>& K, const std::vector<float>& V,
                     const std::vector<float>& k_new, const std::vector<float>& v_new, const std::vector<float>& theta,
                     int T, int H, int D, int64_t pos0, KvDtype dtype, const std::string& what) {
    const size_t HD = static_cast<size_t>(H) * D, begin = static_cast<size_t>(pos0) * HD, end = begin + T * HD;
    for (int which = 0; which < 2; ++which) {
        const std::vector<float>& got = which == 0 ? K : V;
        const std::vector<float>& initial = cache.initial(which);
        ASSERT_EQ(got.size(), initial.size());
        EXPECT_TRUE(std::equal(got.begin(), got.begin() + static_cast<int64_t>(begin), initial.begin()))
            << what << ": a cached row before pos0 changed";
        EXPECT_TRUE(std::equal(got.begin() + static_cast<int64_t>(end), got.end(), initial.begin() + static_cast<int64_t>(end)))
            << what << ": a row past pos0 + T was written";
    }
    const naive::Vec k_ref = rotate_rows(k_new, theta, T, H, D, pos0);
    const std::vector<float> k_got(K.begin() + static_cast<int64_t>(begin), K.begin() + static_cast<int64_t>(end));
    // float rounding of a double rotation (2⁻²⁴), or bf16's (2⁻⁸), relative to the element
    const double k_tol = dtype == KvDtype::BF16 ? 1.01 / 256 : 1e-6;
    const double k_err = rel_max_error(k_got, k_ref);
    EXPECT_LT(k_err, k_tol) << what << ": rotated k rows, max error " << k_err;
    for (size_t i = 0; i < T * HD; ++i) {
        const float want = dtype == KvDtype::BF16 ? round_to_bf16(v_new[i]) : v_new[i];
        if (V[begin + i] != want) {
            ADD_FAILURE() << what << ": v element " << i << " is " << V[begin + i] << ", expected " << want;
            break;
        }
    }
}

// ---- prefill -------------------------------------------------------------------------------------

struct PrefillCase {
    int T;
    int64_t pos0;
    int H, D;
    KvDtype dtype;
    int block_rows;
};

std::string case_name(const PrefillCase& c) {
    return "T " + std::to_string(c.T) + " pos0 " + std::to_string(c.pos0) + " H " + std::to_string(c.H) + " D " +
           std::to_string(c.D) + " " + dtype_name(c.dtype) + " block " + std::to_string(c.block_rows);
}

// Device buffers and arguments of one prefill of T rows at pos0 into the caches.
struct PrefillLaunch {
    DeviceBuffer<float> q, k, v, theta, o;
    DeviceBuffer<unsigned char> workspace;
    AttentionPrefillArgs args;

    PrefillLaunch(void* k_cache, void* v_cache, int64_t capacity, const std::vector<float>& hq, const std::vector<float>& hk,
                  const std::vector<float>& hv, const std::vector<float>& htheta, int T, int H, int D, int64_t pos0,
                  KvDtype dtype, int block_rows, cudaStream_t stream) {
        q = to_device(hq, stream), k = to_device(hk, stream), v = to_device(hv, stream);
        theta = to_device(htheta, stream);
        o.resize(static_cast<size_t>(T) * H * D);
        const size_t bytes = attention_prefill_workspace_bytes(T, H, D, pos0, block_rows, dtype);
        workspace.resize(bytes);
        args.q = q.get(), args.k = k.get(), args.v = v.get(), args.k_cache = k_cache, args.v_cache = v_cache;
        args.capacity = capacity, args.pos0 = pos0, args.theta = theta.get();
        args.scale = 1.0f / std::sqrt(static_cast<float>(D)), args.dtype = dtype, args.o = o.get();
        args.workspace = workspace.get(), args.workspace_bytes = bytes;
        args.T = T, args.H = H, args.D = D, args.block_rows = block_rows;
    }
};

// Runs one prefill and returns its output rows (T, H·D).
std::vector<float> run_prefill(cublasHandle_t cublas, Cache& cache, int64_t capacity, const std::vector<float>& q,
                               const std::vector<float>& k, const std::vector<float>& v, const std::vector<float>& theta,
                               int T, int H, int D, int64_t pos0, KvDtype dtype, int block_rows, cudaStream_t stream) {
    PrefillLaunch launch(cache.k(), cache.v(), capacity, q, k, v, theta, T, H, D, pos0, dtype, block_rows, stream);
    launch_attention_prefill(cublas, launch.args, stream);
    return to_host(launch.o, stream);
}

class AttentionTest : public CudaTest {
protected:
    void SetUp() override {
        CudaTest::SetUp();
        if (IsSkipped()) return;
        cublas_ = std::make_unique<CublasHandle>();
        RETNET_CUBLAS_CHECK(cublasSetMathMode(cublas_->get(), CUBLAS_PEDANTIC_MATH));  // fp32 stays fp32
    }
    cublasHandle_t cublas() const { return cublas_->get(); }
    std::unique_ptr<CublasHandle> cublas_;
};

class AttentionPrefillTest : public AttentionTest, public ::testing::WithParamInterface<PrefillCase> {};

TEST_P(AttentionPrefillTest, AppendsRotatedRowsAndMatchesNaiveCausalAttention) {
    const PrefillCase& c = GetParam();
    const std::string what = case_name(c);
    const size_t HD = static_cast<size_t>(c.H) * c.D;
    const int64_t capacity = c.pos0 + c.T + 5;
    const auto q = random_vector(c.T * HD, 1, -kQueryRange, kQueryRange), k = random_vector(c.T * HD, 2),
               v = random_vector(c.T * HD, 3);
    const auto theta = llama_theta(c.D);
    Cache cache(c.dtype, capacity, c.H, c.D, c.pos0, 10, stream());
    const auto o = run_prefill(cublas(), cache, capacity, q, k, v, theta, c.T, c.H, c.D, c.pos0, c.dtype,
                               c.block_rows, stream());
    const auto K = cache.read(0, stream()), V = cache.read(1, stream());
    expect_appended(cache, K, V, k, v, theta, c.T, c.H, c.D, c.pos0, c.dtype, what);

    std::vector<int64_t> keys;
    for (int t = 0; t < c.T; ++t) keys.push_back(c.pos0 + t + 1);
    const auto q_op = as_operand(rotate_rows(q, theta, c.T, c.H, c.D, c.pos0), c.dtype);
    const naive::Vec ref = attention_twin(q_op, K, V, keys, c.H, c.D, 1.0 / std::sqrt(double(c.D)));
    const std::vector<float> V_used(V.begin(), V.begin() + static_cast<int64_t>((c.pos0 + c.T) * HD));
    const double err = attention_error(o, ref, V_used);
    EXPECT_LT(err, c.dtype == KvDtype::BF16 ? kBf16PTol : kF32Tol) << what << ": max error " << err;
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionPrefillTest,
    ::testing::Values(PrefillCase{1, 0, 2, 64, KvDtype::F32, 16},      // one row, one key
                      PrefillCase{1, 0, 1, 128, KvDtype::BF16, 16},
                      PrefillCase{7, 0, 3, 64, KvDtype::F32, 4},       // odd T, a partial last block
                      PrefillCase{77, 50, 2, 128, KvDtype::F32, 16},   // keys cached before, 5 blocks
                      PrefillCase{77, 50, 2, 128, KvDtype::BF16, 16},
                      PrefillCase{130, 0, 2, 256, KvDtype::F32, 64},
                      PrefillCase{130, 33, 2, 256, KvDtype::BF16, 64},
                      PrefillCase{33, 1000, 1, 64, KvDtype::BF16, 8},  // a long cache, few new rows
                      PrefillCase{200, 5, 4, 32, KvDtype::F32, 1000},  // the block larger than T
                      PrefillCase{45, 3, 2, 96, KvDtype::BF16, 1},     // one row per block
                      PrefillCase{300, 0, 2, 64, KvDtype::BF16, 64}));

// ---- decode ----------------------------------------------------------------------------------------

struct DecodeCase {
    int H, D;
    KvDtype dtype;
    int splits;
};

// Key counts around the split arithmetic of one CTA step g: fewer than one step, exactly one,
// one more, exactly `splits` steps (every split one step), one more than that, and long ones.
std::vector<int64_t> key_counts(int D, KvDtype dtype, int splits) {
    const int64_t g = attention_decode_granule(D, dtype);
    std::vector<int64_t> keys = {1, 2, g - 1, g, g + 1, splits * g, splits * g + 1, 3001, 1000};
    keys.erase(std::remove_if(keys.begin(), keys.end(), [](int64_t x) { return x < 1; }), keys.end());
    return keys;
}

struct DecodeBatch {  // N sequences' inputs and caches for one decode call
    std::vector<int64_t> positions;
    std::vector<float> q, k, v, theta;
    std::vector<Cache> caches;
};

DecodeBatch make_decode_batch(const std::vector<int64_t>& keys, int H, int D, KvDtype dtype, uint64_t seed,
                              cudaStream_t stream) {
    DecodeBatch b;
    const size_t N = keys.size(), HD = static_cast<size_t>(H) * D;
    b.q = random_vector(N * HD, seed, -kQueryRange, kQueryRange);
    b.k = random_vector(N * HD, seed + 1);
    b.v = random_vector(N * HD, seed + 2);
    b.theta = llama_theta(D);
    b.caches.reserve(N);
    for (size_t n = 0; n < N; ++n) {
        b.positions.push_back(keys[n] - 1);
        b.caches.emplace_back(dtype, keys[n] + 3, H, D, keys[n] - 1, seed + 10 + 2 * n, stream);
    }
    return b;
}

std::vector<void*> cache_pointers(DecodeBatch& b, int which) {
    std::vector<void*> p;
    for (Cache& c : b.caches) p.push_back(which == 0 ? c.k() : c.v());
    return p;
}

// Device arrays and buffers of one decode call over `batch` (its caches, or the ones given).
struct DecodeLaunch {
    DeviceBuffer<float> q, k, v, theta, o, workspace;
    DeviceBuffer<void*> k_caches, v_caches;
    DeviceBuffer<int64_t> positions;
    AttentionDecodeArgs args;

    DecodeLaunch(DecodeBatch& b, int H, int D, KvDtype dtype, int splits, cudaStream_t stream)
        : DecodeLaunch(b, cache_pointers(b, 0), cache_pointers(b, 1), H, D, dtype, splits, stream) {}
    DecodeLaunch(const DecodeBatch& b, const std::vector<void*>& kp, const std::vector<void*>& vp, int H, int D,
                 KvDtype dtype, int splits, cudaStream_t stream) {
        const int N = static_cast<int>(b.positions.size());
        q = to_device(b.q, stream), k = to_device(b.k, stream), v = to_device(b.v, stream);
        theta = to_device(b.theta, stream), positions = to_device(b.positions, stream);
        k_caches = to_device(kp, stream), v_caches = to_device(vp, stream);
        o.resize(static_cast<size_t>(N) * H * D);
        workspace.resize(attention_decode_workspace_floats(N, H, D, splits));
        args.q = q.get(), args.k = k.get(), args.v = v.get(), args.k_caches = k_caches.get();
        args.v_caches = v_caches.get(), args.positions = positions.get(), args.theta = theta.get();
        args.scale = 1.0f / std::sqrt(static_cast<float>(D)), args.dtype = dtype, args.o = o.get();
        args.workspace = workspace.get(), args.N = N, args.H = H, args.D = D, args.splits = splits;
    }
};

// Checks each sequence's appended row and its output row against the twin.
void expect_decode_matches_twin(DecodeBatch& b, const std::vector<float>& o, int H, int D, KvDtype dtype,
                                const std::string& what, cudaStream_t stream) {
    const size_t HD = static_cast<size_t>(H) * D;
    for (size_t n = 0; n < b.positions.size(); ++n) {
        const std::string seq = what + " sequence " + std::to_string(n) + " (" +
                                std::to_string(b.positions[n] + 1) + " keys)";
        const auto K = b.caches[n].read(0, stream), V = b.caches[n].read(1, stream);
        const auto row = [&](const std::vector<float>& x) {
            return std::vector<float>(x.begin() + static_cast<int64_t>(n * HD), x.begin() + static_cast<int64_t>((n + 1) * HD));
        };
        expect_appended(b.caches[n], K, V, row(b.k), row(b.v), b.theta, 1, H, D, b.positions[n], dtype, seq);
        const auto q_op = as_operand(rotate_rows(row(b.q), b.theta, 1, H, D, b.positions[n]), dtype);
        const naive::Vec ref = attention_twin(q_op, K, V, {b.positions[n] + 1}, H, D, 1.0 / std::sqrt(double(D)));
        const std::vector<float> V_used(V.begin(), V.begin() + static_cast<int64_t>((b.positions[n] + 1) * HD));
        const double err = attention_error(row(o), ref, V_used);
        EXPECT_LT(err, kF32Tol) << seq << ": max error " << err;
    }
}

class AttentionDecodeTest : public AttentionTest, public ::testing::WithParamInterface<DecodeCase> {};

// Every sequence of the batch has its own length; the twin reads the kernels' own cache rows (and
// bf16-rounded q for bf16 caches), so bf16 caches are held to the fp32 tolerance as well.
TEST_P(AttentionDecodeTest, BatchOfLengthsMatchesNaiveAttention) {
    const DecodeCase& c = GetParam();
    const std::string what = "H " + std::to_string(c.H) + " D " + std::to_string(c.D) + " " + dtype_name(c.dtype) +
                             " splits " + std::to_string(c.splits);
    DecodeBatch batch = make_decode_batch(key_counts(c.D, c.dtype, c.splits), c.H, c.D, c.dtype, 100, stream());
    DecodeLaunch launch(batch, c.H, c.D, c.dtype, c.splits, stream());
    launch_attention_decode(launch.args, stream());
    expect_decode_matches_twin(batch, to_host(launch.o, stream()), c.H, c.D, c.dtype, what, stream());
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionDecodeTest,
                         ::testing::Values(DecodeCase{2, 64, KvDtype::F32, 4}, DecodeCase{2, 64, KvDtype::BF16, 4},
                                           DecodeCase{2, 128, KvDtype::F32, 4}, DecodeCase{2, 128, KvDtype::BF16, 4},
                                           DecodeCase{2, 256, KvDtype::F32, 4}, DecodeCase{2, 256, KvDtype::BF16, 4},
                                           DecodeCase{3, 32, KvDtype::BF16, 3}, DecodeCase{1, 96, KvDtype::F32, 5},
                                           DecodeCase{1, 96, KvDtype::BF16, 2}, DecodeCase{2, 64, KvDtype::BF16, 1},
                                           DecodeCase{1, 256, KvDtype::F32, 1}, DecodeCase{3, 128, KvDtype::BF16, 64},
                                           DecodeCase{1, 64, KvDtype::F32, 300}));

// ---- decode after prefill ----------------------------------------------------------------------------

class AttentionConsistencyTest : public AttentionTest,
                                 public ::testing::WithParamInterface<std::tuple<int, KvDtype>> {};

// One sequence of 150 tokens two ways: a prefill of all 150, and prefills of 100 and 45 rows then
// five decode steps. The caches must be equal bit for bit, and each decoded row must match the
// same row of the whole prefill (fp32: both within kF32Tol of the same attention; bf16: the
// prefill rounds P to bf16, the decode does not, hence kBf16PTol).
TEST_P(AttentionConsistencyTest, DecodeAfterPrefillEqualsPrefillOfTheWholeSequence) {
    const auto [D, dtype] = GetParam();
    const int H = 2, L = 150, split1 = 100, split2 = 145;
    const size_t HD = static_cast<size_t>(H) * D;
    const auto q = random_vector(L * HD, 1, -kQueryRange, kQueryRange), k = random_vector(L * HD, 2),
               v = random_vector(L * HD, 3);
    const auto theta = llama_theta(D);
    const auto rows = [&](const std::vector<float>& x, int t0, int t1) {
        return std::vector<float>(x.begin() + static_cast<int64_t>(t0 * HD), x.begin() + static_cast<int64_t>(t1 * HD));
    };
    Cache whole(dtype, L, H, D, 0, 7, stream());
    const auto o_whole = run_prefill(cublas(), whole, L, q, k, v, theta, L, H, D, 0, dtype, 64, stream());

    Cache parts(dtype, L, H, D, 0, 7, stream());
    run_prefill(cublas(), parts, L, rows(q, 0, split1), rows(k, 0, split1), rows(v, 0, split1), theta, split1, H, D, 0,
                dtype, 32, stream());
    run_prefill(cublas(), parts, L, rows(q, split1, split2), rows(k, split1, split2), rows(v, split1, split2), theta,
                split2 - split1, H, D, split1, dtype, 16, stream());
    for (int t = split2; t < L; ++t) {
        DecodeBatch step;
        step.positions = {t};
        step.q = rows(q, t, t + 1), step.k = rows(k, t, t + 1), step.v = rows(v, t, t + 1), step.theta = theta;
        const int splits = t % 2 == 0 ? 3 : 1;
        DecodeLaunch launch(step, {parts.k()}, {parts.v()}, H, D, dtype, splits, stream());
        launch_attention_decode(launch.args, stream());
        const auto o = to_host(launch.o, stream());
        const auto V = parts.read(1, stream());
        const double err = attention_error(o, naive::Vec(o_whole.begin() + static_cast<int64_t>(t * HD),
                                                          o_whole.begin() + static_cast<int64_t>((t + 1) * HD)),
                                           rows(V, 0, t + 1));
        EXPECT_LT(err, dtype == KvDtype::BF16 ? kBf16PTol : 2 * kF32Tol)
            << "D " << D << " " << dtype_name(dtype) << " row " << t << ": max difference " << err;
    }
    EXPECT_EQ(whole.read(0, stream()), parts.read(0, stream())) << "K caches differ";
    EXPECT_EQ(whole.read(1, stream()), parts.read(1, stream())) << "V caches differ";
}

INSTANTIATE_TEST_SUITE_P(HeadDimsAndDtypes, AttentionConsistencyTest,
                         ::testing::Combine(::testing::Values(64, 128, 256),
                                            ::testing::Values(KvDtype::F32, KvDtype::BF16)));

// ---- graph replay ------------------------------------------------------------------------------------

// The decode step captured once and replayed for four steps (new positions and rows uploaded
// before each replay) equals the same steps launched eagerly on a copy of the caches, bit for bit.
TEST_F(AttentionTest, GraphReplayEqualsEagerLaunchesBitForBit) {
    const int H = 2, D = 128, steps = 4;
    const KvDtype dtype = KvDtype::BF16;
    const std::vector<int64_t> keys = {5, 300, 1};
    DecodeBatch graph_batch = make_decode_batch(keys, H, D, dtype, 50, stream());
    DecodeBatch eager_batch = make_decode_batch(keys, H, D, dtype, 50, stream());
    const int splits = 3;
    DecodeLaunch graph_launch(graph_batch, H, D, dtype, splits, stream());
    DecodeLaunch eager_launch(eager_batch, H, D, dtype, splits, stream());
    sync();
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    RETNET_CUDA_CHECK(cudaStreamBeginCapture(stream(), cudaStreamCaptureModeRelaxed));
    launch_attention_decode(graph_launch.args, stream());
    RETNET_CUDA_CHECK(cudaStreamEndCapture(stream(), &graph));
    RETNET_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int step = 0; step < steps; ++step) {
        std::vector<int64_t> positions;
        for (int64_t p : keys) positions.push_back(p - 1 + step);
        const size_t n = keys.size() * H * D;
        const auto q = random_vector(n, 200 + step, -kQueryRange, kQueryRange), k = random_vector(n, 300 + step),
                   v = random_vector(n, 400 + step);
        for (DecodeLaunch* l : {&graph_launch, &eager_launch}) {
            l->positions.upload(positions, stream());
            l->q.upload(q, stream()), l->k.upload(k, stream()), l->v.upload(v, stream());
        }
        RETNET_CUDA_CHECK(cudaGraphLaunch(exec, stream()));
        launch_attention_decode(eager_launch.args, stream());
        EXPECT_EQ(to_host(graph_launch.o, stream()), to_host(eager_launch.o, stream())) << "step " << step;
    }
    for (size_t s = 0; s < keys.size(); ++s)
        for (int which = 0; which < 2; ++which)
            EXPECT_EQ(graph_batch.caches[s].read(which, stream()), eager_batch.caches[s].read(which, stream()))
                << "sequence " << s << (which ? " V" : " K");
    RETNET_CUDA_CHECK(cudaGraphExecDestroy(exec));
    RETNET_CUDA_CHECK(cudaGraphDestroy(graph));
}

// ---- host-side rules (no device needed) --------------------------------------------------------------

TEST(AttentionLimits, RefusesWhatItCannotRunWithOneLine) {
    EXPECT_TRUE(attention_decode_supports(64));
    EXPECT_TRUE(attention_decode_supports(256));
    EXPECT_FALSE(attention_decode_supports(48));
    EXPECT_THROW(attention_decode_granule(48, KvDtype::F32), Error);
    AttentionDecodeArgs d;
    d.N = 1, d.H = 1, d.D = 48;
    EXPECT_THROW(launch_attention_decode(d, nullptr), Error);
    d.D = 64, d.splits = 0;
    EXPECT_THROW(launch_attention_decode(d, nullptr), Error);
    d.splits = 1;
    EXPECT_THROW(launch_attention_decode(d, nullptr), Error);  // no pointers

    AttentionPrefillArgs p;
    p.T = 10, p.H = 2, p.D = 64, p.pos0 = 5, p.capacity = 14, p.block_rows = 4;
    try {
        launch_attention_prefill(nullptr, p, nullptr);
        ADD_FAILURE() << "a cache too small was accepted";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("KV cache is too small"), std::string::npos) << e.what();
    }
    p.capacity = 15, p.D = 63;
    EXPECT_THROW(launch_attention_prefill(nullptr, p, nullptr), Error);
}

TEST(AttentionLimits, WorkspaceAndSplitArithmetic) {
    // (N·H·D) rotated queries + N·H·splits partials of D + 2 floats
    EXPECT_EQ(attention_decode_workspace_floats(3, 2, 64, 5), 3u * 2 * 64 + 3u * 2 * 5 * 66);
    EXPECT_EQ(attention_decode_splits(1, 8, 1, 132), 1);            // one key: one split
    EXPECT_EQ(attention_decode_splits(1, 8, 32768, 132), 66);       // fills 4 CTAs per SM
    EXPECT_EQ(attention_decode_splits(64, 8, 32768, 132), 2);
    EXPECT_EQ(attention_decode_splits(1, 1, 1000, 132), 4);         // ranges of ≥ 256 keys
    // bf16 prefill: queries (T·H·D·2 bytes, 256-aligned), then H·rows·round8(pos0 + T) floats
    const size_t q_bytes = 100 * 2 * 64 * 2;
    EXPECT_EQ(attention_prefill_workspace_bytes(100, 2, 64, 7, 32, KvDtype::BF16),
              (q_bytes + 255) / 256 * 256 + 2u * 32 * 112 * 4);
    EXPECT_EQ(attention_prefill_block_rows(100, 2, 64, 7, KvDtype::BF16, size_t{1} << 30), 100);
    EXPECT_EQ(attention_prefill_block_rows(100, 2, 64, 7, KvDtype::BF16, 0), 1);
    const int rows = attention_prefill_block_rows(32768, 8, 256, 0, KvDtype::BF16, size_t{1} << 30);
    EXPECT_EQ(rows % 64, 0);
    EXPECT_LE(attention_prefill_workspace_bytes(32768, 8, 256, 0, rows, KvDtype::BF16), size_t{1} << 30);
    EXPECT_GT(attention_prefill_workspace_bytes(32768, 8, 256, 0, rows + 64, KvDtype::BF16), size_t{1} << 30);
}

// ---- timing (run with --gtest_also_run_disabled_tests) -----------------------------------------------

// Median device time of `reps` calls of `launch` after three warm-up calls (CUDA events).
template <typename F>
double median_ms(F&& launch, cudaStream_t stream, int reps) {
    CudaEvent start, stop;
    std::vector<double> ms;
    for (int i = 0; i < reps + 3; ++i) {
        start.record(stream);
        launch();
        stop.record(stream);
        if (i >= 3) ms.push_back(stop.elapsed_ms_since(start));
    }
    std::sort(ms.begin(), ms.end());
    return ms[ms.size() / 2];
}

// Decode at the 1.3B twin's shape (H 8, D 256, bf16 caches) over 32k keys: the KV bytes one step
// reads over its median time (compare with the device's ~4.8 TB/s); prefill time of 4k and 32k
// tokens (one layer). Zero-filled data: the time does not depend on the values.
TEST_F(AttentionTest, DISABLED_DecodeBandwidthAndPrefillTime) {
    const int H = 8, D = 256;
    const int64_t L = 32768;
    const KvDtype dtype = KvDtype::BF16;
    const size_t HD = static_cast<size_t>(H) * D, cache_bytes = static_cast<size_t>(L) * HD * kv_dtype_bytes(dtype);
    int device = 0, sms = 0;
    RETNET_CUDA_CHECK(cudaGetDevice(&device));
    RETNET_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    for (int N : {1, 16}) {
        std::vector<DeviceBuffer<unsigned char>> caches;
        std::vector<void*> kp, vp;
        for (int i = 0; i < 2 * N; ++i) {
            caches.emplace_back(cache_bytes);
            caches.back().zero(stream());
            (i % 2 == 0 ? kp : vp).push_back(caches.back().get());
        }
        DecodeBatch batch;
        batch.positions.assign(static_cast<size_t>(N), L - 1);
        batch.q.assign(N * HD, 0.0f), batch.k = batch.q, batch.v = batch.q, batch.theta = llama_theta(D);
        const int splits = attention_decode_splits(N, H, L, sms);
        DecodeLaunch launch(batch, kp, vp, H, D, dtype, splits, stream());
        const double ms = median_ms([&] { launch_attention_decode(launch.args, stream()); }, stream(), 20);
        std::printf("decode N %d keys %lld splits %d: %.3f ms, %.0f GB/s of KV cache\n", N, static_cast<long long>(L),
                    splits, ms, 2.0 * N * static_cast<double>(cache_bytes) / (ms * 1e6));
    }
    for (int T : {4096, 32768}) {
        DeviceBuffer<unsigned char> k_cache(static_cast<size_t>(T) * HD * 2), v_cache(k_cache.size());
        const std::vector<float> zeros(static_cast<size_t>(T) * HD, 0.0f);
        const int rows = attention_prefill_block_rows(T, H, D, 0, dtype, size_t{512} << 20);
        k_cache.zero(stream()), v_cache.zero(stream());
        PrefillLaunch launch(k_cache.get(), v_cache.get(), T, zeros, zeros, zeros, llama_theta(D), T, H, D, 0, dtype, rows, stream());
        // the backend's handle is pedantic unless TF32 is allowed: does that keep bf16 off the tensor cores?
        for (cublasMath_t mode : {CUBLAS_PEDANTIC_MATH, CUBLAS_DEFAULT_MATH}) {
            RETNET_CUBLAS_CHECK(cublasSetMathMode(cublas(), mode));
            const double ms =
                median_ms([&] { launch_attention_prefill(cublas(), launch.args, stream()); }, stream(), 3);
            std::printf("prefill T %d (block %d rows, %s math): %.2f ms per layer\n", T, rows,
                        mode == CUBLAS_PEDANTIC_MATH ? "pedantic" : "default", ms);
        }
    }
}

}  // namespace
}  // namespace retnet::cuda::test
