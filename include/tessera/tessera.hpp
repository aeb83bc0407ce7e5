#pragma once
// tessera: the umbrella header. Include this, or only the module headers you need.

// core: errors, warnings, matrix types, threads, named parameters
#include <tessera/core/error.hpp>
#include <tessera/core/image.hpp>
#include <tessera/core/modality.hpp>
#include <tessera/core/parallel.hpp>
#include <tessera/core/parameter.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/core/tensor.hpp>

// io: file formats (images need stb; containers need FFmpeg, Y4M and image folders do not)
#include <tessera/io/gzip.hpp>
#include <tessera/io/manifest.hpp>
#include <tessera/io/read_file.hpp>
#include <tessera/io/safetensors.hpp>
#include <tessera/io/video.hpp>
#include <tessera/io/wav.hpp>
#include <tessera/io/y4m.hpp>
#if defined(TESSERA_HAS_STB)
#include <tessera/io/image.hpp>
#endif

// nn: the layers
#include <tessera/nn/activation.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/attention_kernel.hpp>
#include <tessera/nn/attention_mask.hpp>
#include <tessera/nn/attention_pool.hpp>
#include <tessera/nn/block.hpp>
#include <tessera/nn/embedding.hpp>
#include <tessera/nn/ffn.hpp>
#include <tessera/nn/kv_cache.hpp>
#include <tessera/nn/linear.hpp>
#include <tessera/nn/norm.hpp>
#include <tessera/nn/patch_embed.hpp>
#include <tessera/nn/rope.hpp>

// model: configuration, the encoder, model directories
#include <tessera/model/config.hpp>
#include <tessera/model/config_check.hpp>
#include <tessera/model/config_json.hpp>
#include <tessera/model/encoder_freezing.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/encoder_cache.hpp>
#include <tessera/model/encoder_trace.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/model/model_kind.hpp>
#include <tessera/model/pooling.hpp>
#include <tessera/model/pretrained.hpp>
#include <tessera/model/pretrained_save.hpp>
#include <tessera/model/quantize.hpp>
#include <tessera/model/quantized_weights.hpp>
#include <tessera/model/sample.hpp>
#include <tessera/model/sample_check.hpp>
#include <tessera/model/sample_io.hpp>
#include <tessera/model/token_layout.hpp>
#include <tessera/model/tower.hpp>
#include <tessera/model/tower_freezing.hpp>
#include <tessera/model/tower_trace.hpp>
#include <tessera/model/tower_model.hpp>
#include <tessera/model/tower_weights.hpp>
#include <tessera/model/weights.hpp>

// tokenize: the front ends that turn text and files into encoder inputs (SPEC 5); the text
// tokenizers need ICU
#include <tessera/tokenize/audio.hpp>
#include <tessera/tokenize/bpe.hpp>
#include <tessera/tokenize/bpe_merges.hpp>
#include <tessera/tokenize/bpe_vocab.hpp>
#include <tessera/tokenize/byte_alphabet.hpp>
#include <tessera/tokenize/front_end.hpp>
#include <tessera/tokenize/html_unescape.hpp>
#include <tessera/tokenize/image.hpp>
#include <tessera/tokenize/image_processor.hpp>
#include <tessera/tokenize/imagebind_clips.hpp>
#include <tessera/tokenize/utf8.hpp>
#include <tessera/tokenize/video.hpp>
#if defined(TESSERA_HAS_ICU)
#include <tessera/tokenize/bpe_trainer.hpp>
#include <tessera/tokenize/char_class.hpp>
#include <tessera/tokenize/clip_bpe.hpp>
#include <tessera/tokenize/gpt2_bpe.hpp>
#include <tessera/tokenize/text.hpp>
#endif
#if defined(TESSERA_HAS_STB)
#include <tessera/tokenize/image_file.hpp>
#endif
#if defined(TESSERA_HAS_ICU) && defined(TESSERA_HAS_STB)
#include <tessera/tokenize/files.hpp>
#include <tessera/tokenize/tower_front_ends.hpp>
#endif

// train: losses, the gradient checker, the optimizer, the pair sampler, the contrastive step,
// retrieval scores, checkpoints
#include <tessera/train/checkpoint.hpp>
#include <tessera/train/distributed.hpp>
#include <tessera/train/distributed_step.hpp>
#include <tessera/train/grad_cache.hpp>
#include <tessera/train/grad_check.hpp>
#include <tessera/train/loader.hpp>
#include <tessera/train/losses.hpp>
#include <tessera/train/modality_dropout.hpp>
#include <tessera/train/optimizer.hpp>
#include <tessera/train/retrieval.hpp>
#include <tessera/train/sampler.hpp>
#include <tessera/train/step.hpp>
#include <tessera/train/tower_step.hpp>

// the front door: a model directory's encoder and front ends in one object (needs ICU and stb)
#if defined(TESSERA_HAS_ICU) && defined(TESSERA_HAS_STB)
#include <tessera/pipeline.hpp>
#include <tessera/search_index.hpp>
#endif
