"""Exporters: a tf_keras model -> a float32 artifact file (TFLite via the converter, ONNX via tf2onnx)."""
