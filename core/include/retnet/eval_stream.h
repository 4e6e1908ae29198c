// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// Evaluation of a text file of any size in bounded memory: the file is tokenized block by block
// (retnet/text_stream.h) and its tokens are evaluated as they arrive, with the same windows (or
// the same state-carrying pieces) and so the same results as train::evaluate_text /
// evaluate_text_streaming on the whole text.
#include <atomic>
#include <string>

#include "retnet/forward.h"
#include "retnet/text_stream.h"
#include "retnet/trainer.h"

namespace retnet::train {

struct TextFileSpan {
    std::string path;
    uint64_t begin = 0;      // byte where the evaluated part starts (TextScan::tail_begin)
    int64_t characters = 0;  // characters of that part (TextScan::tail_characters)
    size_t block_bytes = size_t(256) << 10;
};

// Windows of `window` tokens, each from an empty state, `batch` at a time (evaluate_text).
// `progress` gets the predicted tokens so far and an estimate of the total.
EvalResult evaluate_file(const BatchLoss& batch_loss, const Tokenizer& tokenizer, const TextFileSpan& text,
                         int window, int batch = kEvalBatch, const EvalProgress& progress = {});
// The whole part as one sequence with the backend's state carried (evaluate_text_streaming).
EvalResult evaluate_file_streaming(Backend& backend, const Tokenizer& tokenizer, const TextFileSpan& text,
                                   int piece = 1024, const EvalProgress& progress = {});

}  // namespace retnet::train
