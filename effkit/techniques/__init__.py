"""Stage 2, techniques: each makes a Keras model from a Keras model (pruning in tfmot or Keras 3, clustering,
quantization-aware training) with the fine-tune they share (`train`)."""
