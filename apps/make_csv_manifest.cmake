# Writes a user's own manifest from the synthetic world of apps.synth: a CSV of image files and
# captions in open_clip's columns (filepath, title) with a class label (the shape), every item
# of train.jsonl and heldout.jsonl; tessera-train --manifest holds out its own share.
#
#   cmake -DWORLD=DIR -DOUT=FILE [-DBROKEN=ON] -P make_csv_manifest.cmake
#
# BROKEN=ON writes a damaged copy: every third item names an image that does not exist, and
# the first item's caption is empty (tessera-train's bad items: skipped, counted, named).
cmake_minimum_required(VERSION 3.19)  # string(JSON)
foreach(var WORLD OUT)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "make_csv_manifest.cmake: -D${var}=... is required")
  endif()
endforeach()
set(csv "filepath,title,shape\n")
set(n 0)
foreach(list train.jsonl heldout.jsonl)
  file(STRINGS "${WORLD}/${list}" lines)
  foreach(line IN LISTS lines)
    string(JSON image GET "${line}" image)
    string(JSON caption GET "${line}" caption)
    string(JSON shape GET "${line}" shape)
    if(BROKEN AND n EQUAL 0)
      set(caption "")
    endif()
    math(EXPR third "${n} % 3")
    if(BROKEN AND third EQUAL 2)
      set(image "images/missing-${n}.png")
    endif()
    string(REPLACE "\"" "\"\"" caption "${caption}")
    string(APPEND csv "${image},\"${caption}\",${shape}\n")
    math(EXPR n "${n} + 1")
  endforeach()
endforeach()
file(WRITE "${OUT}" "${csv}")
