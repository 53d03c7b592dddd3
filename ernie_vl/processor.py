"""ERNIE-VL processor: chat template + tokenizer + image/video processors → model inputs (transformers 5.23.0 parity).

``Processor.from_pretrained(path)`` loads a checkpoint folder; ``processor(text=..., images=..., videos=...)`` returns
the reference keys and layouts; ``apply_chat_template`` renders/tokenizes conversations; ``write_processor_files``
writes the processor side of a (tiny) checkpoint folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from . import chat as chatlib
from .chat import DEFAULT_CHAT_TEMPLATE
from .errors import PlaceholderMismatchError, ProcessingError
from .inputs import MediaTokens, ModelInputs
from .media_cache import ProcessedMediaCache
from .processor_files import PACKAGED_FONT, _load_chat_template, _read_json
from .image import ImageProcessor, ImageProcessorConfig, flatten_images
from .tokenizer import Tokenizer
from .video import VideoProcessor, VideoProcessorConfig, flatten_videos

# --------------------------------------------------------------------------------------------------------------------
# The processor
# --------------------------------------------------------------------------------------------------------------------
TEXT_KWARGS = ("padding", "truncation", "max_length", "padding_side", "return_tensors", "add_special_tokens",
               "return_attention_mask", "return_token_type_ids")  # fmt: skip
VIDEO_KWARGS = ("num_frames", "fps", "min_frames", "max_frames", "do_sample_frames", "draw_on_frames", "video_metadata",
                "return_metadata", "short_video")  # fmt: skip


class ProcessorOutput(dict):
    """The processor's result: a dict (keys in the reference order) with ``.to(device)`` for its tensors.

    Keys: ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` ``[B, S]``; ``pixel_values`` float32 ``[N, 588]``
    and ``image_grid_thw`` ``[n_images, 3]`` if images; ``pixel_values_videos`` ``[M, 588]`` and ``video_grid_thw``
    ``[n_videos, 3]`` if videos; ``moe_mm_token_type_ids`` ``[B, S]``; optionally ``video_metadata`` (list of
    :class:`VideoMetadata`, ``return_metadata=True``) and ``position_ids`` ``[3, B, S]`` / ``rope_deltas`` ``[B, 1]``
    (``return_positions=True``). Text keys are lists of lists unless ``return_tensors="pt"`` (int64 ``[B, S]``).
    """

    def to(self, device: torch.device | str) -> "ProcessorOutput":
        return ProcessorOutput({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


class Processor:
    """ERNIE-4.5-VL processor with the reference's API (``Ernie4_5_VLMoeProcessor``, transformers 5.23.0).

    ``processor(text=..., images=..., videos=..., return_tensors="pt", padding=True)`` expands every
    ``<|IMAGE_PLACEHOLDER|>`` into ``t·h·w / merge²`` placeholder tokens and every ``<|VIDEO_PLACEHOLDER|>`` into
    ``t·h·w / (merge²·2)`` (placeholders matched to media in order over the batch), tokenizes, and adds the token-type
    tensors. ``apply_chat_template`` renders the checkpoint's chat template and optionally runs the processor on the
    result with the media found in the messages.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        image_processor: ImageProcessor | None = None,
        video_processor: VideoProcessor | None = None,
        chat_template: str | None = None,
    ):
        self.tokenizer = tokenizer
        self.image_processor = image_processor or ImageProcessor()
        self.video_processor = video_processor or VideoProcessor(font_path=PACKAGED_FONT)
        self.chat_template = chat_template or tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
        self.media_cache: ProcessedMediaCache | None = None  # set to reuse processed media across calls
        for name in ("image", "video"):
            for part in ("token", "start_token", "end_token"):
                attr = f"{name}_{part}"
                setattr(self, attr, getattr(tokenizer, attr))
                setattr(self, f"{attr}_id", getattr(tokenizer, f"{attr}_id"))
        missing = [a for a in ("image_token_id", "video_token_id") if getattr(self, a) is None]
        if missing:
            raise ProcessingError(f"the tokenizer has no id for {missing}")

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        font: str | os.PathLike | None = None,
        decode_thread: bool = True,
        image_kwargs: Mapping[str, Any] | None = None,
        video_kwargs: Mapping[str, Any] | None = None,
    ) -> "Processor":
        """Load a checkpoint folder (``processor_config.json`` or the legacy preprocessor configs, tokenizer files,
        ``chat_template.jinja``, the timestamp font).

        ``font`` overrides the video processor's font file (default: the file named in the config, next to it; the
        reference refuses to load without it, and so do we). ``image_kwargs``/``video_kwargs`` override config
        values (our field names, e.g. ``max_pixels``, ``max_decoded_pixels``, ``max_frames``).
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a checkpoint folder")
        nested = _read_json(path / "processor_config.json") or {}
        image_cfg = nested.get("image_processor") or _read_json(path / "preprocessor_config.json") or {}
        video_cfg = (
            nested.get("video_processor")
            or _read_json(path / "video_preprocessor_config.json")
            or _read_json(path / "preprocessor_config.json")
            or {}
        )
        image_config = ImageProcessorConfig.from_dict(image_cfg, **dict(image_kwargs or {}))
        video_config = VideoProcessorConfig.from_dict(video_cfg, **dict(video_kwargs or {}))
        font_path = None
        if video_config.draw_on_frames:
            if font is not None:
                font_path = Path(font)
            elif video_config.font:
                font_path = Path(video_config.font)
                if not font_path.is_absolute():
                    font_path = path / font_path
            if font_path is None or not font_path.is_file():
                raise FileNotFoundError(
                    f"{path}: the video processor draws timestamps with font {video_config.font!r}, which is not in "
                    f"the checkpoint folder; copy it there or pass font=... (e.g. ernie_vl.processor.PACKAGED_FONT)"
                )
        tokenizer = Tokenizer.from_pretrained(path)
        if (path / "tokenizer.json").is_file():
            template = _load_chat_template(path, nested) or tokenizer.chat_template
        else:  # original SentencePiece checkpoint: its template predates the HF placeholders
            template = tokenizer.chat_template or DEFAULT_CHAT_TEMPLATE
        return cls(
            tokenizer,
            ImageProcessor(image_config),
            VideoProcessor(video_config, font_path=font_path, decode_thread=decode_thread),
            chat_template=template,
        )

    # ------------------------------------------------------------------------------------------------ __call__
    def __call__(
        self,
        text: str | Sequence[str] | None = None,
        images: Any = None,
        videos: Any = None,
        *,
        return_tensors: str | None = None,
        padding: bool | str = False,
        truncation: bool = False,
        max_length: int | None = None,
        padding_side: str | None = None,
        video_metadata: Any = None,
        return_metadata: bool = False,
        num_frames: int | None = None,
        fps: float | None = None,
        min_frames: int | None = None,
        max_frames: int | None = None,
        do_sample_frames: bool | None = None,
        draw_on_frames: bool | None = None,
        short_video: str | None = None,
        return_positions: bool = False,
        source: str | None = None,
        **kwargs: Any,
    ) -> ProcessorOutput:
        """Model inputs for a batch of texts with their images/videos (reference keys, order and layouts).

        ``source`` names the sample in errors (e.g. a benchmark sample id). ``return_positions=True`` adds the 3-D
        rope ``position_ids`` ``[3, B, S]`` and ``rope_deltas`` ``[B, 1]`` (needs ``return_tensors="pt"``).
        ``short_video``: how to sample a video with fewer frames than ``num_frames`` (a rule of
        ``video_sampling.SHORT_VIDEO_RULES``; None: an error, as in the reference).
        """
        kwargs.pop("add_special_tokens", None)  # no-op: the ERNIE tokenizer adds no special tokens
        kwargs.pop("return_token_type_ids", None)
        kwargs.pop("return_attention_mask", None)
        if kwargs:
            raise TypeError(f"unexpected processor arguments: {sorted(kwargs)}")
        if text is None and images is None and videos is None:
            raise ValueError("You need to provide at least one input to call Processor")
        if text is None:
            raise TypeError("text is required: the processor expands the placeholders of the prompt (pass text=...)")
        if isinstance(text, str):
            texts = [text]
        elif isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            texts = list(text)
        else:
            raise ValueError("`text` must be a string or list of strings.")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported (use None or 'pt')")
        prefix = f"{source}: " if source else ""

        image_list = flatten_images(images) if images is not None else []
        video_list = flatten_videos(videos) if videos is not None else []
        self._check_counts(texts, self.image_token, len(image_list), "image", images is not None, source)
        self._check_counts(texts, self.video_token, len(video_list), "video", videos is not None, source)

        out_images: dict[str, Any] = {}
        out_videos: dict[str, Any] = {}
        if image_list:
            names = [f"{prefix}image {i}{_media_name(x)}" for i, x in enumerate(image_list)]
            run = lambda idx: self.image_processor([image_list[i] for i in idx], sources=[names[i] for i in idx])  # noqa: E731
            out_images = self.media_cache.process("image", image_list, run) if self.media_cache is not None else run(
                range(len(image_list)))
        if video_list:
            names = [f"{prefix}video {i}{_media_name(x)}" for i, x in enumerate(video_list)]
            sampling = dict(num_frames=num_frames, fps=fps, min_frames=min_frames, max_frames=max_frames,
                            do_sample_frames=do_sample_frames, draw_on_frames=draw_on_frames, short_video=short_video)
            run = lambda idx: self.video_processor(  # noqa: E731
                [video_list[i] for i in idx], video_metadata=video_metadata, sources=[names[i] for i in idx],
                **sampling)
            cache = self.media_cache if video_metadata is None else None  # given metadata: no identity to key on
            out_videos = (cache.process("video", video_list, run, tuple(sorted(sampling.items()))) if cache is not None
                          else run(range(len(video_list))))

        ids = self._tokenize_expanded(texts, out_images.get("image_grid_thw"), out_videos.get("video_grid_thw"))
        if truncation and max_length is not None:
            ids = [x[:max_length] for x in ids]
            self._check_truncation(texts, ids, out_images, out_videos, source)
        input_ids, attention_mask = self._pad(ids, padding, max_length, padding_side)
        mm, moe = self._token_types(input_ids)

        result = ProcessorOutput()
        as_pt = return_tensors == "pt"
        if as_pt and len({len(x) for x in input_ids}) > 1:
            raise ValueError("sequences have different lengths; pass padding=True to return tensors")
        conv = (lambda x: torch.tensor(x, dtype=torch.long).reshape(len(x), -1)) if as_pt else (lambda x: x)
        result["input_ids"] = conv(input_ids)
        result["attention_mask"] = conv(attention_mask)
        result["mm_token_type_ids"] = conv(mm)
        if out_images:
            result["pixel_values"] = out_images["pixel_values"]
            result["image_grid_thw"] = out_images["image_grid_thw"]
        if out_videos:
            result["pixel_values_videos"] = out_videos["pixel_values_videos"]
            result["video_grid_thw"] = out_videos["video_grid_thw"]
        result["moe_mm_token_type_ids"] = conv(moe)
        if return_metadata and out_videos:
            result["video_metadata"] = out_videos["video_metadata"]
        if return_positions:
            if not as_pt:
                raise ValueError("return_positions=True needs return_tensors='pt'")
            from .positions import get_rope_index

            merge = self.image_processor.config.merge_size
            position_ids, rope_deltas = get_rope_index(
                result["input_ids"], result["mm_token_type_ids"], result.get("image_grid_thw"),
                result.get("video_grid_thw"), result["attention_mask"], spatial_merge_size=merge,
                temporal_merge_size=self.video_processor.config.temporal_patch_size,
            )  # fmt: skip
            result["position_ids"] = position_ids
            result["rope_deltas"] = rope_deltas
        return result

    # ------------------------------------------------------------------------------------------------ pieces
    @staticmethod
    def _check_counts(texts, token, n_media, kind, given, source):
        counts = [t.count(token) for t in texts]
        if given and sum(counts) != n_media:
            raise PlaceholderMismatchError(
                f"the prompts contain {sum(counts)} {token} placeholder(s) (per text: {counts}) but {n_media} "
                f"{kind}(s) were given",
                source,
            )
        if not given and sum(counts):
            raise PlaceholderMismatchError(
                f"found {sum(counts)} {token} placeholder(s) in the text but no {kind}s were passed", source
            )

    def _tokenize_expanded(self, texts, image_grid, video_grid) -> list[list[int]]:
        """Token ids with every placeholder expanded to its token count.

        Equivalent to tokenizing the expanded string (placeholders are added tokens, split out before BPE, so the
        text between them tokenizes the same), but without tokenizing thousands of placeholder strings.
        """
        merge2 = self.image_processor.config.merge_size ** 2
        vmerge = self.video_processor.config.merge_size ** 2 * self.video_processor.config.temporal_patch_size
        img_counts = iter([] if image_grid is None else (image_grid.prod(-1) // merge2).tolist())
        vid_counts = iter([] if video_grid is None else (video_grid.prod(-1) // vmerge).tolist())
        img_id, vid_id = self.image_token_id, self.video_token_id
        out = []
        for ids in self.tokenizer.encode_batch(texts):
            if img_id not in ids and vid_id not in ids:
                out.append(ids)
                continue
            expanded: list[int] = []
            for t in ids:
                if t == img_id:
                    expanded.extend([img_id] * next(img_counts))
                elif t == vid_id:
                    expanded.extend([vid_id] * next(vid_counts))
                else:
                    expanded.append(t)
            out.append(expanded)
        return out

    def _check_truncation(self, texts, ids, out_images, out_videos, source):
        merge2 = self.image_processor.config.merge_size ** 2
        vmerge = merge2 * self.video_processor.config.temporal_patch_size
        need_img = int((out_images["image_grid_thw"].prod(-1) // merge2).sum()) if out_images else 0
        need_vid = int((out_videos["video_grid_thw"].prod(-1) // vmerge).sum()) if out_videos else 0
        got_img = sum(x.count(self.image_token_id) for x in ids)
        got_vid = sum(x.count(self.video_token_id) for x in ids)
        if got_img != need_img or got_vid != need_vid:
            raise PlaceholderMismatchError(
                f"truncation cut multimodal placeholder tokens (images {got_img}/{need_img}, videos "
                f"{got_vid}/{need_vid}); disable truncation or increase max_length",
                source,
            )

    def _pad(self, ids, padding, max_length, padding_side):
        masks = [[1] * len(x) for x in ids]
        if not padding or padding == "do_not_pad":
            return ids, masks
        if padding == "max_length":
            if max_length is None:
                raise ValueError("padding='max_length' needs max_length")
            target = max_length
        elif padding is True or padding == "longest":
            target = max((len(x) for x in ids), default=0)
        else:
            raise ValueError(f"unknown padding={padding!r}")
        side = padding_side or self.tokenizer.padding_side
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out_ids, out_masks = [], []
        for x, m in zip(ids, masks):
            n = target - len(x)
            if n > 0:
                x, m = ([pad] * n + x, [0] * n + m) if side == "left" else (x + [pad] * n, m + [0] * n)
            out_ids.append(x)
            out_masks.append(m)
        return out_ids, out_masks

    def _token_types(self, input_ids):
        img, vid = self.image_token_id, self.video_token_id
        img_moe = {img, self.image_start_token_id, self.image_end_token_id} - {None}
        vid_moe = {vid, self.video_start_token_id, self.video_end_token_id} - {None}
        mm, moe = [], []
        for ids in input_ids:
            mm.append([1 if t == img else 2 if t == vid else 0 for t in ids])
            moe.append([1 if t in img_moe else 2 if t in vid_moe else 0 for t in ids])
        return mm, moe

    # ------------------------------------------------------------------------------------------------ chat
    def apply_chat_template(
        self,
        conversation: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        return_dict: bool = False,
        return_tensors: str | None = None,
        chat_template: str | None = None,
        processor_kwargs: Mapping[str, Any] | None = None,
        source: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Render (and optionally tokenize/process) one conversation or a batch of conversations.

        ``tokenize=False``: the prompt string (list of strings for a batch). ``tokenize=True``: the processor runs on
        the prompt(s) with the images/videos of the messages (parts ``{"type": "image", "image"|"url"|"path"|
        "base64": ...}``, ``{"type": "video", "video"|"url"|"path": ...}``, OpenAI ``image_url``/``video_url``), or
        with ``images=``/``videos=`` given here (placeholder parts ``{"type": "image"}`` name no media);
        returns ``input_ids`` (list of lists, or ``[B, S]`` with ``return_tensors="pt"``), or the whole
        :class:`ProcessorOutput` with ``return_dict=True``. Keyword arguments that the template uses
        (e.g. ``enable_thinking``) go to the template; processor arguments (``padding``, ``fps``, ``num_frames``, ...)
        may be given directly or in ``processor_kwargs``.
        """
        template = chat_template or self.chat_template
        template_vars = chatlib.template_variables(template)
        proc_kwargs = dict(processor_kwargs or {})
        tmpl_kwargs = {}
        for k, v in kwargs.items():
            if k in template_vars:
                tmpl_kwargs[k] = v
            else:
                proc_kwargs[k] = v
        batched = bool(conversation) and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        prompts, all_images, all_videos = [], [], []
        for b, conv in enumerate(conversations):
            src = source if not batched else f"{source or 'conversation'} [{b}]"
            messages = chatlib.normalize_conversation(conv, src)
            chatlib.validate_conversation(messages, src)
            prompts.append(
                chatlib.render(
                    template, messages, add_generation_prompt=add_generation_prompt,
                    special_tokens=self.tokenizer.special_tokens_map, **tmpl_kwargs,
                )  # fmt: skip
            )
            imgs, vids = chatlib.collect_media(messages)
            all_images.extend(imgs)
            all_videos.extend(vids)
        if not tokenize:
            return prompts if batched else prompts[0]
        if "do_sample_frames" not in proc_kwargs and (
            proc_kwargs.get("fps") is not None or proc_kwargs.get("num_frames") is not None
        ):
            proc_kwargs["do_sample_frames"] = True
        if "images" in proc_kwargs:  # media given apart from the messages (placeholder parts name none)
            all_images = list(proc_kwargs.pop("images"))
        if "videos" in proc_kwargs:
            all_videos = list(proc_kwargs.pop("videos"))
        out = self(
            text=prompts,
            images=all_images or None,
            videos=all_videos or None,
            return_tensors=return_tensors,
            source=source,
            **proc_kwargs,
        )
        return out if return_dict else out["input_ids"]

    # ------------------------------------------------------------------------------------------------ model inputs
    @property
    def media_tokens(self) -> MediaTokens:
        return MediaTokens(
            self.image_token_id, self.video_token_id, self.image_start_token_id, self.image_end_token_id,
            self.video_start_token_id, self.video_end_token_id, self.image_processor.config.merge_size,
            self.video_processor.config.temporal_patch_size,
        )

    def prepare(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        source: str | None = None,
        with_metadata: bool = False,
        video_sampling: Mapping[str, Any] | None = None,
        **template_kwargs: Any,
    ):
        """One conversation -> its `ModelInputs`: the one request preparation of the batch pipeline, the server and
        the expert-parallel server (chat template, media decode and processing, tokens, types, 3-D positions).

        A trailing assistant message is a prefill the model continues (VLMEvalKit's MVBench "Best option:("): the
        prompt is rendered without a generation prompt and cut right after the prefill text, as transformers'
        `continue_final_message=True` does; otherwise a generation prompt is added. `video_sampling`: frame policy
        (`num_frames`, `fps`, `min_frames`, `max_frames`); an explicit `num_frames` widens the default bounds to
        include it (the default min_frames=16 would refuse a 4-frame policy). `template_kwargs` go to the chat
        template (e.g. `enable_thinking`). `with_metadata=True` returns `(inputs, video_metadata)`.
        """
        messages = chatlib.normalize_conversation(messages, source)
        chatlib.validate_conversation(messages, source)
        prefill = bool(messages) and messages[-1].get("role") == "assistant"
        prompt = chatlib.render(self.chat_template, messages, add_generation_prompt=not prefill,
                                special_tokens=self.tokenizer.special_tokens_map, **template_kwargs)
        if prefill:
            content = messages[-1]["content"]
            final = content if isinstance(content, str) else "".join(
                p.get("text", "") for p in content if p.get("type") == "text")
            cut = prompt.rfind(final) if final else -1
            if cut < 0:
                raise ProcessingError("could not locate the assistant prefill in the rendered prompt", source)
            prompt = prompt[: cut + len(final)]
        images, videos = chatlib.collect_media(messages)
        kw: dict[str, Any] = {}
        if videos:
            kw = dict(video_sampling or {})
            if kw.get("num_frames") is not None:
                kw.setdefault("min_frames", min(int(kw["num_frames"]), 16))
                kw.setdefault("max_frames", max(int(kw["num_frames"]), 180))
            if kw.get("fps") is not None or kw.get("num_frames") is not None:
                kw.setdefault("do_sample_frames", True)
        out = self(text=prompt, images=images or None, videos=videos or None, return_tensors="pt", source=source,
                   return_metadata=with_metadata, **kw)
        inputs = ModelInputs.build(
            out["input_ids"][0], self.media_tokens, out.get("pixel_values"), out.get("image_grid_thw"),
            out.get("pixel_values_videos"), out.get("video_grid_thw"),
        )
        return (inputs, out.get("video_metadata") or []) if with_metadata else inputs

    # ------------------------------------------------------------------------------------------------ decoding
    def batch_decode(self, sequences, skip_special_tokens: bool = False) -> list[str]:
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------------------------------------ sizes
    def num_image_tokens(self, height: int, width: int) -> int:
        """Placeholder tokens of an image of this size (reference ``_get_num_multimodal_tokens``)."""
        return self.image_processor.num_patches(height, width) // self.image_processor.config.merge_size ** 2


def _media_name(x: Any) -> str:
    if isinstance(x, (str, os.PathLike)):
        s = os.fspath(x)
        return f" ({s if len(s) < 120 else s[:50] + '...'})"
    return ""

