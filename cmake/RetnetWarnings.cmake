# SPDX-License-Identifier: GPL-3.0-or-later
# retnet_set_warnings(target): the project's warning set, for C++ sources only (nvcc gets its own flags).
function(retnet_set_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wshadow=local>  # gcc only; clang has no =local
    $<$<COMPILE_LANGUAGE:CXX>:-Wno-unused-parameter>)
  if(RETNET_WERROR)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Werror>)
  endif()
endfunction()

if(RETNET_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
