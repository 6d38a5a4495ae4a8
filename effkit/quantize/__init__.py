"""Post-training quantization backends, one module each."""
