# CUDA part of the gastrt build: decides whether csrc/cuda/*.cu are compiled and how.
#
# Inputs:  GASTRT_CUDA       AUTO | ON | OFF   (cache var, else $ENV{GASTRT_CUDA}, else AUTO)
#          GASTRT_CUDA_ARCHS "80;86;89;90"     (cache var, else $ENV{GASTRT_CUDA_ARCHS})
#          GASTRT_CUBLASLT   AUTO | ON | OFF   (cache var, else $ENV{GASTRT_CUBLASLT}, else AUTO): the
#                            cuBLASLt GEMM tactic, compiled when cublasLt.h is found in
#                            GASTRT_CUBLASLT_INCLUDE (cache var or env: the nvidia-cublas wheel's
#                            nvidia/cu13/include) or the toolkit. The library is loaded at run time.
# Outputs: GASTRT_CUDA_ENABLED, GASTRT_CUBLASLT_ENABLED, gastrt_add_cuda(<target>)
#
# Arch policy: SASS ("-real") for every listed arch, and SASS + PTX for the highest, so newer
# GPUs (Blackwell ...) JIT the PTX. Archs the found nvcc cannot target are dropped with a
# warning (CUDA 13 removed everything below sm_75; sm_80+ is still supported).

include(CheckLanguage)

set(_gastrt_cuda_default AUTO)
if(DEFINED ENV{GASTRT_CUDA} AND NOT "$ENV{GASTRT_CUDA}" STREQUAL "")
  set(_gastrt_cuda_default "$ENV{GASTRT_CUDA}")
endif()
set(GASTRT_CUDA "${_gastrt_cuda_default}" CACHE STRING "Build the CUDA kernels: AUTO, ON or OFF")
string(TOUPPER "${GASTRT_CUDA}" GASTRT_CUDA)
if(GASTRT_CUDA MATCHES "^(1|TRUE|YES|Y)$")
  set(GASTRT_CUDA ON)
elseif(GASTRT_CUDA MATCHES "^(0|FALSE|NO|N)$")
  set(GASTRT_CUDA OFF)
endif()
if(NOT GASTRT_CUDA MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "GASTRT_CUDA must be AUTO, ON or OFF (got '${GASTRT_CUDA}')")
endif()

set(_gastrt_archs_default "80;86;89;90")
if(DEFINED ENV{GASTRT_CUDA_ARCHS} AND NOT "$ENV{GASTRT_CUDA_ARCHS}" STREQUAL "")
  set(_gastrt_archs_default "$ENV{GASTRT_CUDA_ARCHS}")
endif()
set(GASTRT_CUDA_ARCHS "${_gastrt_archs_default}" CACHE STRING "CUDA archs (SASS each, PTX of the highest)")
string(REPLACE "," ";" GASTRT_CUDA_ARCHS "${GASTRT_CUDA_ARCHS}")
string(REPLACE " " ";" GASTRT_CUDA_ARCHS "${GASTRT_CUDA_ARCHS}")
list(REMOVE_ITEM GASTRT_CUDA_ARCHS "")

set(_gastrt_lt_default AUTO)
if(DEFINED ENV{GASTRT_CUBLASLT} AND NOT "$ENV{GASTRT_CUBLASLT}" STREQUAL "")
  set(_gastrt_lt_default "$ENV{GASTRT_CUBLASLT}")
endif()
set(GASTRT_CUBLASLT "${_gastrt_lt_default}" CACHE STRING "cuBLASLt tactic: AUTO, ON or OFF")
string(TOUPPER "${GASTRT_CUBLASLT}" GASTRT_CUBLASLT)
if(NOT GASTRT_CUBLASLT MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "GASTRT_CUBLASLT must be AUTO, ON or OFF (got '${GASTRT_CUBLASLT}')")
endif()
set(GASTRT_CUBLASLT_INCLUDE "$ENV{GASTRT_CUBLASLT_INCLUDE}" CACHE PATH "folder holding cublasLt.h")
set(GASTRT_CUBLASLT_ENABLED OFF)

