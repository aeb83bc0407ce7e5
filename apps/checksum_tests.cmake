# Program tests of the checksums tessera writes into model files and checkpoints
# (docs/robustness.md). Included from apps/CMakeLists.txt.
