"""Encoding a corpus or topics into files Pyserini reads.

    __main__.py          `python -m diffret_pyserini.encode`: a corpus or topics -> dense / multi / sparse outputs
    jobs.py              encode_corpus / encode_queries: length batching, resume, progress
    batching.py          length-sorted windows and token-budget batches
    writers.py           resumable writers: FAISS dir, JsonVectorCollection jsonl, multi-vector store
    ray_data.py          the same job on Ray Data (one backbone per actor, blocks committed through the writers)
    pyserini_encoders.py DiffRet{Document,Query}Encoder: our encoders inside `python -m pyserini.encode` and
                         Pyserini's searchers
    plugin.py            their registration in Pyserini's encoder class map (called by the start-up hook)
"""