file(GLOB GASTRT_CUDA_SOURCES CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/csrc/cuda/*.cu")

set(GASTRT_CUDA_ENABLED OFF)
set(GASTRT_CUDA_STATUS_ARCHS "")
if(NOT GASTRT_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
    # nvcc is often installed but not on PATH (/usr/local/cuda/bin).
    find_program(_gastrt_nvcc nvcc
                 HINTS "$ENV{CUDA_HOME}/bin" "$ENV{CUDA_PATH}/bin" "$ENV{CUDA_ROOT}/bin"
                       /usr/local/cuda/bin /opt/cuda/bin)
    if(_gastrt_nvcc)
      set(CMAKE_CUDA_COMPILER "${_gastrt_nvcc}" CACHE FILEPATH "CUDA compiler")
    endif()
  endif()
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    if(GASTRT_CUDA STREQUAL "ON")
      message(FATAL_ERROR "GASTRT_CUDA=ON but no CUDA compiler was found (set CUDACXX or put nvcc on PATH)")
    endif()
    message(STATUS "gastrt: no CUDA compiler found: building the CPU runtime only")
  elseif(NOT GASTRT_CUDA_SOURCES)
    if(GASTRT_CUDA STREQUAL "ON")
      message(FATAL_ERROR "GASTRT_CUDA=ON but csrc/cuda has no .cu sources")
    endif()
    message(STATUS "gastrt: csrc/cuda has no .cu sources: building the CPU runtime only")
  else()
    # Which virtual archs can this nvcc target?
    execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --list-gpu-arch
                    OUTPUT_VARIABLE _gastrt_supported RESULT_VARIABLE _rc ERROR_QUIET)
    set(_archs "")
    foreach(a IN LISTS GASTRT_CUDA_ARCHS)
      string(REGEX REPLACE "-(real|virtual)$" "" _num "${a}")
      string(REGEX REPLACE "[af]$" "" _num "${_num}")  # 90a / 100f: arch-specific variants of 90 / 100
      if(_rc EQUAL 0 AND NOT _gastrt_supported MATCHES "compute_${_num}([^0-9a-z]|$)")
        message(WARNING "gastrt: ${CMAKE_CUDA_COMPILER} cannot target sm_${_num}: dropped from GASTRT_CUDA_ARCHS")
      else()
        list(APPEND _archs "${a}")
      endif()
    endforeach()
    if(NOT _archs)
      if(GASTRT_CUDA STREQUAL "ON")
        message(FATAL_ERROR "gastrt: none of GASTRT_CUDA_ARCHS='${GASTRT_CUDA_ARCHS}' is supported by this nvcc")
      endif()
      message(WARNING "gastrt: no usable CUDA arch: building the CPU runtime only")
    else()
      # highest plain number -> real + virtual (PTX); the others -> real only
      set(_max 0)
      foreach(a IN LISTS _archs)
        if(a MATCHES "^[0-9]+$" AND a GREATER _max)
          set(_max ${a})
        endif()
      endforeach()
      set(GASTRT_CUDA_ARCH_LIST "")
      foreach(a IN LISTS _archs)
        if(a MATCHES "^[0-9]+$" AND NOT a EQUAL _max)
          list(APPEND GASTRT_CUDA_ARCH_LIST "${a}-real")
        else()
          list(APPEND GASTRT_CUDA_ARCH_LIST "${a}")
        endif()
      endforeach()
      set(CMAKE_CUDA_ARCHITECTURES "${GASTRT_CUDA_ARCH_LIST}")
      enable_language(CUDA)
      find_package(CUDAToolkit REQUIRED)
      # CUDA 12 runtime API (3-argument cudaGraphInstantiate, driver entry points with status)
      if(CMAKE_CUDA_COMPILER_VERSION VERSION_LESS 12.0)
        set(_msg "gastrt's CUDA code needs CUDA 12.0 or newer (found nvcc ${CMAKE_CUDA_COMPILER_VERSION})")
        if(GASTRT_CUDA STREQUAL "ON")
          message(FATAL_ERROR "${_msg}; upgrade the toolkit or build the CPU runtime only with GASTRT_CUDA=OFF")
        endif()
        message(WARNING "${_msg}: building the CPU runtime only")
      else()
        set(GASTRT_CUDA_ENABLED ON)
        set(GASTRT_CUDA_STATUS_ARCHS ", archs ${GASTRT_CUDA_ARCH_LIST}, nvcc ${CMAKE_CUDA_COMPILER_VERSION}")
        set(GASTRT_CUDA_ARCHS_USED "${_archs}")
      endif()
    endif()
  endif()
endif()

function(gastrt_add_cuda target)
  if(NOT GASTRT_CUDA_ENABLED)
    return()
  endif()
  target_sources(${target} PRIVATE ${GASTRT_CUDA_SOURCES})
  set_target_properties(${target} PROPERTIES
    CUDA_ARCHITECTURES "${GASTRT_CUDA_ARCH_LIST}"
    CUDA_STANDARD 17
    CUDA_STANDARD_REQUIRED ON
    CUDA_VISIBILITY_PRESET hidden)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-O3 --expt-relaxed-constexpr -Xcompiler=-fno-math-errno>)
  string(REPLACE ";" "," _archs_csv "${GASTRT_CUDA_ARCHS_USED}")
  string(REGEX MATCH "^[0-9]+\\.[0-9]+" _cuda_ver "${CMAKE_CUDA_COMPILER_VERSION}")
  target_compile_definitions(${target} PRIVATE
    GASTRT_WITH_CUDA=1
    GASTRT_CUDA_ARCHS="${_archs_csv}"
    GASTRT_CUDA_VERSION="${_cuda_ver}")
  # cuBLASLt tactic: only its headers are needed here (cublaslt.cu dlopens libcublasLt.so.13, so
  # headers of another major, with another ABI, do not count).
  set(_lt_dir "")
  set(_lt_why "no cublasLt.h; set GASTRT_CUBLASLT_INCLUDE")
  if(NOT GASTRT_CUBLASLT STREQUAL "OFF")
    find_path(GASTRT_CUBLASLT_INCLUDE_DIR cublasLt.h
              HINTS "${GASTRT_CUBLASLT_INCLUDE}" ${CUDAToolkit_INCLUDE_DIRS} NO_DEFAULT_PATH)
    if(GASTRT_CUBLASLT_INCLUDE_DIR)
      file(STRINGS "${GASTRT_CUBLASLT_INCLUDE_DIR}/cublas_api.h" _lt_major REGEX "#define CUBLAS_VER_MAJOR ")
      string(REGEX MATCH "[0-9]+" _lt_major "${_lt_major}")
      if(_lt_major STREQUAL "13")
        set(_lt_dir "${GASTRT_CUBLASLT_INCLUDE_DIR}")
      else()
        set(_lt_why "cuBLAS ${_lt_major} headers in ${GASTRT_CUBLASLT_INCLUDE_DIR}; the tactic needs 13")
        unset(GASTRT_CUBLASLT_INCLUDE_DIR CACHE)
      endif()
    endif()
    if(_lt_dir)
      set_property(SOURCE "${CMAKE_CURRENT_SOURCE_DIR}/csrc/cuda/cublaslt.cu"
                   APPEND PROPERTY INCLUDE_DIRECTORIES "${_lt_dir}")
      set_property(SOURCE "${CMAKE_CURRENT_SOURCE_DIR}/csrc/cuda/cublaslt.cu"
                   APPEND PROPERTY COMPILE_DEFINITIONS GASTRT_WITH_CUBLASLT=1)
      set(GASTRT_CUBLASLT_ENABLED ON PARENT_SCOPE)
      message(STATUS "gastrt: cuBLASLt tactic ON (headers: ${_lt_dir})")
    elseif(GASTRT_CUBLASLT STREQUAL "ON")
      message(FATAL_ERROR "GASTRT_CUBLASLT=ON but no usable cuBLASLt headers (${_lt_why}): set "
                          "GASTRT_CUBLASLT_INCLUDE to the nvidia-cublas 13.x wheel's nvidia/cu13/include")
    else()
      message(STATUS "gastrt: cuBLASLt tactic OFF (${_lt_why})")
    endif()
  endif()
  # Static cudart: the extension imports on machines without the CUDA toolkit; only the driver
  # (libcuda.so, loaded lazily by cudart on the first CUDA call) is needed to use a GPU.
  target_link_libraries(${target} PRIVATE CUDA::cudart_static)
endfunction()
