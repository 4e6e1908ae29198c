// SPDX-License-Identifier: GPL-3.0-or-later
#pragma once
// The stack a command runs on. Under `ulimit -s 16` retnet overflowed its stack inside printf (and
// `ulimit -s 64` in reading a prompt from standard input); every command was run at 128 KiB, so 256
// KiB is asked for. In two steps, for an executable:
// - raise_stack_limit(), from its .preinit_array: a soft limit below that is raised as far as the
//   hard limit allows, up to Linux's usual 8 MiB, and threads created from then on get as much
//   (the C library sized its default thread stack from the limit before this ran);
// - check_stack_limit(), from main(): throws retnet::Error naming both limits where the soft one
//   is still below 256 KiB, for main() to report in one line.
namespace retnet {

void raise_stack_limit();
void check_stack_limit();

}  // namespace retnet
