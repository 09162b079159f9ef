"""Indexes over what the encoder wrote, in Pyserini's formats.

    __main__.py           `python -m diffret_pyserini.index {faiss,multi,candidates}`: compressed indexes
    faiss_dirs.py         FAISS dirs (index + docid), the index types (flat, HNSW, IVF-PQ, SQ) and their settings
    multivector.py        the multi-vector store read by the MaxSim searcher (float16 / int8 codes)
    lucene.py             BM25 and impact indexes through `pyserini.index.lucene`
    dense_postprocess.py  `python -m diffret_pyserini.index.dense_postprocess`: centring / whitening of dense
                          vectors (fitted on documents), applied to a FAISS dir and to query embeddings
"""
