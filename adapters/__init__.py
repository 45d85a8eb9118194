"""Framework adapters (LangChain, LlamaIndex): thin wrappers over the core strategies."""
