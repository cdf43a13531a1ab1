"""An lm-evaluation-harness model around LitGPT's GPT: no conversion to a Hugging Face folder on the way.

Scoring follows lm-eval's own Hugging Face backend (``HFLM``): the same context/continuation split, the same
truncation to the last ``max_length + 1`` tokens, the same rolling windows for perplexity, so the numbers agree.
"""

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from litgpt.model import GPT
from litgpt.tokenizer import Tokenizer
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from tqdm import tqdm

from litgpt_inheritune.checkpoint import load_gpt


class LitGPTLM(TemplateLM):
    def __init__(
        self,
        checkpoint_dir: Path,
        batch_size: Union[int, str] = 8,
        device: str = "cpu",
        dtype: Optional[torch.dtype] = None,
        max_length: Optional[int] = None,
        max_batch_size: int = 64,
    ) -> None:
        super().__init__()
        checkpoint_dir = Path(checkpoint_dir)
        self.model = load_gpt(checkpoint_dir).to(device=device, dtype=dtype).eval()
        config = self.model.config
        self.max_length = min(max_length or config.block_size, config.block_size)
        self.model.max_seq_length = self.max_length
        self.tokenizer = Tokenizer(checkpoint_dir)
        self.batch_size = batch_size  # an int, or "auto": found on the longest request as lm-eval's HF backend does
        self.max_batch_size = max_batch_size
        self.device = torch.device(device)
        self.vocab_size = config.vocab_size

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> list[int]:
        """Tokens without special tokens, as HFLM encodes for causal models."""
        if self.tokenizer.backend == "huggingface":
            return self.tokenizer.processor.encode(string, add_special_tokens=False).ids
        return self.tokenizer.processor.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(torch.tensor(tokens))

    @torch.no_grad()
    def _loglikelihood_tokens(
        self, requests, disable_tqdm: bool = False, override_bs: Optional[int] = None
    ) -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each continuation given its context, and whether it is the greedy choice.

        The model input of a request is lm-eval's: ``(context + continuation)[-(max_length + 1):][:-1]``. Requests
        with the same context (the 2-5 choices of a multiple-choice item) share one token tree: the context once,
        each choice after it at the positions it would have alone, attending to the context and to itself only (see
        ``pack``). Shorter trees fill the room that padding would take in a batch's rows (see ``batches``). The
        vocabulary projection runs once per batch, only where a continuation token is predicted.
        """
        share_context = self.model.config.sliding_window_size is None
        # litgpt's sliding-window layers build their own causal mask: one plain sequence per distinct input there
        trees, scored = pack(
            [(context, continuation) for _, context, continuation in requests], self.max_length, share_context
        )
        batch_size = override_bs or self.detect_batch_size(max((len(tree.tokens) for tree in trees), default=1))
        by_tree: dict[int, list[int]] = {}
        for i, (tree, _, _) in enumerate(scored):
            by_tree.setdefault(tree, []).append(i)
        results: list[Optional[tuple[float, bool]]] = [None] * len(requests)
        for batch in tqdm(batches(trees, batch_size, fill=share_context), disable=disable_tqdm, desc="loglikelihood"):
            idx, positions, mask = batch_tensors([[trees[t] for t, _ in row] for row in batch], self.device)
            hidden = tree_forward(self.model, idx, positions, mask)
            # each request's scoring tokens, in the order of the loop below: (row in the batch, index in the row)
            placed = [(b, offset, i) for b, row in enumerate(batch) for t, offset in row for i in by_tree.get(t, [])]
            row_index = torch.tensor([b for b, _, i in placed for _ in scored[i][1]], device=self.device)
            node_index = torch.tensor(
                [offset + node for _, offset, i in placed for node in scored[i][1]], device=self.device
            )
            log_probs = F.log_softmax(project(self.model, hidden[row_index, node_index]).float(), dim=-1).cpu()
            start = 0
            for _, _, i in placed:
                target = torch.tensor(scored[i][2])
                span = log_probs[start : start + len(target)]
                start += len(target)
                greedy = bool((span.argmax(dim=-1) == target).all())
                results[i] = (float(span.gather(1, target[:, None]).sum()), greedy)
                self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def detect_batch_size(self, length: int) -> int:
        """lm-eval's ``batch_size="auto"``: the largest batch, from max_batch_size down by halving, whose full forward
        pass over ``length`` tokens (with an attention mask, as a token tree) does not run out of memory; found once,
        on the longest row."""
        from accelerate import find_executable_batch_size

        if isinstance(self.batch_size, int):
            return self.batch_size

        @find_executable_batch_size(starting_batch_size=self.max_batch_size)
        def forward_batch(batch_size: int) -> int:  # a row as scored: a token tree (it may outgrow the window)
            idx = torch.ones(batch_size, length, dtype=torch.long, device=self.device)
            positions = torch.arange(length, device=self.device).clamp(max=self.max_length - 1).expand(batch_size, -1)
            mask = torch.zeros(batch_size, 1, length, length, device=self.device)
            F.log_softmax(project(self.model, tree_forward(self.model, idx, positions, mask)).float(), dim=-1)
            return batch_size

        try:
            self.batch_size = forward_batch()
        except RuntimeError as error:
            if "No executable batch size found" not in str(error):
                raise
            self.batch_size = 1
        print(f"Determined largest batch size: {self.batch_size}")
        return self.batch_size

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Perplexity-style scores: each text in disjoint windows of max_length tokens, as HFLM does; the windows of
        all texts are batched together."""
        strings = [string for (string,) in (r.args for r in requests)]
        windows = [
            [
                (None,) + utils.make_disjoint_window(window)
                for window in utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            for string in strings
        ]
        results = self._loglikelihood_tokens([window for text in windows for window in text], disable_tqdm=disable_tqdm)
        scores, offset = [], 0
        for string, text in zip(strings, windows):
            scores.append(sum(log_likelihood for log_likelihood, _ in results[offset : offset + len(text)]))
            offset += len(text)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), scores[-1])
        return scores

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy decoding (with litgpt's KV cache) until a stop string or max_gen_toks tokens."""
        from litgpt.generate.base import generate

        outputs = []
        for context, gen_kwargs in tqdm([r.args for r in requests], disable=disable_tqdm, desc="generate_until"):
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            until.append(self.tok_decode([self.eot_token_id]))
            max_new = gen_kwargs.get("max_gen_toks", 256)
            prompt = torch.tensor(self.tok_encode(context)[-(self.max_length - max_new) :], device=self.device)
            self.model.set_kv_cache(batch_size=1, device=self.device)
            tokens = generate(
                self.model,
                prompt,
                max_returned_tokens=len(prompt) + max_new,
                temperature=0.0,
                eos_id=self.eot_token_id,
                include_prompt=False,
            )
            self.model.clear_kv_cache()
            text = self.tok_decode(tokens.tolist())
            for stop in until:
                if stop and stop in text:
                    text = text.split(stop)[0]
            outputs.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return outputs


@dataclass
class TokenTree:
    """One row of a batch: tokens in depth-first order, each with its position (depth) and its parent (-1: none)."""

    tokens: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    children: dict[tuple[int, int], int] = field(default_factory=dict)

    def add(self, tokens: list[int]) -> list[int]:
        """Inserts a path from the root; returns the index of each of its tokens in the row."""
        path, parent = [], -1
        for token in tokens:
            node = self.children.get((parent, token))
            if node is None:
                node = self.children[(parent, token)] = len(self.tokens)
                self.tokens.append(token)
                self.positions.append(len(path))
                self.parents.append(parent)
            path.append(node)
            parent = node
        return path

    def new_tokens(self, tokens: list[int]) -> int:
        """How many tokens ``add(tokens)`` would append."""
        parent = -1
        for depth, token in enumerate(tokens):
            parent = self.children.get((parent, token), -1)
            if parent < 0:
                return len(tokens) - depth
        return 0


ROW_TOKENS = 1024  # a token tree grows to this many tokens (or to the longest input): its mask is rows x T x T


def pack(
    requests: list[tuple[list[int], list[int]]], max_length: int, share_context: bool = True
) -> tuple[list[TokenTree], list[tuple[int, list[int], list[int]]]]:
    """Token trees for (context, continuation) pairs, and per pair: its tree, the indices of the tokens whose
    predictions score it, and the continuation tokens they predict (lm-eval's: the last tokens of the input, which is
    ``(context + continuation)[-(max_length + 1):][:-1]``, cut to the window).

    Inputs are taken in sorted order, so those with a common beginning come together. An input joins the tree of the
    one before it when they share the part before its first scored token (the choices of one item: their context) or
    at least half of its tokens (items after the same few-shot examples), as long as the tree stays within
    ``ROW_TOKENS`` tokens or the longest input; pairs with the same input get the same tokens. With
    ``share_context=False`` only pairs with the same input share a tree, each tree a plain sequence."""
    inputs = []
    for context, continuation in requests:
        tokens = (context + continuation)[-(max_length + 1) :][:-1]
        n = min(len(continuation), len(tokens))
        inputs.append((tokens, n, continuation[len(continuation) - n :]))
    limit = max([ROW_TOKENS] + [len(tokens) for tokens, _, _ in inputs])
    trees: list[TokenTree] = []
    scored: list = [None] * len(inputs)
    previous: list[int] = []
    for i in sorted(range(len(inputs)), key=lambda i: inputs[i][0]):
        tokens, n, target = inputs[i]
        common = next((k for k, (a, b) in enumerate(zip(previous, tokens)) if a != b), min(len(previous), len(tokens)))
        if share_context:
            joins = common >= len(tokens) - n + 1 or 2 * common >= len(tokens)
        else:
            joins = common == len(tokens) == len(previous)
        if not trees or not joins or len(trees[-1].tokens) + trees[-1].new_tokens(tokens) > limit:
            trees.append(TokenTree())
        path = trees[-1].add(tokens)
        scored[i] = (len(trees) - 1, path[len(path) - n :], target)
        previous = tokens
    return trees, scored


def batches(trees: list[TokenTree], batch_size: int, fill: bool = True) -> list[list[list[tuple[int, int]]]]:
    """Batches of ``batch_size`` rows, the longest trees first; a row is a list of (tree, index of its first token).

    Every row of a batch is padded to the batch's longest, so with ``fill`` a row's room up to that width goes to the
    longest trees that fit in it instead of to padding: fewer rows for the same tokens, none of them wider (attention
    costs by the width). Without ``fill``, one tree per row."""
    pending = sorted((len(tree.tokens), t) for t, tree in enumerate(trees))  # ascending: the longest last
    result = []
    while pending:
        width, batch = pending[-1][0], []
        while pending and len(batch) < batch_size:
            row, used = [], 0
            while pending:
                k = bisect.bisect_right(pending, (width - used, len(trees))) - 1  # the longest tree that still fits
                if k < 0:
                    break
                length, t = pending.pop(k)
                row.append((t, used))
                used += length
                if not fill:
                    break
            batch.append(row)
        result.append(batch)
    return result


def batch_tensors(
    rows: list[list[TokenTree]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Token ids and positions of rows of token trees side by side, right-padded, and the attention mask (additive: 0
    or -inf; each token sees itself and its ancestors in its own tree, padding only itself); None when every row is
    one plain sequence, which causal attention scores."""
    parents = []
    for row in rows:
        parents.append([])
        for tree in row:
            offset = len(parents[-1])
            parents[-1] += [parent + offset if parent >= 0 else -1 for parent in tree.parents]
    length = max(len(row_parents) for row_parents in parents)
    idx = torch.zeros(len(rows), length, dtype=torch.long)
    positions = torch.zeros(len(rows), length, dtype=torch.long)
    for b, row in enumerate(rows):
        n = len(parents[b])
        idx[b, :n] = torch.tensor([token for tree in row for token in tree.tokens])
        positions[b, :n] = torch.tensor([position for tree in row for position in tree.positions])
    if all(row_parents == list(range(-1, len(row_parents) - 1)) for row_parents in parents):
        return idx.to(device), positions.to(device), None
    allowed = torch.eye(length, dtype=torch.bool).repeat(len(rows), 1, 1)
    for b, row_parents in enumerate(parents):
        for node, parent in enumerate(row_parents):
            if parent >= 0:
                allowed[b, node] |= allowed[b, parent]
    mask = torch.zeros(len(rows), 1, length, length).masked_fill_(~allowed[:, None], float("-inf"))
    return idx.to(device), positions.to(device), mask.to(device)


def tree_forward(model: GPT, idx: torch.Tensor, positions: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The final hidden states of ``model(idx)`` (before the head: see ``project``), with each token at its own
    position and the given attention mask (GPT.forward without a KV cache numbers tokens 0..T-1, attends causally)."""
    config = model.config
    cos, sin = model.cos[positions], model.sin[positions]  # (B, T, rope_n_elem)
    if mask is not None:
        mask = mask.to(model.transformer.wte.weight.dtype)
    x = model.transformer.wte(idx)
    if config.scale_embeddings:
        x = x * torch.tensor(config.n_embd**0.5, dtype=x.dtype)
    for block_idx, block in enumerate(model.transformer.h):
        if config.rope_indices is not None:
            indices = config.rope_indices[block_idx]
            x = block(x, cos[..., indices], sin[..., indices], mask)
        else:
            x = block(x, cos, sin, mask)
    return model.transformer.ln_f(x)


def project(model: GPT, hidden: torch.Tensor) -> torch.Tensor:
    """The LM head on final hidden states, with litgpt's logit soft-capping where the model has it."""
    logits = model.lm_head(hidden)
    softcapping = model.config.final_logit_softcapping
    return logits if softcapping is None else torch.tanh(logits / softcapping) * softcapping
