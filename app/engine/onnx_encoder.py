"""The ONNX Runtime encoder: the exported graph (fp32 or int8) behind the model's own tokenizer.

Two sessions over one graph: queries run on `threads` intra-op threads (1 by default, so concurrent requests do not
oversubscribe), document batches on `ingest_threads` (the machine's cores by default), whose pool does not spin
while idle so that it leaves the cores to queries between batches.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from app.engine.embedder import normalise
from app.engine.encoders import Backend, EncoderIdentity, model_name


def _session(graph: Path, threads: int, spin: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(graph), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxEncoder:
    """Tokenises as the sentence-transformers model does (its tokenizer.json, truncated at its max_seq_length,
    padded to the longest in a batch), mean-pools in the graph, normalises here."""

    def __init__(self, model_path: str, graph: Path, backend: Backend, *, threads: int = 1, ingest_threads: int = 1,
                 batch_size: int = 32) -> None:
        from tokenizers import Tokenizer

        root = Path(model_path)
        max_length = int(json.loads((root / "sentence_bert_config.json").read_text())["max_seq_length"])
        self._tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        # tokenizer.json itself says 128 and pads every input to 128: the model reads 256, padded to the longest.
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.no_padding()
        pad_token = "[PAD]"
        pad_id = self._tokenizer.token_to_id(pad_token)
        self._tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token=pad_token)
        self.model_name = model_name(model_path)
        self.backend = backend
        # The int8 graph quantises each layer's input with one scale over the whole batch, so a text's vector
        # depends on the texts beside it: in a batch of 8 queries, the median cosine to the same query's vector
        # alone was 0.990 (minimum 0.957), and 63-67% of SciFact's and NFCorpus's test queries got another dense
        # top-10 (their top hit changed for 7-9%). Each query then goes through the graph alone (batches of 8
        # had encoded 1.4-1.7x as many a second). Documents keep their batches: a document is encoded once, and
        # the shipped adapters were fitted on documents encoded so (README, "Encoders"). The fp32 graph masks
        # padding out of its pooling, so its vectors do not depend on the batch.
        self.batch_invariant = backend != "onnx-int8"
        self.batch_size = batch_size
        self._query_session = _session(graph, threads, spin=True)
        self._ingest_session = _session(graph, ingest_threads, spin=False)
        self.dim = int(self._query_session.get_outputs()[0].shape[-1])

    @property
    def identity(self) -> EncoderIdentity:
        return EncoderIdentity(self.model_name, self.backend)

    def warm_up(self) -> None:
        for _ in range(3):
            self.encode_query("warm up the encoder")
        self.encode_documents(["warm up the encoder"] * 4)

    def _run(self, session: Any, texts: Sequence[str]) -> np.ndarray:
        """One forward pass of `texts`, padded to the longest."""
        encodings = self._tokenizer.encode_batch(list(texts))
        feeds = {"input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
                 "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
                 "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64)}
        (pooled,) = session.run(None, feeds)
        return normalise(np.asarray(pooled, dtype=np.float32))

    def encode_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self._run(self._query_session, [text])[0]
        return vector

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        if not self.batch_invariant:
            return np.vstack([self._run(self._query_session, [text]) for text in texts])
        return self._run(self._query_session, texts)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """In batches of similar length (as sentence-transformers sorts them), so little of a batch is padding."""
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        for start in range(0, len(texts), self.batch_size):
            batch = order[start:start + self.batch_size]
            vectors[batch] = self._run(self._ingest_session, [texts[i] for i in batch])
        return vectors
