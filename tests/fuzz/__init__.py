"""Fuzz tests: generated inputs thrown at the device runtime's readers (hypothesis; runtime only, no TensorFlow)."""
