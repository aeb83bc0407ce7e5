# The layering of include/tessera (README "The shape of the library", docs/architecture.md):
#
#   core -> io -> nn -> model -> tokenize -> train -> the top-level headers
#
# A header may include headers of its own layer and of the layers before it, never one after
# it. detail/ is private: it may include core/ and detail/, and every layer may include it.
# Run as `cmake -DROOT=<include dir> -P check_layering.cmake`; every violation is printed as
# "<header>: includes <other> (layer <b> is above layer <a>)" and the script fails.
if(NOT ROOT)
  message(FATAL_ERROR "check_layering.cmake: pass -DROOT=<the include directory>")
endif()

set(layers core detail io nn model tokenize train top)
function(layer_rank header out)
  string(REGEX MATCH "^tessera/([a-z_]+)/" match "${header}")
  if(match)
    set(layer "${CMAKE_MATCH_1}")
  else()
    set(layer top)  # tessera/tessera.hpp, tessera/pipeline.hpp
  endif()
  list(FIND layers "${layer}" rank)
  if(rank EQUAL -1)
    message(FATAL_ERROR "check_layering.cmake: ${header}: '${layer}' is not a known layer (${layers})")
  endif()
  set(${out} ${rank} PARENT_SCOPE)
  set(${out}_layer ${layer} PARENT_SCOPE)
endfunction()

get_filename_component(ROOT "${ROOT}" ABSOLUTE)
file(GLOB_RECURSE headers RELATIVE "${ROOT}" "${ROOT}/tessera/*.hpp" "${ROOT}/tessera/*.h")
list(SORT headers)
set(violations 0)
set(checked 0)
foreach(header IN LISTS headers)
  layer_rank("${header}" own)
  file(STRINGS "${ROOT}/${header}" includes REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]tessera/")
  foreach(line IN LISTS includes)
    string(REGEX MATCH "tessera/[^>\"]+" included "${line}")
    layer_rank("${included}" other)
    math(EXPR checked "${checked} + 1")
    if(other_layer STREQUAL "detail")
      continue()
    endif()
    if(other GREATER own)
      message(SEND_ERROR "${header}: includes ${included} (layer ${other_layer} is above layer ${own_layer})")
      math(EXPR violations "${violations} + 1")
    endif()
  endforeach()
endforeach()
list(LENGTH headers count)
if(violations GREATER 0)
  message(FATAL_ERROR "${violations} include(s) against the layering, in ${count} headers")
endif()
message(STATUS "layering: ${count} headers, ${checked} includes of tessera headers, all in order")
