"""An lm-evaluation-harness model around LitGPT's GPT: no conversion to a Hugging Face folder on the way.

Scoring follows lm-eval's own Hugging Face backend (``HFLM``): the same context/continuation split, the same
truncation to the last ``max_length + 1`` tokens, the same rolling windows for perplexity, so the numbers agree.
"""

from contextlib import contextmanager
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

        Requests whose model input is the same token sequence (e.g. one context with one-token answers " yes" and
        " no") share one row of the batch; the vocabulary projection runs once per batch, only at the positions
        where a continuation token is predicted.
        """
        sharing: dict[tuple[int, ...], list[int]] = {}
        for i, (_, context, continuation) in enumerate(requests):
            sharing.setdefault(tuple((context + continuation)[-(self.max_length + 1) :][:-1]), []).append(i)
        inputs = sorted(sharing, key=len, reverse=True)
        batch_size = override_bs or self.detect_batch_size(len(inputs[0]) if inputs else 1)
        results: list[Optional[tuple[float, bool]]] = [None] * len(requests)
        for start in tqdm(range(0, len(inputs), batch_size), disable=disable_tqdm, desc="loglikelihood"):
            rows = inputs[start : start + batch_size]
            batch = torch.zeros(len(rows), len(rows[0]), dtype=torch.long)
            for row, tokens in enumerate(rows):
                batch[row, : len(tokens)] = torch.tensor(tokens)  # right padding: causal attention never sees it
            # (request, row, positions): a continuation longer than the context window is scored on the part that fits
            spans = []
            for row, tokens in enumerate(rows):
                for i in sharing[tokens]:
                    n = min(len(requests[i][2]), len(tokens))
                    spans.append((i, row, range(len(tokens) - n, len(tokens))))
            with hidden_states_only(self.model) as head:
                hidden = self.model(batch.to(self.device))
            row_index = torch.tensor([row for _, row, positions in spans for _ in positions], device=self.device)
            position_index = torch.tensor([p for _, _, positions in spans for p in positions], device=self.device)
            log_probs = F.log_softmax(head(hidden[row_index, position_index]).float(), dim=-1).cpu()
            offset = 0
            for i, _, positions in spans:
                span = log_probs[offset : offset + len(positions)]
                offset += len(positions)
                target = torch.tensor(requests[i][2][-len(positions) :])
                greedy = bool((span.argmax(dim=-1) == target).all())
                results[i] = (float(span.gather(1, target[:, None]).sum()), greedy)
                self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
        return results

    def detect_batch_size(self, length: int) -> int:
        """lm-eval's ``batch_size="auto"``: the largest batch, from max_batch_size down by halving, whose full forward
        pass over ``length`` tokens does not run out of memory; found once, on the longest request."""
        from accelerate import find_executable_batch_size

        if isinstance(self.batch_size, int):
            return self.batch_size

        @find_executable_batch_size(starting_batch_size=self.max_batch_size)
        def forward_batch(batch_size: int) -> int:
            F.log_softmax(
                self.model(torch.ones(batch_size, length, dtype=torch.long, device=self.device)).float(), dim=-1
            )
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


@contextmanager
def hidden_states_only(model: GPT):
    """Makes ``model(idx)`` return the final hidden states; yields the LM head (with any logit soft-capping)."""
    head, softcapping = model.lm_head, model.config.final_logit_softcapping
    model.lm_head, model.config.final_logit_softcapping = torch.nn.Identity(), None

    def project(hidden: torch.Tensor) -> torch.Tensor:
        logits = head(hidden)
        return logits if softcapping is None else torch.tanh(logits / softcapping) * softcapping

    try:
        yield project
    finally:
        model.lm_head, model.config.final_logit_softcapping = head, softcapping
