// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The stacks a command runs on. Under `ulimit -s 16` retnet overflowed its stack inside printf (and
// `ulimit -s 64` in reading a prompt from standard input); every command was run at 128 KiB, so 256
// KiB is asked for. Under a large `ulimit -s` every thread's stack took that much address space, so
// that under a `ulimit -v` OpenBLAS's threads spun or hung at exit and `serve` answered nothing.
// In two steps, for an executable:
// - fit_stack_limit(), from its .preinit_array (before any library starts a thread; the C library
//   sized its default thread stack from the limit before this runs): a soft limit below 256 KiB is
//   raised to the hard one, up to 8 MiB, where the hard limit reaches 256 KiB, and threads get as
//   much; above 8 MiB, threads get 8 MiB (the main thread keeps the whole limit);
// - check_stack_limit(), from main(): throws retnet::Error naming both limits where the soft one
//   is still below 256 KiB, for main() to report in one line. (Below about 20 KiB the libraries'
//   own initializers, or the dynamic loader mapping them, may overflow before either runs.)
namespace retnet {

void fit_stack_limit();
void check_stack_limit();

}  // namespace retnet
