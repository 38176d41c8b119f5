"""Chat templates: how messages become token ids, which tokens carry loss, and the inference prompt.

The same template object is used by training (``encode``) and evaluation (``prompt_ids``,
``continuation_ids``), so a model is always asked in the format it was trained on.

- ``doit``: DoIT's format. ``<user>``, ``<assistant>``, ``<eot>`` are special tokens; each message is
  role token + tokens(content.strip()) + ``<eot>``; no BOS/EOS, no system prompt (a system message,
  if present, uses ``<system>``). The inference prompt ends with ``<assistant>``. Loss on every
  assistant turn's content and its ``<eot>``; role tokens and user turns are masked.
- ``fastchat``: the Vicuna v1.1 template of the DMT paper ("A chat between a curious user … USER: …
  ASSISTANT: …</s>"); loss on assistant replies and their EOS.
- ``hf``: the tokenizer's own ``chat_template``; assistant spans found by rendering prefixes.

Truncation policy (``encode`` with ``max_len``): right truncation, as DoIT does; the caller counts
``Encoded.truncated`` and drops examples left with no trainable token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

IGNORE_INDEX = -100

FASTCHAT_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                   "The assistant gives helpful, detailed, and polite answers to the user's questions.")


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_loss_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


class _Special(str):
    """A piece of a rendering that is one special token, not text to tokenize."""


def _tok_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def _tok_special(tokenizer: Any, tok: str) -> list[int]:
    tid = tokenizer.convert_tokens_to_ids(tok)
    if tid is None or tid == getattr(tokenizer, "unk_token_id", None) and tok != tokenizer.unk_token:
        raise ValueError(f"special token {tok!r} is not in the tokenizer; call add_special_tokens(tokenizer, template)")
    return [tid]


class ChatTemplate:
    """Base class: a template renders messages into (piece, trainable) segments."""

    name = "base"
    special_tokens: tuple[str, ...] = ()
    stop: tuple[str, ...] = ()

    def segments(self, messages: Sequence[dict], *, generation_prompt: bool) -> list[tuple[str, bool]]:
        raise NotImplementedError

    def _ids(self, tokenizer: Any, segs: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        for piece, train in segs:
            t = _tok_special(tokenizer, piece) if isinstance(piece, _Special) else _tok_text(tokenizer, piece)
            ids += t
            labels += t if train else [IGNORE_INDEX] * len(t)
        return ids, labels

    def encode(self, tokenizer: Any, messages: Sequence[dict], max_len: int | None = None) -> Encoded:
        """Token ids and labels for training (loss only on assistant turns), right-truncated to max_len."""
        ids, labels = self._ids(tokenizer, self.segments(messages, generation_prompt=False))
        truncated = max_len is not None and len(ids) > max_len
        if truncated:
            ids, labels = ids[:max_len], labels[:max_len]
        return Encoded(ids, labels, truncated)

    def prompt_ids(self, tokenizer: Any, messages: Sequence[dict]) -> list[int]:
        """Inference prompt: ``messages`` (pass them without the gold reply) then the assistant marker."""
        return self._ids(tokenizer, self.segments(messages, generation_prompt=True))[0]

    def continuation_ids(self, tokenizer: Any, text: str) -> list[int]:
        """Tokens of an assistant reply as the model produces them (content + end of turn)."""
        ids, _ = self._ids(tokenizer, self.reply_segments(text))
        return ids

    def reply_segments(self, text: str) -> list[tuple[str, bool]]:
        raise NotImplementedError

    def render(self, messages: Sequence[dict], *, generation_prompt: bool = False) -> str:
        """Readable text of a rendering (for logs and previews)."""
        return "".join(p for p, _ in self.segments(messages, generation_prompt=generation_prompt))


class DoitTemplate(ChatTemplate):
    name = "doit"
    special_tokens = ("<user>", "<assistant>", "<eot>", "<system>")
    stop = ("<eot>", "<user>", "<assistant>")
    _role = {"user": "<user>", "assistant": "<assistant>", "system": "<system>"}

    def segments(self, messages, *, generation_prompt):
        segs: list[tuple[str, bool]] = []
        for m in messages:
            train = m["role"] == "assistant"
            segs.append((_Special(self._role[m["role"]]), False))
            segs.append((m["content"].strip(), train))
            segs.append((_Special("<eot>"), train))
        if generation_prompt:
            segs.append((_Special("<assistant>"), False))
        return segs

    def reply_segments(self, text):
        return [(text.strip(), True), (_Special("<eot>"), True)]


class FastChatTemplate(ChatTemplate):
    """Vicuna v1.1; the tokenizer's EOS ends each assistant turn (``eos`` is set by ``for_tokenizer``)."""

    name = "fastchat"
    eos = "</s>"

    @property
    def stop(self):  # type: ignore[override]
        return (self.eos, "USER:")

    def segments(self, messages, *, generation_prompt):
        system = next((m["content"] for m in messages if m["role"] == "system"), FASTCHAT_SYSTEM)
        segs: list[tuple[str, bool]] = [(system, False)]
        for m in messages:
            if m["role"] == "user":
                segs.append((" USER: " + m["content"].strip(), False))
            elif m["role"] == "assistant":
                segs.append((" ASSISTANT:", False))
                segs.append((" " + m["content"].strip(), True))
                segs.append((_Special(self.eos), True))
        if generation_prompt:
            segs.append((" ASSISTANT:", False))
        return segs

    def reply_segments(self, text):
        return [(" " + text.strip(), True), (_Special(self.eos), True)]


