# Sanitizer builds, included from the top-level CMakeLists.txt when
# SMOLVM_SANITIZE is set (scripts/sanitize.sh, docs/sanitizers.md).
#
# Flags go on every project target except the guest agent: it is linked
# statically and runs inside the guest, where no sanitizer runtime exists
# (the e2e guests use an unsanitized agent either way).
if(NOT SMOLVM_SANITIZE MATCHES "^(address,undefined|address|undefined|thread)$")
  message(FATAL_ERROR "SMOLVM_SANITIZE: address,undefined | thread, not '${SMOLVM_SANITIZE}'")
endif()
set(_smolvm_not_agent "$<NOT:$<STREQUAL:$<TARGET_PROPERTY:NAME>,smolvm-agent>>")
string(REPLACE "," "$<COMMA>" _smolvm_san "-fsanitize=${SMOLVM_SANITIZE}")
add_compile_options("$<${_smolvm_not_agent}:${_smolvm_san}>" -fno-omit-frame-pointer)
add_link_options("$<${_smolvm_not_agent}:${_smolvm_san}>")
if(SMOLVM_SANITIZE MATCHES "undefined")
  # A UBSan finding ends the program (like ASan's), so no test can pass over one.
  add_compile_options(-fno-sanitize-recover=undefined)
endif()

if(SMOLVM_SANITIZE STREQUAL "thread")
  # Debian's Abseil is not built with TSan: every executable carries
  # tsan_absl_sync.cc, which tells TSan what absl::Mutex, CondVar and
  # Notification do (see that file).
  add_library(smolvm_tsan_absl_sync OBJECT ${CMAKE_CURRENT_LIST_DIR}/tsan_absl_sync.cc)
  target_link_libraries(smolvm_tsan_absl_sync PUBLIC absl::synchronization ${CMAKE_DL_LIBS})
  link_libraries("$<$<AND:$<STREQUAL:$<TARGET_PROPERTY:TYPE>,EXECUTABLE>,${_smolvm_not_agent}>:smolvm_tsan_absl_sync>")
  # A known race: scripts/sanitize.sh requires TSan to report it.
  add_executable(tsan_canary ${CMAKE_CURRENT_LIST_DIR}/tsan_canary.cc)
  target_link_libraries(tsan_canary absl::synchronization)
endif()
