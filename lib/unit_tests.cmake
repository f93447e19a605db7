# Unit tests of lib/, one binary per module, each beside its code. Included
# from lib/CMakeLists.txt, so paths are relative to lib/. Fast and hermetic:
# temp dirs under /tmp, a socketpair for the fake QMP peer, no QEMU.
function(smolvm_unit_test name source)
  add_executable(${name} ${source})
  target_link_libraries(${name} ${ARGN} GTest::gtest_main GTest::gmock)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 60)
endfunction()

smolvm_unit_test(subprocess_test base/subprocess_test.cc smolvm_base)
smolvm_unit_test(file_util_test base/file_util_test.cc smolvm_base)
smolvm_unit_test(ipv4_test base/ipv4_test.cc smolvm_base)
smolvm_unit_test(validation_test model/validation_test.cc smolvm_base)
smolvm_unit_test(boot_args_test model/boot_args_test.cc smolvm_base)
smolvm_unit_test(host_paths_test image/host_paths_test.cc smolvm_host_paths)
smolvm_unit_test(qemu_argv_test vmm/qemu_argv_test.cc smolvm_vmm)
smolvm_unit_test(qmp_client_test vmm/qmp_client_test.cc smolvm_vmm)
smolvm_unit_test(accelerator_test vmm/accelerator_test.cc smolvm_vmm)
smolvm_unit_test(snapshot_files_test snapshot/snapshot_files_test.cc smolvm_core)
smolvm_unit_test(tenant_directory_test core/tenant_directory_test.cc smolvm_core)
smolvm_unit_test(quota_test core/quota_test.cc smolvm_core)
