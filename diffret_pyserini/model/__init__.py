"""The one-pass encoder, with no file I/O: text -> prompt with K slots -> backbone -> representations.

    arguments.py        model-loading, encoder and encoding flags (dataclasses shared by every CLI)
    prompts.py          prompt templates and the K-slot layout (PromptBuilder)
    backbones/          loading (native classes first, remote code opt-in) and one forward pass per kind:
                        diffusion LMs and masked LMs read bidirectionally, decoders run non-causally, and the
                        causal PromptReps path
    representations.py  the pure math: pooling, sparse weighting and quantisation
    encoder.py          DiffRetEncoder: one pass -> dense single / multi vectors and sparse {term: int}
    spec.py             encoder spec strings ('NAME?kp=16&top_n=128') and a bounded encoder cache
    packaged.py         models that install as files from packages (SPLADE-tiny, MiniLM, SmolLM2)
    convert_gguf.py     a GGUF file -> a float32 Hugging Face folder (SmolLM2's packaged form)
    hf_compat.py        what differs between transformers 4.46+ and 5.x (argument names)
"""
