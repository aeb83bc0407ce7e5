#pragma once
// tessera: the umbrella header. Include this, or only the module headers you need.

// core: errors, warnings, matrix types, threads
#include <tessera/core/error.hpp>
#include <tessera/core/parallel.hpp>
#include <tessera/core/warning.hpp>
#include <tessera/core/tensor.hpp>

// io: the safetensors format
#include <tessera/io/safetensors.hpp>

// nn: the layers
#include <tessera/nn/activation.hpp>
#include <tessera/nn/attention.hpp>
#include <tessera/nn/attention_pool.hpp>
#include <tessera/nn/block.hpp>
#include <tessera/nn/embedding.hpp>
#include <tessera/nn/ffn.hpp>
#include <tessera/nn/linear.hpp>
#include <tessera/nn/norm.hpp>
#include <tessera/nn/patch_embed.hpp>
#include <tessera/nn/rope.hpp>

// model: configuration, the encoder, model directories
#include <tessera/model/config.hpp>
#include <tessera/model/encoder.hpp>
#include <tessera/model/model_io.hpp>
#include <tessera/model/sample_io.hpp>

// train: losses
#include <tessera/train/losses.hpp>
