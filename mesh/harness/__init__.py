"""The e2e harness: a pytest plugin that brings a mesh up and asserts on what its data path does."""
