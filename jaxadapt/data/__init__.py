"""Training data on grain: streamed sources, batched tokenization, packing, mixtures, exact resume.

The batch contract (numpy, one dict per step, B = this process's rows, T = seq_len):

    input_ids    int32   [B, T]  tokens fed to the model
    targets      int32   [B, T]  the token input_ids[b, t] must predict: the next token of the same document.
                                 Already shifted; the trainer never shifts.
    loss_mask    float32 [B, T]  1 where targets[b, t] counts in the loss: every real pair for pretraining,
                                 assistant-reply targets for SFT; 0 on padding.
    segment_ids  int32   [B, T]  document number within the row, from 1; 0 = padding. Attention must not cross
                                 segment boundaries.
    positions    int32   [B, T]  position within the document piece, restarting at 0 for every segment (RoPE).

Each document is turned into (input, target) pairs before packing: [BOS] t1 .. tn [EOS] (BOS/EOS by policy)
gives inputs [BOS] t1 .. tn and targets t1 .. tn EOS, so padding and document ends need no special target
value (they are simply masked) and a document cut between two rows keeps every target exactly once; the second
piece restarts at position 0 without its earlier context. Pretraining packs by concatenate-and-split: nothing is
dropped except the incomplete final row of a finite stream, which is padded (evaluation) or never reached
(training streams forever). SFT packs whole conversations first-fit and truncates those longer than T.

Evaluation batches add `num_bytes` int64 [B] (see `build_eval_batches`) for bits per byte. DPO rows carry the
same five fields twice, prefixed `chosen_` and `rejected_`, one pair per row, loss on the final reply only.
"""

from jaxadapt.data.config import DataConfig, SourceConfig
from jaxadapt.data.pipeline import DataIterator, build_eval_batches, build_train_iterator

__all__ = ["DataConfig", "DataIterator", "SourceConfig", "build_eval_batches", "build_train_iterator"]
