"""Hybrid (BM25 + HNSW) search service with Cosine Adapter relevance filtering."""
