"""The inference service: text generation from local GGUF models with llama.cpp."""