class HFChatTemplate(ChatTemplate):
    """The tokenizer's own chat template; assistant spans are found by rendering growing prefixes."""

    name = "hf"

    def encode(self, tokenizer, messages, max_len=None):
        ids: list[int] = []
        labels: list[int] = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self._render_ids(tokenizer, messages[:i], generation_prompt=True)
            upto = self._render_ids(tokenizer, messages[: i + 1], generation_prompt=False)
            if upto[: len(before)] != before:
                raise ValueError("the tokenizer's chat template does not render prefixes stably")
            new = before[len(ids):]
            ids += new
            labels += [IGNORE_INDEX] * len(new)
            ids += upto[len(before):]
            labels += upto[len(before):]
        full = self._render_ids(tokenizer, messages, generation_prompt=False)
        if len(full) > len(ids):  # trailing non-assistant messages
            labels += [IGNORE_INDEX] * (len(full) - len(ids))
            ids = full
        truncated = max_len is not None and len(ids) > max_len
        if truncated:
            ids, labels = ids[:max_len], labels[:max_len]
        return Encoded(ids, labels, truncated)

    @staticmethod
    def _render_ids(tokenizer, messages, *, generation_prompt):
        if not messages:
            return []
        out = tokenizer.apply_chat_template(list(messages), tokenize=True, add_generation_prompt=generation_prompt)
        if isinstance(out, dict) or hasattr(out, "keys"):
            out = out["input_ids"]
        return list(out)

    def prompt_ids(self, tokenizer, messages):
        return self._render_ids(tokenizer, messages, generation_prompt=True)

    def continuation_ids(self, tokenizer, text):
        ids = _tok_text(tokenizer, text.strip())
        return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])

    def segments(self, messages, *, generation_prompt):
        raise TypeError("the hf template renders through tokenizer.apply_chat_template")

    def render(self, messages, *, generation_prompt=False):
        raise TypeError("the hf template renders through tokenizer.apply_chat_template")


TEMPLATES = {"doit": DoitTemplate, "fastchat": FastChatTemplate, "hf": HFChatTemplate}


def get_template(name: str) -> ChatTemplate:
    """A template by name: ``doit`` | ``fastchat`` | ``hf``."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown chat template {name!r}; allowed: {', '.join(TEMPLATES)}")
    return TEMPLATES[name]()


def for_tokenizer(template: ChatTemplate, tokenizer: Any) -> ChatTemplate:
    """Bind tokenizer-specific pieces (FastChat's EOS) to the template."""
    if isinstance(template, FastChatTemplate) and tokenizer.eos_token:
        template.eos = tokenizer.eos_token
    return template


def add_special_tokens(tokenizer: Any, template: ChatTemplate) -> int:
    """Add the template's special tokens (and a pad token if missing) to ``tokenizer``; returns how many.

    The caller resizes the model's embeddings to ``len(tokenizer)`` when this is > 0.
    """
    missing = [t for t in template.special_tokens if t not in tokenizer.get_vocab()]
    added = tokenizer.add_special_tokens({"additional_special_tokens": missing}) if missing else 0
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return added
