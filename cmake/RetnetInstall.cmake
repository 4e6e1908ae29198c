# SPDX-License-Identifier: GPL-3.0-or-later
# `cmake --install`: the binaries, the bundled model, the public headers and static libraries with a
# CMake package (find_package(RetNet CONFIG) -> RetNet::core, RetNet::cuda) and a pkg-config file,
# the app's desktop entry, icon and AppStream metainfo; and CPack .deb packages of all of it.
include(CMakePackageConfigHelpers)

set(RETNET_APP_ID io.github.retnetstudio.RetNetStudio)
set(RETNET_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/RetNet)

# --- the engine for other programs (component dev) ---
set(RETNET_EXPORTED_TARGETS retnet_core)
if(RETNET_HAVE_CUDA)
  list(APPEND RETNET_EXPORTED_TARGETS retnet_cuda)
  install(DIRECTORY kernels/include/retnet/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/retnet COMPONENT dev)
endif()
install(TARGETS ${RETNET_EXPORTED_TARGETS} EXPORT RetNetTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
install(DIRECTORY core/include/retnet/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/retnet COMPONENT dev)
install(EXPORT RetNetTargets NAMESPACE RetNet:: DESTINATION ${RETNET_CMAKE_DIR} COMPONENT dev)
configure_package_config_file(cmake/RetNetConfig.cmake.in ${CMAKE_CURRENT_BINARY_DIR}/RetNetConfig.cmake
                              INSTALL_DESTINATION ${RETNET_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/RetNetConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/RetNetConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/RetNetConfigVersion.cmake
        DESTINATION ${RETNET_CMAKE_DIR} COMPONENT dev)
# The .pc file finds its prefix from its own place: one ".." per component of LIBDIR/pkgconfig.
string(REGEX REPLACE "[^/]+" ".." RETNET_PC_UP "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
configure_file(cmake/retnet.pc.in ${CMAKE_CURRENT_BINARY_DIR}/retnet.pc @ONLY)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/retnet.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

# --- the command-line tool and the bundled model (component cli) ---
install(TARGETS retnet RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT cli)
if(RETNET_HAVE_CUDA)
  # The CUDA backend the programs load on first use, where their loader looks (retnet/cuda/module.h).
  install(TARGETS retnet_cuda_module LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}/retnet COMPONENT cli)
endif()
install(DIRECTORY resources/models/default DESTINATION ${CMAKE_INSTALL_DATADIR}/retnet-studio/models COMPONENT cli)

# --- man pages, generated from --help by help2man (Debian: help2man) when it is installed ---
find_program(HELP2MAN_EXECUTABLE help2man)
if(HELP2MAN_EXECUTABLE)
  set(RETNET_MAN_DIR ${CMAKE_CURRENT_BINARY_DIR}/man)
  file(MAKE_DIRECTORY ${RETNET_MAN_DIR})
  add_custom_command(OUTPUT ${RETNET_MAN_DIR}/retnet.1.gz
                     COMMAND ${PROJECT_SOURCE_DIR}/scripts/make-manpage.sh $<TARGET_FILE:retnet> ${RETNET_MAN_DIR}/retnet.1.gz
                             "Retentive Network (RetNet) language models on the command line"
                     DEPENDS retnet ${PROJECT_SOURCE_DIR}/scripts/make-manpage.sh VERBATIM)
  set(RETNET_MAN_PAGES ${RETNET_MAN_DIR}/retnet.1.gz)
  install(FILES ${RETNET_MAN_DIR}/retnet.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT cli)
  if(TARGET retnet-studio)
    add_custom_command(OUTPUT ${RETNET_MAN_DIR}/retnet-studio.1.gz
                       COMMAND ${PROJECT_SOURCE_DIR}/scripts/make-manpage.sh $<TARGET_FILE:retnet-studio>
                               ${RETNET_MAN_DIR}/retnet-studio.1.gz "desktop app that shows how RetNet language models work"
                       DEPENDS retnet-studio ${PROJECT_SOURCE_DIR}/scripts/make-manpage.sh VERBATIM)
    list(APPEND RETNET_MAN_PAGES ${RETNET_MAN_DIR}/retnet-studio.1.gz)
    install(FILES ${RETNET_MAN_DIR}/retnet-studio.1.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man1 COMPONENT studio)
  endif()
  add_custom_target(man_pages ALL DEPENDS ${RETNET_MAN_PAGES})
  if(RETNET_BUILD_TESTS)
    add_test(NAME man_page COMMAND ${PROJECT_SOURCE_DIR}/tests/install/check_man_page.sh ${RETNET_MAN_DIR}/retnet.1.gz
                                   $<TARGET_FILE:retnet>)
    set_tests_properties(man_page PROPERTIES LABELS install)
  endif()
else()
  message(STATUS "help2man not found: no man pages (Debian: apt-get install help2man)")
endif()

# --- the desktop app (component studio) ---
if(TARGET retnet-studio)
  install(TARGETS retnet-studio RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT studio)
  install(FILES resources/desktop/${RETNET_APP_ID}.desktop DESTINATION ${CMAKE_INSTALL_DATADIR}/applications
          COMPONENT studio)
  install(FILES resources/desktop/${RETNET_APP_ID}.svg DESTINATION ${CMAKE_INSTALL_DATADIR}/icons/hicolor/scalable/apps
          COMPONENT studio)
  install(FILES resources/desktop/${RETNET_APP_ID}.metainfo.xml DESTINATION ${CMAKE_INSTALL_DATADIR}/metainfo
          COMPONENT studio)
endif()

# Debian wants the licence and the changelog (gzip -9n, native package) of each package in
# /usr/share/doc/<package>/.
execute_process(COMMAND gzip -9nc ${PROJECT_SOURCE_DIR}/resources/desktop/changelog
                OUTPUT_FILE ${CMAKE_CURRENT_BINARY_DIR}/changelog.gz)
foreach(pkg IN ITEMS retnet retnet-studio libretnet-dev)
  set(comp cli)
  if(pkg STREQUAL "retnet-studio")
    set(comp studio)
  elseif(pkg STREQUAL "libretnet-dev")
    set(comp dev)
  endif()
  install(FILES resources/desktop/copyright ${CMAKE_CURRENT_BINARY_DIR}/changelog.gz
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/${pkg} COMPONENT ${comp})
endforeach()

# --- CPack: three .deb packages; apt resolves the shared-library dependencies from dpkg-shlibdeps ---
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME retnet)
set(CPACK_PACKAGE_VENDOR "RetNet Studio")
set(CPACK_PACKAGE_CONTACT "RetNet Studio developers <retnet-studio@users.noreply.github.com>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Retentive Network language models: engine, CLI and desktop app")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL cli dev)
if(TARGET retnet-studio)
  list(APPEND CPACK_COMPONENTS_ALL studio)
