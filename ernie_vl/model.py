"""ERNIE-4.5-VL-MoE for conditional generation: vision tower + resampler + MoE text decoder + tied LM head.

Mirrors transformers 5.23.0 `Ernie4_5_VLMoeForConditionalGeneration` (model-spec §8-9). Module and parameter names
equal the fused Hugging Face layout (`model.language_model.*`, `model.vision_tower.*`, `model.resampler_model.*`,
`lm_head.weight`), so a fused checkpoint loads by name and the original layout through `weights.py`.

Inputs use the same tensor layouts as the reference:
    input_ids            [B, S] int64 (left padding for batches)
    attention_mask       [B, S] (1 real, 0 padding)
    pixel_values         [N_img_patches, 3*14*14] float,  image_grid_thw [n_images, 3] (1, h, w)
    pixel_values_videos  [N_vid_patches, 3*14*14] float,  video_grid_thw [n_videos, 3] (t, h, w)
Token types (`mm_token_type_ids`, `moe_mm_token_type_ids`) and 3-D positions are derived when not given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import causal_padding_mask
from .config import ModelConfig
from .kv_cache import KVCache
from .positions import get_rope_index, token_types
from .resampler import Resampler
from .rope import text_cos_sin, text_inv_freq, vision_inv_freq
from .sampling import sample_next
from .text import TextModel
from .vision import VisionTower


@dataclass
class CausalLMOutput:
    logits: torch.Tensor  # [B, S or logits_to_keep, V]
    cache: KVCache | None = None
    position_ids: torch.Tensor | None = None  # [3, B, S] positions used for the new tokens


class _Backbone(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.language_model = TextModel(cfg.text)
        self.vision_tower = VisionTower(cfg.vision)
        self.resampler_model = Resampler(cfg)


class ErnieVLForConditionalGeneration(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = _Backbone(cfg)
        self.lm_head = nn.Linear(cfg.text.hidden_size, cfg.text.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.language_model.embed_tokens.weight
        t = cfg.text
        self.register_buffer("inv_freq", text_inv_freq(t.head_dim, t.rope_theta, t.mrope_section), persistent=False)

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def reset_buffers(self, device) -> None:
        """(Re)compute the non-persistent rotary buffers, e.g. after building on the meta device."""
        t, v = self.config.text, self.config.vision
        self.inv_freq = text_inv_freq(t.head_dim, t.rope_theta, t.mrope_section).to(device)
        self.model.vision_tower.inv_freq = vision_inv_freq(v.head_dim, v.rope_theta).to(device)

    def to_dtype(self, dtype: torch.dtype) -> "ErnieVLForConditionalGeneration":
        """Cast floating weights to `dtype`, keeping router weights and correction biases in float32."""
        for name, p in self.named_parameters():
            keep32 = ".gate." in name
            p.data = p.data.to(torch.float32 if keep32 else dtype)
        return self

    # ------------------------------------------------------------------ vision
    def encode_images(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor) -> torch.Tensor:
        """[N, 588] patch rows -> [n_tokens, D] image features (h*w/4 per image, in input order)."""
        feats = self.model.vision_tower(pixel_values.to(self.device), image_grid_thw)
        return self.model.resampler_model(feats, image_grid_thw)

    def encode_videos(self, pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor) -> torch.Tensor:
        """[N, 588] frame patch rows -> [n_tokens, D] video features (t*h*w/8 per video)."""
        odd = video_grid_thw[:, 0] % 2 == 1
        if odd.any():
            raise ValueError(f"video_grid_thw {video_grid_thw.tolist()}: frame counts must be even (pad the last frame)")
        feats = self.model.vision_tower(pixel_values_videos.to(self.device), video_grid_thw)
        return self.model.resampler_model(feats, video_grid_thw)

    # ------------------------------------------------------------------ prefill helpers
    def embed(
        self,
        input_ids: torch.Tensor,
        image_features: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
        check: bool = True,
    ) -> torch.Tensor:
        """Token embeddings with vision features scattered into the placeholder positions (batch-major order).

        `check`: raise when the placeholder count differs from the feature rows (off for decode steps, where a
        sampled placeholder id is just a token)."""
        h = self.model.language_model.embed_tokens(input_ids)
        for name, token_id, feats in (
            ("image", self.config.image_token_id, image_features),
            ("video", self.config.video_token_id, video_features),
        ):
            if not check and feats is None:
                continue
            mask = input_ids == token_id
            n_tokens = int(mask.sum())
            n_feats = 0 if feats is None else feats.shape[0]
            if n_tokens != n_feats:
                raise ValueError(
                    f"{name} features and {name} tokens do not match: {n_tokens} placeholder tokens in input_ids, "
                    f"{n_feats} feature rows from the {name} inputs"
                )
            if n_feats:
                h = h.masked_scatter(mask[..., None], feats.to(h.dtype))
        return h

    def position_ids(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        mm_token_type_ids: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
        video_grid_thw: torch.Tensor | None,
    ) -> torch.Tensor:
        """[3, B, S] prompt positions (padding-aware; text-only rows reduce to 0..n-1 after the padding)."""
        v = self.config.vision
        pos, _ = get_rope_index(
            input_ids, mm_token_type_ids, image_grid_thw, video_grid_thw, attention_mask,
            v.spatial_merge_size, v.temporal_merge_size,
        )
        return pos

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        moe_mm_token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
        image_features: torch.Tensor | None = None,
        video_features: torch.Tensor | None = None,
    ) -> CausalLMOutput:
        """One forward pass over new tokens (the whole prompt, or decode tokens when `cache` holds a prefix).

        With a cache, `attention_mask` covers cached + new tokens and `position_ids` ([3, B, S]) must be given for
        the new tokens (the engine and `generate` do this).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        input_ids = input_ids.to(self.device)
        B, S = input_ids.shape
        start = cache.length if cache is not None else 0
        if attention_mask is None:
            attention_mask = torch.ones(B, start + S, dtype=torch.long, device=self.device)
        attention_mask = attention_mask.to(self.device)
        if attention_mask.shape != (B, start + S):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}, expected {(B, start + S)} (cached + new tokens)"
            )
        if pixel_values is not None and image_features is None:
            if image_grid_thw is None:
                raise ValueError("pixel_values given without image_grid_thw")
            image_features = self.encode_images(pixel_values, image_grid_thw)
        if pixel_values_videos is not None and video_features is None:
            if video_grid_thw is None:
                raise ValueError("pixel_values_videos given without video_grid_thw")
            video_features = self.encode_videos(pixel_values_videos, video_grid_thw)
        decoding = start > 0
        h = self.embed(input_ids, image_features, video_features, check=not decoding)
        if decoding and moe_mm_token_type_ids is None:
            moe_mm_token_type_ids = torch.zeros_like(input_ids)  # decode tokens are text (as the reference)
        if mm_token_type_ids is None or moe_mm_token_type_ids is None:
            mm, moe = token_types(input_ids, self.config)
            mm_token_type_ids = mm if mm_token_type_ids is None else mm_token_type_ids
            moe_mm_token_type_ids = moe if moe_mm_token_type_ids is None else moe_mm_token_type_ids
        if position_ids is None:
            if start:
                raise ValueError("position_ids are required when continuing from a cache")
            position_ids = self.position_ids(
                input_ids, attention_mask, mm_token_type_ids.to(self.device), image_grid_thw, video_grid_thw
            )
        elif position_ids.dim() == 2:
            position_ids = position_ids[None].expand(3, -1, -1)
        position_ids = position_ids.to(self.device)

        cos, sin = text_cos_sin(position_ids, self.inv_freq, self.config.text.mrope_section)
        mask = causal_padding_mask(attention_mask, start, S)
        vision_BS = None if decoding else moe_mm_token_type_ids.to(self.device) != 0
        h = self.model.language_model(h, cos, sin, mask, cache, start, vision_BS)
        if cache is not None:
            cache.advance(S)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        return CausalLMOutput(logits=self.lm_head(h), cache=cache, position_ids=position_ids)

    def decode_slots(
        self, tokens_B: torch.Tensor, position_ids_3B1: torch.Tensor, cache: KVCache, lengths_B: torch.Tensor,
        attend_len: int | None = None,
    ) -> torch.Tensor:
        """One decode step over cache slots that each hold a sequence of `lengths_B[b]` tokens from position 0.

        Writes the new token's K/V at `lengths_B[b]` and returns next-token logits [B, V]. Shapes are fixed for a
        given number of slots when `attend_len` is fixed (e.g. the cache capacity, as needed for graph capture);
        by default keys are cut at the longest slot. Decode tokens are text: they use the text experts."""
        L = attend_len if attend_len is not None else int(lengths_B.max()) + 1
        cache.view_len = L
        h = self.model.language_model.embed_tokens(tokens_B[:, None].to(self.device))
        cos, sin = text_cos_sin(position_ids_3B1, self.inv_freq, self.config.text.mrope_section)
        mask = (torch.arange(L, device=self.device)[None, :] <= lengths_B[:, None])[:, None, None, :]
        h = self.model.language_model(h, cos, sin, mask, cache, lengths_B, None)
        return self.lm_head(h[:, -1])

    # ------------------------------------------------------------------ generation
    def new_cache(self, batch: int, capacity: int) -> KVCache:
        t = self.config.text
        return KVCache(t.num_hidden_layers, batch, t.num_key_value_heads, capacity, t.head_dim, self.dtype, self.device)

    @torch.inference_mode()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        moe_mm_token_type_ids: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        generator: torch.Generator | None = None,
        **unused,
    ) -> torch.Tensor:
        """[B, S + n] ids like transformers' `generate`: prompt then new tokens; rows that hit EOS are filled with
        `pad_token_id` (default: the first EOS id) until every row is done or `max_new_tokens` is reached."""
        if unused:
            raise TypeError(f"generate() got unexpected arguments: {sorted(unused)}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        input_ids = input_ids.to(self.device)
        B, S = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        attention_mask = attention_mask.to(self.device)
        eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
        eos_t = torch.tensor(eos, device=self.device, dtype=torch.long)
        pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)

        cache = self.new_cache(B, S + max_new_tokens)
        out = self.forward(
            input_ids, attention_mask, pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw,
            mm_token_type_ids, moe_mm_token_type_ids, cache=cache, logits_to_keep=1,
        )
        next_pos_3B1 = out.position_ids[:, :, -1:] + 1
        logits = out.logits[:, -1]
        tokens, done = [], torch.zeros(B, dtype=torch.bool, device=self.device)
        mask = attention_mask
        for step in range(max_new_tokens):
            nxt = sample_next(logits, do_sample, temperature, top_k, top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            tokens.append(nxt)
            if eos:
                done |= torch.isin(nxt, eos_t)
                if bool(done.all()):
                    break
            if step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=mask.device)], dim=1)
            out = self.forward(nxt[:, None], mask, position_ids=next_pos_3B1, cache=cache)
            next_pos_3B1 = next_pos_3B1 + 1
            logits = out.logits[:, -1]
        if not tokens:
            return input_ids
        return torch.cat([input_ids, torch.stack(tokens, dim=1)], dim=1)
