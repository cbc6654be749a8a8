# Installs the built library into a scratch prefix, then builds a tiny
# consumer against the installed copy twice: with find_package(fp8gemm)
# and with pkg-config. Fails on any error.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix}
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "cmake --install failed: ${rc}")
endif()
foreach(f include/fp8gemm.h)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "missing installed file ${f}")
  endif()
endforeach()
file(GLOB sonames ${prefix}/lib*/libfp8gemm.so.*)
if(NOT sonames)
  message(FATAL_ERROR "no versioned libfp8gemm.so.* installed")
endif()

# find_package consumer
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/install/consumer
                -B ${WORK_DIR}/build-cmake -DCMAKE_PREFIX_PATH=${prefix}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc)
  message(FATAL_ERROR "consumer configure failed:\n${out}\n${err}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build-cmake
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc)
  message(FATAL_ERROR "consumer build failed:\n${out}\n${err}")
endif()
execute_process(COMMAND ${WORK_DIR}/build-cmake/consumer RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc)
  message(FATAL_ERROR "consumer (find_package, shared) failed: ${out}${err}")
endif()
message(STATUS "find_package consumer: ${out}")

# pkg-config consumer
file(GLOB pcdir ${prefix}/lib*/pkgconfig)
set(ENV{PKG_CONFIG_PATH} ${pcdir})
execute_process(COMMAND pkg-config --cflags fp8gemm OUTPUT_VARIABLE cflags RESULT_VARIABLE rc1
                OUTPUT_STRIP_TRAILING_WHITESPACE)
execute_process(COMMAND pkg-config --libs fp8gemm OUTPUT_VARIABLE libs RESULT_VARIABLE rc2
                OUTPUT_STRIP_TRAILING_WHITESPACE)
if(rc1 OR rc2)
  message(FATAL_ERROR "pkg-config fp8gemm failed")
endif()
separate_arguments(cflags UNIX_COMMAND "${cflags}")
separate_arguments(libs UNIX_COMMAND "${libs}")
execute_process(COMMAND cc ${cflags} ${SOURCE_DIR}/tests/install/consumer/consumer.c -o ${WORK_DIR}/consumer_pc ${libs}
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc)
  message(FATAL_ERROR "pkg-config consumer build failed: ${err}")
endif()
file(GLOB libdir ${prefix}/lib*)
set(ENV{LD_LIBRARY_PATH} "${libdir}")
execute_process(COMMAND ${WORK_DIR}/consumer_pc RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc)
  message(FATAL_ERROR "consumer (pkg-config) failed: ${out}${err}")
endif()
message(STATUS "pkg-config consumer: ${out}")