endif()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/retnetstudio/retnet-studio")
set(CPACK_DEBIAN_CLI_PACKAGE_NAME retnet)
set(CPACK_DEBIAN_CLI_DESCRIPTION "RetNet language models on the command line\n retnet runs, compares, inspects, trains, serves and benchmarks Retentive\n Network (RetNet) language models in their parallel, recurrent and chunkwise\n forms, with a small bundled model.")
set(CPACK_DEBIAN_STUDIO_PACKAGE_NAME retnet-studio)
set(CPACK_DEBIAN_STUDIO_PACKAGE_DEPENDS retnet)
set(CPACK_DEBIAN_STUDIO_PACKAGE_SECTION science)
set(CPACK_DEBIAN_STUDIO_DESCRIPTION "desktop app that shows how RetNet language models work\n retnet-studio generates text with a RetNet model and shows its per-head\n decay, retention scores, recurrent state norms and logit lens, and where the\n three forms of the model agree and differ.")
set(CPACK_DEBIAN_DEV_PACKAGE_NAME libretnet-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_DEV_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS "libsentencepiece-dev, libopenblas-dev, nlohmann-json3-dev, pkg-config")
set(CPACK_DEBIAN_DEV_DESCRIPTION "RetNet engine library (development files)\n The RetNet engine as a static C++20 library: headers, a CMake package\n (find_package(RetNet CONFIG), target RetNet::core) and a pkg-config file.")
include(CPack)
