# Writes the files of the tessera-classify and tessera-search tests into OUT (emptied first):
#   OUT/model   the ImageBind fixture (tests/data/pretrained/imagebind/model: text, image,
#               audio and video towers) with the CLIP tokenizer's bpe_simple_vocab_16e6.txt.gz,
#               so raw text works
#   OUT/files   a folder to index: 3 images (one in a subfolder), a WAV and a Y4M video from the
#               synthetic world WORLD (tessera-synth), a file that is not an image (broken.png),
#               a text file and a hidden folder, which the index skips
# Usage: cmake -DSOURCE=<repo> -DWORLD=<synth world> -DOUT=<dir> -P zero_shot_setup.cmake
file(REMOVE_RECURSE "${OUT}")
file(MAKE_DIRECTORY "${OUT}/model" "${OUT}/files/sub" "${OUT}/files/.hidden")
file(GLOB model_files "${SOURCE}/tests/data/pretrained/imagebind/model/*")
file(COPY ${model_files} "${SOURCE}/tests/data/text/clip_tokenizer/bpe_simple_vocab_16e6.txt.gz"
  DESTINATION "${OUT}/model")
file(COPY "${WORLD}/images/blue-circle-bottom-down-0.png" "${WORLD}/images/red-circle-left-up-0.png"
  "${WORLD}/audio/blue-circle-bottom-down-0.wav" DESTINATION "${OUT}/files")
file(COPY "${WORLD}/images/green-square-top-up-0.png" "${WORLD}/video/blue-circle-bottom-down-0.y4m"
  DESTINATION "${OUT}/files/sub")
file(COPY "${WORLD}/images/red-circle-left-down-0.png" DESTINATION "${OUT}/files/.hidden")
file(WRITE "${OUT}/files/broken.png" "not an image\n")
file(WRITE "${OUT}/files/notes.txt" "a red circle\n")
file(WRITE "${OUT}/not-an-index.safetensors" "not an index\n")
